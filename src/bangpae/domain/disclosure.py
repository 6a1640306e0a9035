"""The disclosure policy: what each role may see of a position, decided in one place.

Two questions, both pure:

- :func:`can_read_position`: may this role, standing in this relation to the
  person whose position it is, read it for this purpose? A table, one row per
  role of DESIGN §1; anything not in it is refused. Every read also needs a
  stated purpose, because every read is audited with it.
- :func:`victim_view`: what the protected person sees of one of her orders
  (DESIGN §4 ``GET /api/v1/victim/status``, without ``order_id``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from bangpae.domain.model import Fix, Tier
from bangpae.domain.tiers import notify_distance_m


class Relation(StrEnum):
    """How the reader stands to the person whose position is read."""

    SELF = "self"  # the reader's own position
    OWN_ORDER = "own_order"  # the offender of an active order protecting the reader
    PROTECTED_PARTY = "protected_party"  # the victim of an order against the reader
    DISPATCHED = "dispatched"  # subject of an incident the reader is dispatched to, still open
    HANDED_OFF = "handed_off"  # subject of an incident handed to the reader, still open
    NONE = "none"  # no relation


VICTIM_SAFETY = "victim_safety"
ROLES = (
    "victim",
    "offender",
    "operator",
    "supervisor",
    "field_officer",
    "police",
    "clerk",
    "judge",
    "auditor",
    "admin",
)
# The purposes a read is allowed for: None means any stated purpose.
_ANY = None
_STAFF: Mapping[Relation, frozenset[str] | None] = {r: _ANY for r in Relation}

# role -> relation -> allowed purposes. Absent role or relation: never.
# victim: her own position, and the offender of her own order only for her safety
#   (and only as victim_view shapes it); offender: his own position, never a victim's;
# operator, supervisor: any position, for any stated purpose;
# field_officer: while dispatched (and his own, for the field app);
# police: while the hand-off is open; clerk, judge, auditor, admin: never live positions.
POSITION_RULES: Mapping[str, Mapping[Relation, frozenset[str] | None]] = {
    "victim": {Relation.SELF: _ANY, Relation.OWN_ORDER: frozenset({VICTIM_SAFETY})},
    "offender": {Relation.SELF: _ANY},
    "operator": _STAFF,
    "supervisor": _STAFF,
    "field_officer": {Relation.DISPATCHED: _ANY, Relation.SELF: _ANY},
    "police": {Relation.HANDED_OFF: _ANY},
    "clerk": {},
    "judge": {},
    "auditor": {},
    "admin": {},
}


def can_read_position(role: str, relation: str, purpose: str) -> bool:
    """Whether ``role`` may read a position of someone in ``relation`` to it, for ``purpose``."""
    if not purpose or not purpose.strip():
        return False
    try:
        rel = Relation(relation)
    except ValueError:
        return False
    rules = POSITION_RULES.get(role, {})
    if rel not in rules:
        return False
    allowed = rules[rel]
    return allowed is None or purpose in allowed


def iso(t: float) -> str:
    """ISO 8601 UTC with milliseconds and a ``Z``."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _opt(x: float | None, digits: int) -> float | None:
    return None if x is None else round(x, digits)


def offender_position(fix: Fix, now: float) -> dict[str, Any]:
    """A fix as the victim sees it: position, accuracy, heading, speed, fix time and age."""
    return {
        "lat": round(fix.lat, 6),
        "lon": round(fix.lon, 6),
        "accuracy_m": _opt(fix.accuracy_m, 1),
        "heading_deg": _opt(fix.heading_deg, 1),
        "speed_mps": _opt(fix.speed_mps, 2),
        "fix_time": iso(fix.fix_time),
        "age_s": round(max(now - fix.fix_time, 0.0), 1),
    }


SHOWS_POSITION = frozenset({Tier.REVEAL, Tier.BREACH, Tier.UNCERTAIN})


def victim_view(
    tier: Tier,
    distance_m: float | None,
    offender_fix: Fix | None,
    now: float,
    misuse_paused: bool = False,
    *,
    margin_m: float | None = None,
    signal_lost_at: float | None = None,
) -> dict[str, Any]:
    """One order as the protected person may see it (DESIGN §4 ``victim/status``, no order_id).

    - clear: tier only; ``distance_m`` and ``offender`` null.
    - notify: "within about N m", N rounded up to 100 m, from ``margin_m`` (distance
      minus both accuracies, the figure the tier was entered on) when given, else
      from the distance; no position, no direction.
    - reveal, breach: the distance to the metre and his live position.
    - uncertain: his last fix with its age, the last known distance, and
      ``signal_lost_at`` (given, else the last fix's time).
    - a misuse pause (reveal and uncertain) hides his position and coarsens the
      distance as in notify, since an exact distance refreshed fix by fix is
      enough to home in on him; the tier stays visible. In breach his position is
      always shown: her getting away comes first.
    """
    view: dict[str, Any] = {"tier": tier.label, "distance_m": None, "offender": None}
    paused = misuse_paused and tier in (Tier.REVEAL, Tier.UNCERTAIN)
    if tier == Tier.NOTIFY or (paused and distance_m is not None):
        told = margin_m if margin_m is not None else distance_m
        if told is not None:
            # "within about 0 m" means nothing: the least she is told is 100 m
            view["distance_m"] = max(notify_distance_m(max(told, 0.0)), 100)
    elif tier in SHOWS_POSITION and distance_m is not None:
        view["distance_m"] = int(round(distance_m))
    if tier in SHOWS_POSITION and offender_fix is not None:
        if paused:
            view["position_paused"] = True
        else:
            view["offender"] = offender_position(offender_fix, now)
    if tier == Tier.UNCERTAIN:
        lost = signal_lost_at
        if lost is None and offender_fix is not None:
            lost = offender_fix.fix_time
        view["signal_lost_at"] = None if lost is None else iso(lost)
    return view
