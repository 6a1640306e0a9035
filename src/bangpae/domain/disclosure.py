"""The disclosure policy: what each role may see of a position, decided in one place."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bangpae.domain.model import Fix, Tier
from bangpae.domain.tiers import notify_distance_m

# Who may read live positions at all, and under which relation to the subject.
# victim: only the offender of her own order, and only as victim_view shapes it.
# field_officer / police: only while dispatched to / handed the incident.
# auditor, offender, clerk, judge, admin: never a live position.
POSITION_READERS: dict[str, str] = {
    "operator": "any",
    "supervisor": "any",
    "field_officer": "dispatched",
    "police": "handed_off",
    "victim": "own_order",
}


def can_read_position(role: str, relation: str) -> bool:
    """Whether ``role`` may read a position of a subject it stands in ``relation`` to.

    ``relation`` is ``any`` (staff), ``own_order``, ``dispatched`` or ``handed_off``.
    """
    needed = POSITION_READERS.get(role)
    return needed is not None and (needed == "any" or needed == relation)


def iso(t: float) -> str:
    """ISO 8601 UTC with milliseconds."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _position(fix: Fix, now: float) -> dict[str, Any]:
    return {
        "lat": round(fix.lat, 6),
        "lon": round(fix.lon, 6),
        "accuracy_m": fix.accuracy_m,
        "heading_deg": fix.heading_deg,
        "speed_mps": fix.speed_mps,
        "fix_time": iso(fix.fix_time),
        "age_s": round(max(now - fix.fix_time, 0.0), 1),
    }


def victim_view(
    tier: Tier,
    distance_m: float | None,
    margin_m: float | None,
    offender_fix: Fix | None,
    now: float,
    misuse_paused: bool = False,
) -> dict[str, Any]:
    """One order as the protected person may see it (DESIGN §4 ``victim/status``).

    clear: nothing about him. notify: "within about N m", N the margin (distance
    minus doubt) rounded up to 100 m, no position. reveal and breach: exact
    distance and his live position. uncertain: his last fix, its age and when the
    signal was lost. A misuse pause hides the position but never the tier.
    """
    view: dict[str, Any] = {"tier": tier.label, "distance_m": None, "offender": None}
    if tier == Tier.NOTIFY and margin_m is not None:
        view["distance_m"] = notify_distance_m(max(margin_m, 0.0))
    elif tier in (Tier.REVEAL, Tier.BREACH) and distance_m is not None:
        view["distance_m"] = round(distance_m)
    elif tier == Tier.UNCERTAIN and distance_m is not None:
        view["distance_m"] = round(distance_m)
    if tier in (Tier.REVEAL, Tier.BREACH, Tier.UNCERTAIN) and offender_fix is not None:
        if misuse_paused:
            view["position_paused"] = True
        else:
            view["offender"] = _position(offender_fix, now)
    if tier == Tier.UNCERTAIN and offender_fix is not None:
        view["signal_lost_at"] = iso(offender_fix.fix_time)
    return view
