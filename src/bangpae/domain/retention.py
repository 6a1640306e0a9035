"""Retention, pure: how long each class of data is kept, and what is due for deletion now.

Times are POSIX seconds; callers pass ``now``. The decision is a :class:`Plan`: per class,
a default cut-off and, for keys (a person, an order) with protected windows, the exact
time ranges that may go. The store turns it into parameterised deletes.

Defaults, per class (docs/tiers.md, "Retention"):

- fixes: ``fixes_days`` (90) after the fix time, whether or not the order has ended.
  A fix is the most sensitive record (both parties' movements); an order's end does not
  extend it. Evidence outlives it only through a hold.
- events: ``events_days`` (365) after the order ends (or after the event, if later); an
  order still in force keeps its events. Events of no order: after the event.
- incidents with their timeline: ``incidents_days`` (365) after the order ends and after
  the incident's last activity, once resolved; an open incident is never due.
- handoffs: ``handoffs_days`` (365) after the hand-off was closed; an open one never.
- notices: ``notices_days`` (90) after they were sent.
- signins: ``signins_days`` (90) after a session ended (expired or revoked), with its
  spent refresh tokens; sign-in attempts after they were made. Never held: no evidence.
- audit: ``audit_days`` (1825, five years) after the record, oldest first.

Never purged while held: the evidence of an incident that is open or under a hold (fixes
of its parties and events of its order from ``evidence_margin_s`` before it opened to
``evidence_margin_s`` after its last activity), and whatever a court hold covers (an
order or a person, for a time range). A hold on a person covers that person's data and
every order they are a party to.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

DAY_S = 86400.0
CLASSES = ("fixes", "events", "incidents", "handoffs", "notices", "signins", "audit")
HoldScope = Literal["order", "person", "incident"]
HOLD_SCOPES: tuple[HoldScope, ...] = ("order", "person", "incident")

# A closed window [start, end] of protected times; a deletable range (after, before) is
# open at both ends, with ``after`` None for "since the beginning".
Window = tuple[float, float]
Range = tuple[float | None, float]


@dataclass(frozen=True, slots=True)
class Policy:
    """How long each class of data is kept (days), and the evidence margin (seconds)."""

    fixes_days: float = 90.0
    events_days: float = 365.0
    incidents_days: float = 365.0
    handoffs_days: float = 365.0
    notices_days: float = 90.0
    signins_days: float = 90.0
    audit_days: float = 1825.0
    evidence_margin_s: float = 3600.0

    def __post_init__(self) -> None:
        for name in (
            "fixes_days",
            "events_days",
            "incidents_days",
            "handoffs_days",
            "notices_days",
            "signins_days",
            "audit_days",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.evidence_margin_s < 0:
            raise ValueError("evidence_margin_s must not be negative")


@dataclass(frozen=True, slots=True)
class Hold:
    """A legal hold: a court's request to keep an order's, a person's or an incident's data.

    ``start`` / ``end`` bound the times held (None: unbounded); an incident hold keeps the
    incident and its evidence whatever the range.
    """

    id: int
    scope: HoldScope
    target: int
    start: float | None
    end: float | None
    reason: str
    placed_at: float

    def window(self) -> Window:
        """The held times as a closed window (infinite where unbounded)."""
        return (
            -math.inf if self.start is None else self.start,
            math.inf if self.end is None else self.end,
        )


@dataclass(frozen=True, slots=True)
class OrderSpan:
    """What retention needs of an order: its parties and when it ends (None: open-ended)."""

    id: int
    offender_id: int
    victim_id: int
    ends_at: float | None


@dataclass(frozen=True, slots=True)
class IncidentSpan:
    """What retention needs of an incident."""

    id: int
    order_id: int | None
    person_id: int | None
    opened_at: float
    updated_at: float
    final: bool
    event_ids: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class HandoffSpan:
    """What retention needs of a police hand-off (``closed_at`` None: still open)."""

    id: int
    incident_id: int
    closed_at: float | None


@dataclass(frozen=True, slots=True)
class Sweep:
    """What of one time-keyed class may go: rows before ``before`` (None: none by default),
    except for the keys in ``ranges``, of which only rows inside those ranges may go."""

    before: float | None
    ranges: Mapping[int, tuple[Range, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything due for deletion at ``now``."""

    now: float
    cutoffs: Mapping[str, float]
    fixes: Sweep  # keyed by person (the store maps a person to their devices)
    order_events: Sweep  # events of an order, keyed by order
    person_events: Sweep  # events of no order, keyed by person
    keep_event_ids: frozenset[str]
    incidents: tuple[int, ...]
    handoffs: tuple[int, ...]  # due on their own or with their incident
    notices: Sweep  # keyed by order (notices of no order follow ``before``)
    signins_before: float
    audit_before: float
    audit_keep_from_id: int | None  # the oldest record still needed (an active hold's)


