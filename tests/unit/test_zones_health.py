"""Zones, curfews and device alarms: doubt toward danger, once per episode."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from geographiclib.geodesic import Geodesic
from hypothesis import given, settings
from hypothesis import strategies as st

from bangpae.domain.health import HealthState, step_health
from bangpae.domain.model import (
    Device,
    DeviceKind,
    EventKind,
    Fix,
    Order,
    Person,
    PersonKind,
    WeeklyWindow,
    Zone,
)
from bangpae.domain.zones import ZoneState, compile_zone, in_force, step_zones
from bangpae.engine.engine import Engine
from tests.scenario import HOME

KST = ZoneInfo("Asia/Seoul")


def at(d: float, bearing: float = 90.0) -> tuple[float, float]:
    g = Geodesic.WGS84.Direct(HOME[0], HOME[1], bearing, d)
    return g["lat2"], g["lon2"]


def circle(radius: float = 200.0, schedule: tuple = ()) -> Zone:
    return Zone(
        "home", "Home", {"type": "Point", "coordinates": [HOME[1], HOME[0]]}, radius, schedule
    )


def square(half: float = 200.0) -> Zone:
    corners = [at(half * 2**0.5, b) for b in (45, 135, 225, 315, 45)]
    return Zone(
        "school",
        "School",
        {"type": "Polygon", "coordinates": [[[lon, lat] for lat, lon in corners]]},
    )


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=KST).timestamp()


@pytest.mark.parametrize("zone", [circle(), square()], ids=["point", "polygon"])
def test_a_zone_is_entered_when_the_accuracy_circle_touches_it(zone: Zone) -> None:
    cz = compile_zone(zone)
    state, ev = step_zones(ZoneState(), [cz], [], *at(215.0), 20.0, 1.0, "Asia/Seoul", 1, 2, 3)
    assert [e.kind for e in ev] == [EventKind.ZONE_ENTER]
    # 40 m out with 20 m accuracy: clear by 20 m, short of twice the accuracy: still in
    state, ev = step_zones(state, [cz], [], *at(240.0), 20.0, 2.0, "Asia/Seoul", 1, 2, 3)
    assert ev == []
    state, ev = step_zones(state, [cz], [], *at(250.0), 20.0, 2.5, "Asia/Seoul", 1, 2, 3)
    assert ev == []
    # 65 m out: the circle is clear by 45 m, more than twice its 20 m radius: out
    state, ev = step_zones(state, [cz], [], *at(265.0), 20.0, 3.0, "Asia/Seoul", 1, 2, 3)
    assert [e.kind for e in ev] == [EventKind.ZONE_EXIT]


@given(st.lists(st.floats(185.0, 205.0), min_size=2, max_size=60))
@settings(max_examples=100, deadline=None)
def test_jitter_at_a_zone_edge_enters_once_and_never_flaps(distances: list[float]) -> None:
    cz = compile_zone(circle())
    state, kinds = ZoneState(), []
    for i, d in enumerate(distances):
        state, ev = step_zones(state, [cz], [], *at(d), 10.0, float(i), "Asia/Seoul", 1, 2, 3)
        kinds += [e.kind for e in ev]
    assert kinds == [EventKind.ZONE_ENTER]


def test_schedules_run_in_the_orders_time_zone_and_across_midnight() -> None:
    night = (WeeklyWindow(4, 22 * 60, 6 * 60),)  # Friday 22:00 to Saturday 06:00
    assert in_force(night, ts("2026-11-27T23:30"), "Asia/Seoul")  # a Friday
    assert in_force(night, ts("2026-11-28T05:59"), "Asia/Seoul")
    assert not in_force(night, ts("2026-11-28T06:00"), "Asia/Seoul")
    assert not in_force(night, ts("2026-11-27T21:59"), "Asia/Seoul")
    assert in_force((), 0.0, "Asia/Seoul")


def test_a_curfew_is_violated_once_while_he_is_confidently_outside_in_its_window() -> None:
    cz = compile_zone(circle(100.0, (WeeklyWindow(4, 22 * 60, 6 * 60),)))
    t = ts("2026-11-27T23:00")
    state, ev = step_zones(ZoneState(), [], [cz], *at(500), 10.0, t, "Asia/Seoul", 1, 2, 3)
    assert [e.kind for e in ev] == [EventKind.CURFEW_VIOLATION]
    state, ev = step_zones(state, [], [cz], *at(600), 10.0, t + 60, "Asia/Seoul", 1, 2, 3)
    assert ev == []
    state, ev = step_zones(state, [], [cz], *at(20), 10.0, t + 120, "Asia/Seoul", 1, 2, 3)
    assert ev == [] and state.violating == frozenset()
    # outside, but the window is closed: nothing
    day = ts("2026-11-27T12:00")
    assert step_zones(ZoneState(), [], [cz], *at(500), 10.0, day, "Asia/Seoul", 1, 2, 3)[1] == []


def test_bad_zone_geometry_is_refused() -> None:
    with pytest.raises(ValueError):
        compile_zone(Zone("x", "", {"type": "Point", "coordinates": [127, 37.5]}, None))
    with pytest.raises(ValueError):
        compile_zone(Zone("x", "", {"type": "LineString", "coordinates": []}))


def test_an_alarm_repeated_in_every_message_is_raised_once_per_episode() -> None:
    state, kinds = HealthState(), []
    for i, alarms in enumerate([{"tamper"}, {"tamper"}, {"tamper"}, set(), {"tamper"}]):
        state, ev = step_health(state, Fix(1, 100.0 + i, 37.5, 127.0, alarms=frozenset(alarms)), 9)
        kinds += [e.kind for e in ev]
    assert kinds == [EventKind.TAMPER, EventKind.TAMPER]


def test_low_battery_warns_at_20_and_is_critical_at_10_once_per_discharge() -> None:
    state, sev = HealthState(), []
    for i, pct in enumerate([50, 20, 19, 10, 9, 30, 15]):
        state, ev = step_health(state, Fix(1, 100.0 + i, 37.5, 127.0, battery_pct=pct), 9)
        sev += [e.data["severity"] for e in ev]
    assert sev == ["warning", "critical", "warning"]


def test_the_engine_raises_zone_and_alarm_events_from_fixes() -> None:
    e = Engine()
    e.load(
        [Person(1, PersonKind.OFFENDER, "o"), Person(2, PersonKind.VICTIM, "v")],
        [
            Device(1, "A", DeviceKind.ANKLE_MONITOR, "api", 1),
            Device(2, "P", DeviceKind.PHONE, "api", 2),
        ],
        [Order(7, 1, 2, zones=(circle(),))],
    )
    far = at(5000, 0)
    e.ingest([Fix(2, 100.0, *far, 5.0)], 100.0)
    events = e.ingest([Fix(1, 101.0, *at(150), 5.0, alarms=frozenset({"tamper"}))], 101.0)
    kinds = sorted(x.kind for x in events)
    assert kinds == sorted([EventKind.ZONE_ENTER, EventKind.TAMPER])
    zone = next(x for x in events if x.kind == EventKind.ZONE_ENTER)
    assert zone.order_id == 7 and zone.person_id == 1
