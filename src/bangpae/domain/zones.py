"""Exclusion zones and curfews: where the offender must not be, and where he must be when.

A zone is a GeoJSON Polygon or a Point with ``radius_m``. A Polygon is projected
once into an azimuthal equidistant frame centred on its vertices (distances
from the centre are exact geodesics; at 5 km from it the scale error is below
1e-6) and tested there with a prepared shapely 2 geometry. A Point zone is
tested by geodesic distance to its centre.

Rules, with ``d`` the signed distance from the fix to the zone's edge (negative
inside) and ``a`` the fix's accuracy:

- **Exclusion zone entered** as soon as the accuracy circle touches it,
  ``d - a <= 0``: doubt counts toward danger.
- **Exclusion zone left** only when the accuracy circle is clear of it by
  ``max(ZONE_HYSTERESIS_M, 2 a)``: ``d - a > max(25, 2 a)``. With a fixed
  hysteresis alone, a stationary man whose fixes scatter within an accuracy
  larger than half the hysteresis would flap in and out; clearing by twice the
  accuracy means scatter within the reported accuracy can never flap.
- **Curfew violated** (once per episode) when, while its schedule is in force,
  the accuracy circle lies wholly outside the inclusion zone: ``d - a > 0``. An
  officer is not sent on a fix that may well be inside.
- **Curfew episode over** when he is back inside by ``min(a, 25 m)``:
  ``d + min(a, 25) <= 0``, or when the window closes. A small home with a poor
  indoor fix can still end the episode, so a later excursion is raised again.
- A zone with a schedule is in force only inside one of its weekly windows, in
  the order's time zone; windows may run past midnight. When an exclusion
  zone's schedule ends while he is inside, a ``zone_exit`` says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import shapely
from shapely.geometry import Point, Polygon
from shapely.geometry.base import BaseGeometry

from bangpae.domain import geodesy, tiers
from bangpae.domain.model import Event, EventKind, Fix, Order, WeeklyWindow, Zone, make_event

# Leaving an exclusion zone needs the accuracy circle at least this far clear of it
# (or twice the accuracy, when that is more).
ZONE_HYSTERESIS_M = 25.0
# A curfew episode ends when the fix is inside by its accuracy, or by this much at most.
CURFEW_RETURN_M = 25.0
# The largest zone accepted: a Point's radius, a Polygon vertex's distance from its centre.
MAX_ZONE_EXTENT_M = 50_000.0
MINUTES_PER_DAY = 1440


@dataclass(frozen=True, slots=True)
class CompiledZone:
    """A zone ready for fast tests: a prepared polygon in a local metric frame, or a circle."""

    zone: Zone
    lat0: float
    lon0: float
    polygon: BaseGeometry | None
    radius_m: float | None
    boundary: BaseGeometry | None = None

    def signed_distance_m(self, lat: float, lon: float) -> float:
        """Metres from the zone's edge: positive outside, negative inside (by that depth)."""
        if self.polygon is None or self.boundary is None:
            assert self.radius_m is not None
            return geodesy.geodesic_distance_m(self.lat0, self.lon0, lat, lon) - self.radius_m
        x, y = _to_local(self.lat0, self.lon0, lat, lon)
        if shapely.contains_xy(self.polygon, x, y):
            return -float(self.boundary.distance(Point(x, y)))
        return float(self.polygon.distance(Point(x, y)))


@dataclass(frozen=True, slots=True)
class OrderZones:
    """An order's zones and curfews compiled, with the time zone their schedules run in."""

    zones: tuple[CompiledZone, ...]
    curfews: tuple[CompiledZone, ...]
    timezone: str


def _to_local(lat0: float, lon0: float, lat: float, lon: float) -> tuple[float, float]:
    """East and north metres of (lat, lon) in the azimuthal equidistant frame at (lat0, lon0)."""
    s, azi = geodesy.geodesic_inverse(lat0, lon0, lat, lon)
    a = math.radians(azi)
    return s * math.sin(a), s * math.cos(a)


def _position(p: object, zone_id: str) -> tuple[float, float]:
    """A GeoJSON position as (lon, lat), checked."""
    if not isinstance(p, Sequence) or isinstance(p, str) or len(p) < 2:
        raise ValueError(f"zone {zone_id}: a position is [lon, lat]")
    try:
        lon, lat = float(p[0]), float(p[1])
    except (TypeError, ValueError):
        raise ValueError(f"zone {zone_id}: a position is [lon, lat] numbers") from None
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0) or math.isnan(lat + lon):
        raise ValueError(f"zone {zone_id}: position {lon}, {lat} is not on Earth")
    return lon, lat


