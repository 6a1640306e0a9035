"""Geodesy: the fast distance stays within its bound, and decisions are exact."""

from __future__ import annotations

import numpy as np
from geographiclib.geodesic import Geodesic

from bangpae.domain import geodesy


def _pairs(n: int, max_m: float, seed: int = 1) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    lat1 = rng.uniform(33.0, 39.0, n)
    lon1 = rng.uniform(124.0, 132.0, n)
    az = rng.uniform(0, 360, n)
    s = rng.uniform(0, max_m, n)
    s[: n // 10] = max_m  # the longest distances are the worst case
    az[: n // 40] = 45.0  # and diagonal directions
    lat2, lon2 = np.empty(n), np.empty(n)
    for i in range(n):
        g = Geodesic.WGS84.Direct(lat1[i], lon1[i], az[i], s[i])
        lat2[i], lon2[i] = g["lat2"], g["lon2"]
    return lat1, lon1, lat2, lon2


def test_the_fast_distance_stays_within_its_bound_up_to_10_km_across_korea() -> None:
    lat1, lon1, lat2, lon2 = _pairs(20_000, 10_000.0)
    fast = geodesy.fast_distances_m(lat1, lon1, lat2, lon2)
    exact = np.array(
        [geodesy.geodesic_distance_m(*p) for p in zip(lat1, lon1, lat2, lon2, strict=True)]
    )
    worst = float(np.max(np.abs(fast - exact)))
    assert worst < geodesy.FAST_ERROR_BOUND_M < 0.1, worst


def test_decisions_on_refined_distances_equal_decisions_on_geodesic_distances() -> None:
    rng = np.random.default_rng(7)
    n = 5_000
    lat1 = rng.uniform(37.4, 37.7, n)
    lon1 = rng.uniform(126.8, 127.2, n)
    # Place partners within a centimetre of the 610 m threshold, where only exactness decides.
    target = 610.0 + rng.uniform(-0.01, 0.01, n)
    lat2, lon2 = np.empty(n), np.empty(n)
    for i in range(n):
        g = Geodesic.WGS84.Direct(lat1[i], lon1[i], rng.uniform(0, 360), target[i])
        lat2[i], lon2[i] = g["lat2"], g["lon2"]
    thresholds = np.full((n, 1), 610.0)
    refined = geodesy.distances_m(lat1, lon1, lat2, lon2, thresholds)
    exact = np.array(
        [geodesy.geodesic_distance_m(*p) for p in zip(lat1, lon1, lat2, lon2, strict=True)]
    )
    assert np.array_equal(refined <= 610.0, exact <= 610.0)


def test_distance_and_bearing_agree_with_geographiclib() -> None:
    d, az = geodesy.geodesic_inverse(37.5663, 126.9779, 37.5172, 127.0473)
    g = Geodesic.WGS84.Inverse(37.5663, 126.9779, 37.5172, 127.0473)
    assert d == g["s12"] and abs(az - g["azi1"] % 360) < 1e-12
    lat, lon = geodesy.destination(37.5663, 126.9779, 80.0, 1234.5)
    assert abs(geodesy.geodesic_distance_m(37.5663, 126.9779, lat, lon) - 1234.5) < 1e-6
