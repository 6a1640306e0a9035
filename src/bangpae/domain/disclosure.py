"""The disclosure policy: what each role may see of a position, decided in one place.

- Who may read a position, for which purpose and on which basis is the access
  policy (:mod:`bangpae.domain.access`, data from a configuration file); its names
  are re-exported here.
- :func:`victim_view`: what the protected person sees of one of her orders
  (``GET /api/v1/victim/status``, without ``order_id``): his position only under the
  disclosure rule, otherwise at most what his cell tells (``docs/disclosure.md``).
- The misuse guard's thresholds (``MISUSE_*``), which the engine applies at every
  decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from bangpae.domain import coarse, geodesy, tiers
from bangpae.domain.access import ROLES as ROLES  # re-exported
from bangpae.domain.access import VICTIM_SAFETY as VICTIM_SAFETY
from bangpae.domain.access import Purpose as Purpose
from bangpae.domain.access import Relation as Relation
from bangpae.domain.model import Fix, Tier


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

# Misuse guard: her own fixes shrank the distance by more than this, on balance this many
# times while revealed; or her own movement closed this far on him, net, while near.
MISUSE_STEP_M = 10.0
MISUSE_STEPS = 3
MISUSE_CLOSE_M = 1000.0


def disclosed_distance_m(
    tier: Tier,
    offender_fix: Fix | None,
    victim_fix: Fix | None,
    confirmed: bool,
    reveal_radius_m: float,
    stale_after_s: float,
    now: float,
    *,
    his_age_counts: bool = True,
) -> float | None:
    """The best estimate of the distance when his position may be shown to her, else None.

    The disclosure rule (``docs/disclosure.md``): the exact tier is reveal or breach (or
    uncertain, for his last fix), her trusted track is confirmed and fresh, and the
    geodesic distance from his fix to her trusted point, without any accuracy, is
    within the reveal radius. Her claimed accuracy cannot widen it.
    """
    if tier not in SHOWS_POSITION or offender_fix is None or victim_fix is None:
        return None
    if not confirmed:
        return None
    # his last fix after his signal was lost: judged against where she was last trusted
    if his_age_counts and (
        now - victim_fix.fix_time > stale_after_s or now - offender_fix.fix_time > stale_after_s
    ):
        return None
    d = geodesy.geodesic_distance_m(
        offender_fix.lat, offender_fix.lon, victim_fix.lat, victim_fix.lon
    )
    return d if d <= reveal_radius_m else None


def told_distance(
    offender_fix: Fix | None,
    victim_fix: Fix | None,
    grid: tuple[float, float],
    notify_radius_m: float,
) -> int | None:
    """The coarse distance she is told while his position is not disclosed (from his cell)."""
    if offender_fix is None or victim_fix is None:
        return None
    acc, _poor = tiers.effective_accuracy(victim_fix.accuracy_m)

    def one(x: float) -> np.ndarray[Any, np.dtype[np.float64]]:
        return np.array([x], dtype=np.float64)

    margin = coarse.told_margins(
        one(victim_fix.lat),
        one(victim_fix.lon),
        one(acc),
        one(offender_fix.lat),
        one(offender_fix.lon),
        one(grid[0]),
        one(grid[1]),
    )
    return coarse.told_distance_m(float(margin[0]), notify_radius_m)


@dataclass(frozen=True, slots=True)
class OrderState:
    """What the engine knows of one order that bears on what she is shown."""

    shown: Tier  # what she is shown (the engine's decision, docs/disclosure.md)
    tier: Tier  # the exact tier (warnings)
    offender_fix: Fix | None
    victim_fix: Fix | None  # the newest point of her trusted track
    confirmed: bool
    paused: bool
    grid: tuple[float, float]
    reveal_radius_m: float
    notify_radius_m: float
    stale_after_s: float
    signal_lost_at: float | None = None


def victim_view(state: OrderState, now: float) -> dict[str, Any]:
    """One order as the protected person may see it (``victim/status``, no order_id).

    - clear: tier only; ``distance_m`` and ``offender`` null.
    - notify, and reveal or breach while his position is not disclosed: the coarse
      distance from his cell (:func:`told_distance`), no position, no direction.
    - reveal, breach while disclosed (:func:`disclosed_distance_m`): the distance to the
      metre and his live position.
    - uncertain: ``signal_lost_at``, and his last fix with its age while the disclosure
      rule holds for it.
    - a misuse pause hides his position in reveal and uncertain (``position_paused``);
      in breach his position is always shown: her getting away comes first.
    """
    shown = state.shown
    view: dict[str, Any] = {"tier": shown.label, "distance_m": None, "offender": None}
    if shown == Tier.CLEAR:
        return view
    if shown not in SHOWS_POSITION:  # notify: his cell only
        view["distance_m"] = told_distance(
            state.offender_fix, state.victim_fix, state.grid, state.notify_radius_m
        )
        return view
    held = state.paused and shown != Tier.BREACH
    d = disclosed_distance_m(
        state.tier if shown != Tier.UNCERTAIN else Tier.UNCERTAIN,
        state.offender_fix,
        state.victim_fix,
        state.confirmed,
        state.reveal_radius_m,
        state.stale_after_s,
        now,
        his_age_counts=shown != Tier.UNCERTAIN,
    )
    if d is not None and not held and state.offender_fix is not None:
        view["distance_m"] = int(round(d))
        view["offender"] = offender_position(state.offender_fix, now)
    elif shown != Tier.UNCERTAIN:
        view["distance_m"] = told_distance(
            state.offender_fix, state.victim_fix, state.grid, state.notify_radius_m
        )
    if held:  # said whenever near, so that it does not trace the reveal radius
        view["position_paused"] = True
    if shown == Tier.UNCERTAIN:
        lost = state.signal_lost_at
        if lost is None and state.offender_fix is not None:
            lost = state.offender_fix.fix_time
        view["signal_lost_at"] = None if lost is None else iso(lost)
    return view