def _check_schedule(zone: Zone) -> None:
    for w in zone.schedule:
        if not (
            0 <= w.day <= 6
            and 0 <= w.start_min < MINUTES_PER_DAY
            and 0 <= w.end_min <= MINUTES_PER_DAY
        ):
            raise ValueError(
                f"zone {zone.id}: window {w} needs day 0-6, start 0-1439 and end 0-1440 minutes"
            )


def compile_zone(zone: Zone) -> CompiledZone:
    """Validate a zone's geometry and schedule and prepare it; raises ValueError on a bad one."""
    _check_schedule(zone)
    geom: Mapping[str, Any] = zone.geometry
    kind = geom.get("type")
    coords = geom.get("coordinates")
    if kind == "Point":
        r = zone.radius_m
        if r is None or math.isnan(r) or not 0 < r <= MAX_ZONE_EXTENT_M:
            raise ValueError(f"zone {zone.id}: a Point needs radius_m in (0, 50000]")
        lon0, lat0 = _position(coords, zone.id)
        return CompiledZone(zone, lat0, lon0, None, float(r))
    if kind == "Polygon":
        if not isinstance(coords, Sequence) or not coords:
            raise ValueError(f"zone {zone.id}: a Polygon needs at least one ring")
        rings = []
        for ring in coords:
            if not isinstance(ring, Sequence) or len(ring) < 4:
                raise ValueError(f"zone {zone.id}: a Polygon ring needs 4 or more positions")
            rings.append([_position(p, zone.id) for p in ring])
        outer = rings[0]
        lon0 = sum(p[0] for p in outer[:-1]) / (len(outer) - 1)
        lat0 = sum(p[1] for p in outer[:-1]) / (len(outer) - 1)
        local = [[_to_local(lat0, lon0, lat, lon) for lon, lat in ring] for ring in rings]
        if max(math.hypot(x, y) for x, y in local[0]) > MAX_ZONE_EXTENT_M:
            raise ValueError(f"zone {zone.id}: a Polygon must lie within 50 km of its centre")
        poly = Polygon(local[0], local[1:])
        if not poly.is_valid or poly.area <= 0:
            raise ValueError(f"zone {zone.id}: the polygon is not valid (self-crossing or empty)")
        boundary = poly.boundary
        shapely.prepare(poly)
        shapely.prepare(boundary)
        return CompiledZone(zone, lat0, lon0, poly, None, boundary)
    raise ValueError(f"zone {zone.id}: geometry must be a Polygon or a Point with radius_m")


def compile_order_zones(order: Order) -> OrderZones:
    """Compile an order's zones and curfews; raises ValueError on a bad zone, id or time zone."""
    try:
        ZoneInfo(order.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"order {order.id}: unknown time zone {order.timezone!r}") from None
    ids = [z.id for z in (*order.zones, *order.curfews)]
    if len(set(ids)) != len(ids):
        raise ValueError(f"order {order.id}: zone and curfew ids must be distinct")
    return OrderZones(
        tuple(compile_zone(z) for z in order.zones),
        tuple(compile_zone(z) for z in order.curfews),
        order.timezone,
    )


def local_week_minute(at: float, timezone: str) -> tuple[int, int]:
    """Weekday (0 = Monday) and minute of the local day of ``at`` in ``timezone``."""
    local = datetime.fromtimestamp(at, ZoneInfo(timezone))
    return local.weekday(), local.hour * 60 + local.minute


def window_covers(w: WeeklyWindow, day: int, minute: int) -> bool:
    """Whether a weekly window covers a local weekday and minute (end exclusive)."""
    if w.start_min < w.end_min:
        return day == w.day and w.start_min <= minute < w.end_min
    # The window runs past midnight into the next day (end == start: a whole day).
    return (day == w.day and minute >= w.start_min) or (
        day == (w.day + 1) % 7 and minute < w.end_min
    )


def in_force(schedule: Sequence[WeeklyWindow], at: float, timezone: str) -> bool:
    """Whether a weekly schedule covers ``at`` in ``timezone`` (empty schedule: always)."""
    if not schedule:
        return True
    day, minute = local_week_minute(at, timezone)
    return any(window_covers(w, day, minute) for w in schedule)


def _local_instant(day: date, minutes: int, tz: ZoneInfo) -> float:
    return (datetime.combine(day, time(0), tz) + timedelta(minutes=minutes)).timestamp()