def merge(windows: Iterable[Window]) -> list[Window]:
    """Overlapping or touching windows joined, sorted by start."""
    out: list[Window] = []
    for a, b in sorted(w for w in windows if w[0] <= w[1]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def gaps(before: float, protected: Iterable[Window]) -> tuple[Range, ...]:
    """The open ranges of times before ``before`` that no protected window covers."""
    out: list[Range] = []
    after: float | None = None  # the end of the last protected window (None: none yet)
    for a, b in merge(protected):
        if a >= before:
            break
        if after is not None:
            out.append((after, a))
        elif a > -math.inf:
            out.append((None, a))
        after = b if after is None else max(after, b)
        if after >= before:
            return tuple(out)
    out.append((after, before))
    return tuple(out)


def is_due(t: float, ranges: Sequence[Range]) -> bool:
    """Whether a time falls inside one of the deletable ranges (open at both ends)."""
    return any((lo is None or t > lo) and t < hi for lo, hi in ranges)


def _held(window: Window, holds: Iterable[Window]) -> bool:
    return any(a <= window[1] and window[0] <= b for a, b in holds)


def plan(
    now: float,
    policy: Policy,
    orders: Sequence[OrderSpan],
    incidents: Sequence[IncidentSpan],
    handoffs: Sequence[HandoffSpan],
    holds: Sequence[Hold],
) -> Plan:
    """Decide what is due for deletion at ``now`` under ``policy`` and the holds in force."""
    by_id = {o.id: o for o in orders}
    orders_of: dict[int, list[int]] = defaultdict(list)
    for o in orders:
        orders_of[o.offender_id].append(o.id)
        orders_of[o.victim_id].append(o.id)

    def parties(order_id: int) -> tuple[int, ...]:
        o = by_id.get(order_id)
        return () if o is None else (o.offender_id, o.victim_id)

    # Court holds, normalised to windows per order and per person.
    order_holds: dict[int, list[Window]] = defaultdict(list)
    person_holds: dict[int, list[Window]] = defaultdict(list)
    incident_holds: set[int] = set()
    for h in holds:
        if h.scope == "order":
            order_holds[h.target].append(h.window())
            for p in parties(h.target):
                person_holds[p].append(h.window())
        elif h.scope == "person":
            person_holds[h.target].append(h.window())
            for oid in orders_of.get(h.target, ()):
                order_holds[oid].append(h.window())
        else:
            incident_holds.add(h.target)

    # Incidents open or held protect their evidence.
    order_keep: dict[int, list[Window]] = defaultdict(
        list, {k: list(v) for k, v in order_holds.items()}
    )
    person_keep: dict[int, list[Window]] = defaultdict(
        list, {k: list(v) for k, v in person_holds.items()}
    )
    keep_event_ids: set[str] = set()
    protected_incidents: set[int] = set()
    m = policy.evidence_margin_s
    for i in incidents:
        span = (i.opened_at, i.updated_at)
        held = (
            i.id in incident_holds
            or (i.order_id is not None and _held(span, order_holds.get(i.order_id, ())))
            or (i.person_id is not None and _held(span, person_holds.get(i.person_id, ())))
        )
        if i.final and not held:
            continue
        protected_incidents.add(i.id)
        evidence = (i.opened_at - m, math.inf if not i.final else i.updated_at + m)
        keep_event_ids.update(i.event_ids)
        if i.order_id is not None:
            order_keep[i.order_id].append(evidence)
            for p in parties(i.order_id):
                person_keep[p].append(evidence)
        if i.person_id is not None:
            person_keep[i.person_id].append(evidence)

    cut = {
        "fixes": now - policy.fixes_days * DAY_S,
        "events": now - policy.events_days * DAY_S,
        "incidents": now - policy.incidents_days * DAY_S,
        "handoffs": now - policy.handoffs_days * DAY_S,
        "notices": now - policy.notices_days * DAY_S,
        "signins": now - policy.signins_days * DAY_S,
        "audit": now - policy.audit_days * DAY_S,
    }

    def ended_by(order_id: int | None, t: float) -> bool:
        """Whether an order (None: no order) had ended before ``t``."""
        if order_id is None:
            return True
        o = by_id.get(order_id)
        return o is not None and o.ends_at is not None and o.ends_at < t

    def sweep(before: float, keep: Mapping[int, list[Window]]) -> Sweep:
        return Sweep(before, {k: gaps(before, w) for k, w in keep.items() if w})

    # Events of an order: only once the order has been over for events_days.
    order_ranges: dict[int, tuple[Range, ...]] = {}
    for o in orders:
        if ended_by(o.id, cut["events"]):
            order_ranges[o.id] = gaps(cut["events"], order_keep.get(o.id, ()))

    handoffs_of: dict[int, list[HandoffSpan]] = defaultdict(list)
    for x in handoffs:
        handoffs_of[x.incident_id].append(x)

    def handoff_due(h: HandoffSpan) -> bool:
        return h.closed_at is not None and h.closed_at < cut["handoffs"]

    due_incidents = tuple(
        i.id
        for i in incidents
        if i.final
        and i.id not in protected_incidents
        and i.updated_at < cut["incidents"]
        and ended_by(i.order_id, cut["incidents"])
        and all(handoff_due(h) for h in handoffs_of.get(i.id, ()))
    )
    gone = set(due_incidents)
    due_handoffs = tuple(
        h.id
        for h in handoffs
        if h.incident_id in gone or (handoff_due(h) and h.incident_id not in protected_incidents)
    )
    keep_from = min((h.id for h in holds), default=None)
    return Plan(
        now=now,
        cutoffs=cut,
        fixes=sweep(cut["fixes"], person_keep),
        order_events=Sweep(None, order_ranges),
        person_events=sweep(cut["events"], person_keep),
        keep_event_ids=frozenset(keep_event_ids),
        incidents=due_incidents,
        handoffs=due_handoffs,
        notices=sweep(cut["notices"], order_keep),
        signins_before=cut["signins"],
        audit_before=cut["audit"],
        audit_keep_from_id=keep_from,
    )


CLOCK_SKEW_S = 600.0  # a device's clock may run this far behind the server's
# A fix may be dated at most this far ahead of the server's clock (docs/robustness.md):
# every way in refuses one from further ahead (too_far_ahead), in its own words.
MAX_FUTURE_S = 300.0
AHEAD = f"more than {MAX_FUTURE_S / 60:g} minutes in the future"  # the words of a refusal


def too_far_ahead(fix_time: float, now: float) -> bool:
    """Whether a fix is dated more than ``MAX_FUTURE_S`` ahead of the server's clock."""
    return fix_time > now + MAX_FUTURE_S


def fix_time_refusal(
    fix_time: float, now: float, registered_at: float | None, fixes_days: int
) -> str | None:
    """Why a fix's time cannot be taken (None: it can): the rule of every way in.

    A fix dated too far ahead would be taken as the newest for minutes to come. A fix
    older than the fixes' retention would be purged at the next run, and one from before
    its device was registered cannot be about the order it now serves: either is a
    broken clock (year 1, 1970, a GPS week rollover) or a replay, never a late fix that
    could open a retroactive breach (docs/robustness.md).
    """
    if too_far_ahead(fix_time, now):
        return f"fix_time is {AHEAD}"
    if fix_time < now - fixes_days * 86400.0:
        return f"fix time is older than the {fixes_days}-day retention window"
    if registered_at is not None and fix_time < registered_at - CLOCK_SKEW_S:
        return "fix time is before the device was registered"
    return None
