"""The tier machine of docs/tiers.md: enter on doubt, leave only when confidently out."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from bangpae.domain.model import ACCURACY_CAP_M, ACCURACY_UNKNOWN_M, Tier

F64 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int8]


def effective_accuracy(acc: float | None) -> tuple[float, bool]:
    """The accuracy a decision uses (capped; unknown counts 25 m) and whether it is poor."""
    if acc is None or math.isnan(acc):
        return ACCURACY_UNKNOWN_M, False
    if acc > ACCURACY_CAP_M:
        return ACCURACY_CAP_M, True
    return max(float(acc), 0.0), False


def effective_accuracies(acc: npt.ArrayLike) -> F64:
    """Vectorised :func:`effective_accuracy` (NaN means unknown)."""
    a = np.asarray(acc, dtype=np.float64)
    return np.where(np.isnan(a), ACCURACY_UNKNOWN_M, np.clip(a, 0.0, ACCURACY_CAP_M))


def next_tier(
    prev: Tier,
    margin_m: float,
    notify_m: float,
    reveal_m: float,
    keep_away_m: float,
    hysteresis_m: float,
) -> Tier:
    """The tier after a decision with margin ``d - u``, coming from ``prev`` (not uncertain)."""
    radii = ((Tier.BREACH, keep_away_m), (Tier.REVEAL, reveal_m), (Tier.NOTIFY, notify_m))
    enter = next((t for t, r in radii if margin_m <= r), Tier.CLEAR)
    hold = next((t for t, r in radii if margin_m <= r + hysteresis_m), Tier.CLEAR)
    return Tier(max(enter, min(prev, hold)))


def next_tiers(prev: I8, margin: F64, notify: F64, reveal: F64, keep: F64, hyst: F64) -> I8:
    """Vectorised :func:`next_tier`; NaN margins keep the previous tier."""
    enter = np.where(
        margin <= keep, 3, np.where(margin <= reveal, 2, np.where(margin <= notify, 1, 0))
    )
    hold = np.where(
        margin <= keep + hyst,
        3,
        np.where(margin <= reveal + hyst, 2, np.where(margin <= notify + hyst, 1, 0)),
    )
    new = np.maximum(enter, np.minimum(prev, hold))
    return np.where(np.isnan(margin), prev, new).astype(np.int8)


def decision_thresholds(u: F64, notify: F64, reveal: F64, keep: F64, hyst: F64) -> F64:
    """The distances at which a decision can flip: each radius and radius + hysteresis, plus u."""
    return np.stack(
        [keep + u, reveal + u, notify + u, keep + hyst + u, reveal + hyst + u, notify + hyst + u],
        axis=1,
    )


def notify_distance_m(d: float) -> int:
    """The distance told in ``notify``: rounded up to the next 100 m."""
    return int(math.ceil(round(d, 6) / 100.0) * 100)