def next_schedule_change(
    schedule: Sequence[WeeklyWindow], at: float, timezone: str
) -> float | None:
    """The first instant after ``at`` when a window of ``schedule`` opens or closes, or None."""
    if not schedule:
        return None
    tz = ZoneInfo(timezone)
    today = datetime.fromtimestamp(at, tz).date()
    best: float | None = None
    for offset in range(-1, 9):
        day = today + timedelta(days=offset)
        for w in schedule:
            if day.weekday() != w.day:
                continue
            end = w.end_min if w.start_min < w.end_min else w.end_min + MINUTES_PER_DAY
            for t in (_local_instant(day, w.start_min, tz), _local_instant(day, end, tz)):
                if t > at and (best is None or t < best):
                    best = t
    return best


def next_zone_deadline(compiled: OrderZones, at: float) -> float | None:
    """When any zone or curfew of an order next comes into or goes out of force, or None."""
    times = [
        t
        for cz in (*compiled.zones, *compiled.curfews)
        if (t := next_schedule_change(cz.zone.schedule, at, compiled.timezone)) is not None
    ]
    return min(times, default=None)


@dataclass(frozen=True, slots=True)
class ZoneState:
    """Which exclusion zones he is inside, and which curfews he is violating."""

    inside: frozenset[str] = frozenset()
    violating: frozenset[str] = frozenset()


def exit_clearance_m(accuracy_m: float) -> float:
    """How far the accuracy circle must be clear of an exclusion zone to leave it."""
    return max(ZONE_HYSTERESIS_M, 2.0 * accuracy_m)


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
    """Apply one offender position (a fix, or a timer re-check) to an order's zones and curfews.

    ``accuracy_m`` is the effective accuracy (capped; unknown counts 25 m); ``at`` is
    the fix time, or the timer's instant, and decides which schedules are in force.
    """
    events: list[Event] = []

    def event(kind: EventKind, zid: str, data: dict[str, Any]) -> Event:
        return make_event(
            kind,
            at,
            order_id,
            zid,
            device_id,
            order_id=order_id,
            person_id=person_id,
            device_id=device_id,
            data=data,
        )

    inside = set(state.inside)
    for cz in zones:
        zid = cz.zone.id
        active = in_force(cz.zone.schedule, at, timezone)
        if zid not in inside and not active:
            continue
        d = cz.signed_distance_m(lat, lon)
        if zid not in inside and d - accuracy_m <= 0:
            inside.add(zid)
            data = {"zone": zid, "name": cz.zone.name, "distance_m": round(d, 1)}
            events.append(event(EventKind.ZONE_ENTER, zid, data))
        elif zid in inside and (not active or d - accuracy_m > exit_clearance_m(accuracy_m)):
            inside.discard(zid)
            reason = "left" if active else "schedule_ended"
            data = {"zone": zid, "name": cz.zone.name, "distance_m": round(d, 1), "reason": reason}
            events.append(event(EventKind.ZONE_EXIT, zid, data))
    violating = set(state.violating)
    for cz in curfews:
        cid = cz.zone.id
        active = in_force(cz.zone.schedule, at, timezone)
        if not active:
            violating.discard(cid)
            continue
        d = cz.signed_distance_m(lat, lon)
        if cid not in violating and d - accuracy_m > 0:
            violating.add(cid)
            data = {"curfew": cid, "name": cz.zone.name, "outside_m": round(d, 1)}
            events.append(event(EventKind.CURFEW_VIOLATION, cid, data))
        elif cid in violating and d + min(accuracy_m, CURFEW_RETURN_M) <= 0:
            violating.discard(cid)
    new = ZoneState(frozenset(inside), frozenset(violating))
    return (state if new == state else new), events


def step_zones_fix(
    state: ZoneState,
    compiled: OrderZones,
    fix: Fix,
    *,
    order_id: int,
    person_id: int | None,
) -> tuple[ZoneState, list[Event]]:
    """Apply one offender fix to an order's compiled zones (a fix without GPS changes nothing)."""
    if not fix.valid:
        return state, []
    accuracy, _poor = tiers.effective_accuracy(fix.accuracy_m)
    return step_zones(
        state,
        compiled.zones,
        compiled.curfews,
        fix.lat,
        fix.lon,
        accuracy,
        fix.fix_time,
        compiled.timezone,
        order_id,
        person_id,
        fix.device_id,
    )
