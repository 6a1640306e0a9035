"""WGS84 geodesy: exact distances from GeographicLib, and a fast exact-where-it-matters path."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from geographiclib.geodesic import Geodesic

F64 = npt.NDArray[np.float64]
_WGS84 = Geodesic.WGS84
_A = 6378137.0
_F = 1 / 298.257223563
_E2 = _F * (2 - _F)

# Bound on |fast - geodesic| for pairs up to 10 km apart at 33-39 deg N (proved by a test).
FAST_ERROR_BOUND_M = 0.05


def geodesic_inverse(lat1: float, lon1: float, lat2: float, lon2: float) -> tuple[float, float]:
    """WGS84 distance in metres and forward azimuth in degrees [0, 360) from 1 to 2."""
    g = _WGS84.Inverse(lat1, lon1, lat2, lon2, Geodesic.DISTANCE | Geodesic.AZIMUTH)
    return float(g["s12"]), float(g["azi1"]) % 360.0


def geodesic_distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """WGS84 geodesic distance in metres."""
    return float(_WGS84.Inverse(lat1, lon1, lat2, lon2, Geodesic.DISTANCE)["s12"])


def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Initial bearing from point 1 to point 2, degrees clockwise from north."""
    return geodesic_inverse(lat1, lon1, lat2, lon2)[1]


def destination(lat: float, lon: float, bearing: float, distance_m: float) -> tuple[float, float]:
    """The point reached from ``(lat, lon)`` along ``bearing`` after ``distance_m`` metres."""
    g = _WGS84.Direct(lat, lon, bearing, distance_m)
    return float(g["lat2"]), float(g["lon2"])


def meridional_radius(lat_deg: npt.ArrayLike) -> F64:
    """WGS84 meridional radius of curvature M at a latitude, metres."""
    s = np.sin(np.radians(lat_deg))
    return np.asarray(_A * (1 - _E2) / (1 - _E2 * s * s) ** 1.5, dtype=np.float64)


def prime_vertical_radius(lat_deg: npt.ArrayLike) -> F64:
    """WGS84 prime-vertical radius of curvature N at a latitude, metres."""
    s = np.sin(np.radians(lat_deg))
    return np.asarray(_A / np.sqrt(1 - _E2 * s * s), dtype=np.float64)


def step_local(
    lat: npt.ArrayLike, lon: npt.ArrayLike, dist_m: npt.ArrayLike, heading_deg: npt.ArrayLike
) -> tuple[F64, F64]:
    """Move by ``dist_m`` on ``heading_deg`` in the local ellipsoid frame (small steps)."""
    lat_a = np.asarray(lat, dtype=np.float64)
    h = np.radians(heading_deg)
    d = np.asarray(dist_m, dtype=np.float64)
    dlat = d * np.cos(h) / meridional_radius(lat_a)
    dlon = d * np.sin(h) / (prime_vertical_radius(lat_a) * np.cos(np.radians(lat_a)))
    return lat_a + np.degrees(dlat), np.asarray(lon, dtype=np.float64) + np.degrees(dlon)


def offset_m(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    """The point ``north_m`` north and ``east_m`` east of ``(lat, lon)`` (local frame)."""
    dlat = north_m / float(meridional_radius(lat))
    dlon = east_m / (float(prime_vertical_radius(lat)) * np.cos(np.radians(lat)))
    return lat + float(np.degrees(dlat)), lon + float(np.degrees(dlon))


def fast_distances_m(lat1: F64, lon1: F64, lat2: F64, lon2: F64) -> F64:
    """Local-ellipsoid distances (radii of curvature at the mean latitude), vectorised."""
    phi = np.radians((lat1 + lat2) * 0.5)
    s = np.sin(phi)
    w2 = 1.0 - _E2 * s * s
    n = _A / np.sqrt(w2)
    m = n * (1.0 - _E2) / w2
    dy = np.radians(lat2 - lat1) * m
    dx = np.radians(((lon2 - lon1) + 180.0) % 360.0 - 180.0) * n * np.cos(phi)
    return np.asarray(np.hypot(dx, dy), dtype=np.float64)


def distances_m(lat1: F64, lon1: F64, lat2: F64, lon2: F64, thresholds: F64) -> F64:
    """Fast distances, recomputed exactly wherever one lies near a decision threshold.

    Any comparison of the result against a column of ``thresholds`` (shape (n, k))
    is therefore the same comparison the exact geodesic distance would give.
    """
    d = fast_distances_m(lat1, lon1, lat2, lon2)
    if len(d) == 0:
        return d
    near = np.abs(thresholds - d[:, None]).min(axis=1) <= FAST_ERROR_BOUND_M
    for i in np.flatnonzero(near).tolist():
        d[i] = geodesic_distance_m(float(lat1[i]), float(lon1[i]), float(lat2[i]), float(lon2[i]))
    return d
