"""Which events open (or join) an incident, of which kind, at which priority.

The store keeps one open incident per order (or person, for device events) and
kind. Every event has a kind, so an event that opens nothing can still join the
timeline of an open incident of its kind: a ``zone_exit`` joins the ``zone``
incident its ``zone_enter`` opened, a tier change out of breach joins the
``breach`` incident. The priority says whether the event opens one at all.

- critical: tier changed into breach or uncertain, tamper, sos, retro_breach,
  device_cloned (his positions can no longer be trusted: as grave as a cut strap);
- high: zone_enter, curfew_violation, approach_fast, disclosure_misuse,
  case_open, power_cut, position_jump;
- normal: low_battery, offline, no_fix;
- none (opens nothing; its kind lets the store attach it to an open one): the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from bangpae.domain.errors import Invalid
from bangpae.domain.model import Event, EventKind, Tier

Priority = Literal["critical", "high", "normal"]
CRITICAL: Priority = "critical"
HIGH: Priority = "high"
NORMAL: Priority = "normal"
PRIORITIES: tuple[Priority, ...] = (CRITICAL, HIGH, NORMAL)
# The statuses an incident ends in; it is open in any other.
FINAL = ("resolved", "false_alarm")
# action -> (statuses it may follow, status it leads to). Forward only: an operator may
# dispatch without a separate acknowledgement, and close an incident from any open status.
TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "acknowledge": (("open",), "acknowledged"),
    "dispatch": (("open", "acknowledged"), "dispatched"),
    "on_scene": (("dispatched",), "on_scene"),
    "resolve": (("open", "acknowledged", "dispatched", "on_scene"), "resolved"),
    "false_alarm": (("open", "acknowledged", "dispatched", "on_scene"), "false_alarm"),
}
# Incidents about the victim's safety: an officer goes to her, and her position is the
# one read for them; the rest are about him.
VICTIM_CENTRED = frozenset(
    {"breach", "retro_breach", "sos", "approach_fast", "proximity", "signal_lost", "pre_alert"}
)

_BY_KIND: dict[EventKind, tuple[str, Priority | None]] = {
    EventKind.RETRO_BREACH: ("retro_breach", CRITICAL),
    EventKind.TAMPER: ("tamper", CRITICAL),
    EventKind.SOS: ("sos", CRITICAL),
    EventKind.DEVICE_CLONED: ("device_cloned", CRITICAL),
    EventKind.ZONE_ENTER: ("zone", HIGH),
    EventKind.ZONE_EXIT: ("zone", None),
    EventKind.CURFEW_VIOLATION: ("curfew", HIGH),
    EventKind.APPROACH_FAST: ("approach_fast", HIGH),
    EventKind.DISCLOSURE_MISUSE: ("disclosure_misuse", HIGH),
    EventKind.CASE_OPEN: ("device_integrity", HIGH),
    EventKind.POWER_CUT: ("device_integrity", HIGH),
    EventKind.POSITION_JUMP: ("position_jump", HIGH),
    EventKind.LOW_BATTERY: ("low_battery", NORMAL),
    EventKind.OFFLINE: ("offline", NORMAL),
    EventKind.NO_FIX: ("no_fix", NORMAL),
    EventKind.VICTIM_LOCATION_STALE: ("victim_location", None),
    # what she is shown follows from the tier; her implausible fixes are evidence, and
    # the misuse guard raises the incident when they matter (docs/disclosure.md)
    EventKind.DISCLOSURE_DECIDED: ("disclosure_misuse", None),
    EventKind.SHOWN_TIER_CHANGED: ("shown_tier", None),
    EventKind.POSITION_IMPLAUSIBLE: ("victim_location", None),
    EventKind.FIX_REFUSED: ("fix_refused", HIGH),
}


# the kinds of event that may be critical: a tier change into breach or signal lost, and
# those critical by kind
MAY_BE_CRITICAL = frozenset(
    {EventKind.TIER_CHANGED, *(k for k, (_, p) in _BY_KIND.items() if p == CRITICAL)}
)


def _classify(event: Event) -> tuple[str, Priority | None]:
    if event.kind == EventKind.TIER_CHANGED:
        if event.tier_to == Tier.BREACH:
            return "breach", CRITICAL
        if event.tier_to == Tier.UNCERTAIN:
            return "signal_lost", CRITICAL
        if event.tier_from == Tier.UNCERTAIN:
            return "signal_lost", None  # the signal is back: joins the signal_lost timeline
        if event.tier_from == Tier.BREACH:
            return "breach", None
        return "proximity", None
    return _BY_KIND.get(event.kind, (event.kind.value, None))


def incident_kind(event: Event) -> str:
    """The incident kind an event belongs to (one open incident per order and kind)."""
    return _classify(event)[0]


def priority_of(event: Event) -> Priority | None:
    """``critical``, ``high`` or ``normal``; None when the event opens no incident."""
    return _classify(event)[1]


def opens_incident(event: Event) -> bool:
    """Whether an event opens an incident of its kind (or joins the one already open)."""
    return priority_of(event) is not None


def transition(action: str) -> tuple[tuple[str, ...], str]:
    """The statuses an action may follow and the status it leads to; Invalid if unknown."""
    if action not in TRANSITIONS:
        raise Invalid(f"unknown action {action!r}")
    return TRANSITIONS[action]


def advance(status: str, action: str) -> str:
    """The status an action moves an incident to from ``status``; Invalid if it cannot."""
    allowed, target = transition(action)
    if status not in allowed:
        raise Invalid(f"cannot {action} an incident that is {status}")
    return target


@dataclass(frozen=True, slots=True)
class IncidentRecord:
    """An incident as the control centre sees it."""

    id: int
    kind: str
    priority: Priority
    status: str
    order_id: int | None
    person_id: int | None
    opened_at: float
    timeline: tuple[dict[str, Any], ...] = ()
    late: bool = False
    updated_at: float | None = None
    duress: bool = False  # she gave her duress PIN about it (docs/sos.md)
