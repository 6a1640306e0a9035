"""The disclosure policy: what each role may see of a position, decided in one place.

- Who may read a position, for which purpose and on which basis is the access
  policy (:mod:`bangpae.domain.access`, data from a configuration file); its names
  are re-exported here.
- :func:`victim_view`: what the protected person sees of one of her orders
  (DESIGN §4 ``GET /api/v1/victim/status``, without ``order_id``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bangpae.domain.access import ROLES as ROLES  # re-exported
from bangpae.domain.access import VICTIM_SAFETY as VICTIM_SAFETY
from bangpae.domain.access import Purpose as Purpose
from bangpae.domain.access import Relation as Relation
from bangpae.domain.model import Fix, Tier
from bangpae.domain.tiers import notify_distance_m


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
