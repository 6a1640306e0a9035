"""Exclusion zones and curfews: where the offender must not be, and where he must be when.

A zone is a GeoJSON Polygon (tested with shapely 2 in a local metric frame, as
a prepared geometry) or a Point with ``radius_m`` (tested by geodesic distance).
Doubt counts toward danger: an exclusion zone is entered as soon as the fix's
accuracy circle touches it, and left only when the circle is clear of it by
ZONE_HYSTERESIS_M. A curfew is violated only when the accuracy circle lies
wholly outside its zone while its schedule is in force (an officer is not
sent on a fix that may well be inside), and the violation ends when he is back
inside or the window closes. Schedules are weekly windows in the order's time zone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import shapely
from shapely.geometry import Point, Polygon
from shapely.geometry.base import BaseGeometry

from bangpae.domain import geodesy
from bangpae.domain.model import Event, EventKind, WeeklyWindow, Zone, make_event

# Leaving an exclusion zone needs the accuracy circle this far clear of it.
ZONE_HYSTERESIS_M = 25.0


@dataclass(frozen=True, slots=True)
class CompiledZone:
    """A zone ready for fast tests: a prepared polygon in metres, or a circle."""

    zone: Zone
    lat0: float
    lon0: float
    polygon: BaseGeometry | None
    radius_m: float | None

    def signed_distance_m(self, lat: float, lon: float) -> float:
        """Metres outside the zone's edge (negative: inside, by that depth)."""
        if self.polygon is None:
            assert self.radius_m is not None
            return geodesy.geodesic_distance_m(self.lat0, self.lon0, lat, lon) - self.radius_m
        x, y = _to_local(self.lat0, self.lon0, lat, lon)
        p = Point(x, y)
        if self.polygon.contains(p):
            return -float(self.polygon.exterior.distance(p))
        return float(self.polygon.distance(p))


def _to_local(lat0: float, lon0: float, lat: float, lon: float) -> tuple[float, float]:
    """East and north metres from (lat0, lon0), in the local ellipsoid frame."""
    m = float(geodesy.meridional_radius(lat0))
    n = float(geodesy.prime_vertical_radius(lat0))
    return (
        math.radians(lon - lon0) * n * math.cos(math.radians(lat0)),
        math.radians(lat - lat0) * m,
    )


def compile_zone(zone: Zone) -> CompiledZone:
    """Validate a zone's geometry and prepare it; raises ValueError on a bad one."""
    geom: Mapping[str, Any] = zone.geometry
    kind = geom.get("type")
    coords = geom.get("coordinates")
    if kind == "Point":
        if zone.radius_m is None or not 0 < zone.radius_m <= 50_000:
            raise ValueError(f"zone {zone.id}: a Point needs radius_m in (0, 50000]")
        lon0, lat0 = float(coords[0]), float(coords[1])  # type: ignore[index]
        return CompiledZone(zone, lat0, lon0, None, zone.radius_m)
    if kind == "Polygon":
        rings = coords
        if not isinstance(rings, Sequence) or not rings or len(rings[0]) < 4:
            raise ValueError(f"zone {zone.id}: a Polygon needs a closed ring of 4+ positions")
        ring = [(float(p[0]), float(p[1])) for p in rings[0]]
        lon0 = sum(p[0] for p in ring) / len(ring)
        lat0 = sum(p[1] for p in ring) / len(ring)
        local = [_to_local(lat0, lon0, lat, lon) for lon, lat in ring]
        holes = [[_to_local(lat0, lon0, float(p[1]), float(p[0])) for p in h] for h in rings[1:]]
        poly = Polygon(local, holes)
        if not poly.is_valid or poly.area <= 0:
            raise ValueError(f"zone {zone.id}: the polygon is not valid")
        shapely.prepare(poly)
        return CompiledZone(zone, lat0, lon0, poly, None)
    raise ValueError(f"zone {zone.id}: geometry must be a Polygon or a Point with radius_m")


def in_force(schedule: Sequence[WeeklyWindow], at: float, timezone: str) -> bool:
    """Whether a weekly schedule covers ``at`` in ``timezone`` (empty schedule: always)."""
    if not schedule:
        return True
    local = datetime.fromtimestamp(at, ZoneInfo(timezone))
    day, minute = local.weekday(), local.hour * 60 + local.minute
    for w in schedule:
        if w.start_min < w.end_min:
            if day == w.day and w.start_min <= minute < w.end_min:
                return True
        elif (day == w.day and minute >= w.start_min) or (
            day == (w.day + 1) % 7 and minute < w.end_min
        ):
            return True  # the window runs past midnight into the next day
    return False


@dataclass(frozen=True, slots=True)
class ZoneState:
    """Which exclusion zones he is inside, and which curfews he is violating."""

    inside: frozenset[str] = frozenset()
    violating: frozenset[str] = frozenset()


def step_zones(
    state: ZoneState,
    zones: Sequence[CompiledZone],
    curfews: Sequence[CompiledZone],
    lat: float,
    lon: float,
    accuracy_m: float,
    at: float,
    timezone: str,
    order_id: int,
    person_id: int | None,
    device_id: int | None,
) -> tuple[ZoneState, list[Event]]:
    """Apply one offender fix (or a timer re-check) to an order's zones and curfews."""
    events: list[Event] = []
    inside = set(state.inside)
    for cz in zones:
        zid = cz.zone.id
        d = cz.signed_distance_m(lat, lon)
        active = in_force(cz.zone.schedule, at, timezone)
        if zid not in inside and active and d - accuracy_m <= 0:
            inside.add(zid)
            events.append(
                make_event(
                    EventKind.ZONE_ENTER,
                    at,
                    order_id,
                    zid,
                    device_id,
                    order_id=order_id,
                    person_id=person_id,
                    device_id=device_id,
                    data={"zone": zid, "name": cz.zone.name, "distance_m": round(d, 1)},
                )
            )
        elif zid in inside and (not active or d - accuracy_m > ZONE_HYSTERESIS_M):
            inside.discard(zid)
            events.append(
                make_event(
                    EventKind.ZONE_EXIT,
                    at,
                    order_id,
                    zid,
                    device_id,
                    order_id=order_id,
                    person_id=person_id,
                    device_id=device_id,
                    data={"zone": zid, "name": cz.zone.name},
                )
            )
    violating = set(state.violating)
    for cz in curfews:
        cid = cz.zone.id
        d = cz.signed_distance_m(lat, lon)
        active = in_force(cz.zone.schedule, at, timezone)
        if cid not in violating and active and d - accuracy_m > 0:
            violating.add(cid)
            events.append(
                make_event(
                    EventKind.CURFEW_VIOLATION,
                    at,
                    order_id,
                    cid,
                    device_id,
                    order_id=order_id,
                    person_id=person_id,
                    device_id=device_id,
                    data={"curfew": cid, "name": cz.zone.name, "outside_m": round(d, 1)},
                )
            )
        elif cid in violating and (not active or d + accuracy_m <= 0 or d <= 0):
            violating.discard(cid)
    return ZoneState(frozenset(inside), frozenset(violating)), events
