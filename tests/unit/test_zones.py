"""Exclusion zones and curfews: doubt toward danger on entry, confidence on exit."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from geographiclib.geodesic import Geodesic
from hypothesis import given, settings
from hypothesis import strategies as st

from bangpae.domain.model import Event, EventKind, Fix, Order, WeeklyWindow, Zone
from bangpae.domain.zones import (
    ZONE_HYSTERESIS_M,
    CompiledZone,
    ZoneState,
    compile_order_zones,
    compile_zone,
    exit_clearance_m,
    in_force,
    next_schedule_change,
    next_zone_deadline,
    step_zones,
    step_zones_fix,
)

CENTRE = (37.5, 127.0)  # Seoul, near Sinsa station
KST = ZoneInfo("Asia/Seoul")
TZ = "Asia/Seoul"
G = Geodesic.WGS84


def at(
    d: float, bearing: float = 90.0, origin: tuple[float, float] = CENTRE
) -> tuple[float, float]:
    g = G.Direct(origin[0], origin[1], bearing, d)
    return g["lat2"], g["lon2"]


def circle(
    radius: float = 200.0, schedule: tuple[WeeklyWindow, ...] = (), zid: str = "home"
) -> Zone:
    geometry = {"type": "Point", "coordinates": [CENTRE[1], CENTRE[0]]}
    return Zone(zid, "Victim's home", geometry, radius, schedule)


def ring(half: float, bearings: tuple[int, ...] = (45, 135, 225, 315)) -> list[list[float]]:
    corners = [at(half * 2**0.5, b) for b in bearings]
    corners.append(corners[0])
    return [[lon, lat] for lat, lon in corners]


def square(half: float = 200.0, hole: float | None = None) -> Zone:
    rings = [ring(half)]
    if hole is not None:
        rings.append(ring(hole, (45, 315, 225, 135)))
    return Zone("school", "Daughter's school", {"type": "Polygon", "coordinates": rings})


# Scatter of a fix around the true position: a fraction of the accuracy, in a direction
# (radially in and out of the zone most often, where flapping would show).
FRACTION = st.one_of(st.just(0.999), st.floats(0.0, 0.999))
BEARING = st.one_of(st.sampled_from([90.0, 270.0]), st.floats(0.0, 360.0))


def ts(text: str, tz: ZoneInfo = KST) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()


def step(
    state: ZoneState, zone: CompiledZone, d: float, acc: float, t: float = 1.0
) -> tuple[ZoneState, list[Event]]:
    return step_zones(state, [zone], [], *at(d), acc, t, TZ, 7, 1, 11)


def curfew_step(
    state: ZoneState, zone: CompiledZone, d: float, acc: float, t: float
) -> tuple[ZoneState, list[Event]]:
    return step_zones(state, [], [zone], *at(d), acc, t, TZ, 7, 1, 11)


# -- geometry ---------------------------------------------------------------------------


@pytest.mark.parametrize("d", [0.0, 50.0, 199.0, 201.0, 350.0, 2000.0])
def test_a_point_zone_measures_the_geodesic_distance_to_its_edge(d: float) -> None:
    cz = compile_zone(circle())
    assert cz.signed_distance_m(*at(d, 33.0)) == pytest.approx(d - 200.0, abs=1e-6)


@pytest.mark.parametrize(("d", "expected"), [(0.0, -200.0), (150.0, -50.0), (300.0, 100.0)])
def test_a_polygon_zone_measures_metres_to_its_edge_in_a_local_frame(
    d: float, expected: float
) -> None:
    # Due east of the centre the nearest edge is the east side, about 200 m out.
    cz = compile_zone(square())
    assert cz.signed_distance_m(*at(d, 90.0)) == pytest.approx(expected, abs=0.5)


def test_a_polygon_hole_is_outside_and_the_depth_counts_to_the_nearest_edge() -> None:
    cz = compile_zone(square(300.0, hole=100.0))
    assert cz.signed_distance_m(*CENTRE) == pytest.approx(100.0, abs=0.5)  # in the hole
    # 150 m east: 50 m from the hole's edge, 150 m from the outer edge
    assert cz.signed_distance_m(*at(150.0)) == pytest.approx(-50.0, abs=0.5)


@pytest.mark.parametrize(
    "zone",
    [
        Zone("p", "", {"type": "Point", "coordinates": [127.0, 37.5]}, None),
        Zone("p", "", {"type": "Point", "coordinates": [127.0, 37.5]}, 0.0),
        Zone("p", "", {"type": "Point", "coordinates": [127.0, 37.5]}, 60_000.0),
        Zone("p", "", {"type": "Point", "coordinates": [127.0, 97.5]}, 100.0),
        Zone("p", "", {"type": "Point", "coordinates": ["east", 37.5]}, 100.0),
        Zone("p", "", {"type": "Point", "coordinates": [127.0]}, 100.0),
        Zone("l", "", {"type": "LineString", "coordinates": [[127.0, 37.5], [127.1, 37.5]]}),
        Zone("e", "", {"type": "Polygon", "coordinates": []}),
        Zone("s", "", {"type": "Polygon", "coordinates": [[[127.0, 37.5], [127.1, 37.5]]]}),
        Zone(
            "bow-tie",
            "",
            {
                "type": "Polygon",
                "coordinates": [
                    [[127.0, 37.5], [127.01, 37.51], [127.01, 37.5], [127.0, 37.51], [127.0, 37.5]]
                ],
            },
        ),
        Zone(
            "huge",
            "",
            {"type": "Polygon", "coordinates": [[[126, 37], [128, 37], [128, 38], [126, 37]]]},
        ),
        circle(schedule=(WeeklyWindow(7, 0, 60),)),
        circle(schedule=(WeeklyWindow(0, 1440, 60),)),
        circle(schedule=(WeeklyWindow(0, 60, 1441),)),
    ],
    ids=lambda z: z.id,
)
def test_a_bad_zone_is_refused_with_a_value_error(zone: Zone) -> None:
    with pytest.raises(ValueError):
        compile_zone(zone)


def test_an_order_with_a_duplicate_zone_id_or_an_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="distinct"):
        compile_order_zones(Order(1, 2, 3, zones=(circle(),), curfews=(circle(),)))
    with pytest.raises(ValueError, match="time zone"):
        compile_order_zones(Order(1, 2, 3, zones=(circle(),), timezone="Mars/Olympus_Mons"))


# -- exclusion zones --------------------------------------------------------------------


@pytest.mark.parametrize("zone", [circle(), square()], ids=["point", "polygon"])
def test_a_zone_is_entered_when_the_accuracy_circle_touches_it(zone: Zone) -> None:
    cz = compile_zone(zone)
    state, ev = step(ZoneState(), cz, 230.0, 20.0)
    assert ev == []  # 30 m out, 20 m accuracy: not touching
    state, ev = step(state, cz, 218.0, 20.0)
    assert [e.kind for e in ev] == [EventKind.ZONE_ENTER]
    assert ev[0].data["zone"] == zone.id and ev[0].order_id == 7 and ev[0].person_id == 1


@pytest.mark.parametrize("zone", [circle(), square()], ids=["point", "polygon"])
def test_a_zone_is_left_only_when_clear_by_the_accuracy_plus_the_hysteresis(zone: Zone) -> None:
    cz = compile_zone(zone)
    state, _ = step(ZoneState(), cz, 150.0, 10.0)
    assert state.inside == {zone.id}
    # 10 m accuracy: must be clear by 25 m, i.e. more than 235 m from the centre
    state, ev = step(state, cz, 233.0, 10.0, 2.0)
    assert ev == [] and state.inside == {zone.id}
    state, ev = step(state, cz, 237.0, 10.0, 3.0)
    assert [e.kind for e in ev] == [EventKind.ZONE_EXIT] and ev[0].data["reason"] == "left"


def test_with_a_poor_fix_leaving_needs_clearance_of_twice_its_accuracy() -> None:
    assert exit_clearance_m(5.0) == ZONE_HYSTERESIS_M
    assert exit_clearance_m(60.0) == 120.0
    cz = compile_zone(circle())
    state, _ = step(ZoneState(), cz, 100.0, 60.0)
    state, ev = step(state, cz, 200.0 + 60.0 + 119.0, 60.0, 2.0)
    assert ev == []
    state, ev = step(state, cz, 200.0 + 60.0 + 121.0, 60.0, 3.0)
    assert [e.kind for e in ev] == [EventKind.ZONE_EXIT]


@given(
    edge=st.floats(-150.0, 400.0),
    accuracy=st.floats(3.0, 100.0),
    scatter=st.lists(st.tuples(FRACTION, BEARING), min_size=2, max_size=40),
    start_inside=st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_a_stationary_man_whose_fixes_scatter_within_their_accuracy_never_flaps(
    edge: float, accuracy: float, scatter: list[tuple[float, float]], start_inside: bool
) -> None:
    cz = compile_zone(circle())
    truth = at(200.0 + edge)
    state = ZoneState(inside=frozenset({"home"})) if start_inside else ZoneState()
    kinds = []
    for i, (frac, bearing) in enumerate(scatter):
        lat, lon = at(frac * accuracy, bearing, truth)
        state, ev = step_zones(state, [cz], [], lat, lon, accuracy, float(i), TZ, 7, 1, 11)
        kinds += [e.kind for e in ev]
    assert kinds in ([], [EventKind.ZONE_EXIT] if start_inside else [EventKind.ZONE_ENTER])


def test_replaying_a_fix_raises_nothing_new_and_ids_are_deterministic() -> None:
    cz = compile_zone(circle())
    s1, ev1 = step(ZoneState(), cz, 100.0, 10.0, 50.0)
    s2, ev2 = step(ZoneState(), cz, 100.0, 10.0, 50.0)
    assert [e.id for e in ev1] == [e.id for e in ev2] and s1 == s2
    again, ev = step(s1, cz, 100.0, 10.0, 50.0)
    assert ev == [] and again == s1
    _, other = step(ZoneState(), cz, 100.0, 10.0, 51.0)
    assert other[0].id != ev1[0].id


def test_a_fix_without_gps_changes_nothing_and_unknown_accuracy_counts_25_m() -> None:
    compiled = compile_order_zones(Order(7, 1, 2, zones=(circle(),)))
    lat, lon = at(222.0)
    state, ev = step_zones_fix(
        ZoneState(), compiled, Fix(11, 10.0, *at(10.0), 5.0, valid=False), order_id=7, person_id=1
    )
    assert (state, ev) == (ZoneState(), [])
    state, ev = step_zones_fix(
        ZoneState(), compiled, Fix(11, 10.0, lat, lon), order_id=7, person_id=1
    )
    assert [e.kind for e in ev] == [EventKind.ZONE_ENTER] and ev[0].device_id == 11
    # an accuracy worse than 100 m counts 100 m
    _, ev = step_zones_fix(
        ZoneState(), compiled, Fix(11, 10.0, *at(305.0), 900.0), order_id=7, person_id=1
    )
    assert ev == []


# -- schedules --------------------------------------------------------------------------


def test_schedules_run_in_the_orders_time_zone_and_across_midnight() -> None:
    night = (WeeklyWindow(4, 22 * 60, 6 * 60),)  # Friday 22:00 to Saturday 06:00
    assert in_force(night, ts("2026-11-27T23:30"), TZ)  # a Friday
    assert in_force(night, ts("2026-11-28T05:59"), TZ)
    assert not in_force(night, ts("2026-11-28T06:00"), TZ)
    assert not in_force(night, ts("2026-11-27T21:59"), TZ)
    # the same instant is 14:30 UTC: the window is local, not UTC
    assert not in_force(night, ts("2026-11-27T23:30"), "UTC")
    assert in_force((), 0.0, TZ)


def test_a_sunday_night_window_runs_into_monday_and_equal_ends_mean_a_whole_day() -> None:
    sunday_night = (WeeklyWindow(6, 23 * 60, 60),)
    assert in_force(sunday_night, ts("2026-11-30T00:30"), TZ)  # a Monday
    assert not in_force(sunday_night, ts("2026-11-24T00:30"), TZ)  # a Tuesday
    whole_wednesday = (WeeklyWindow(2, 9 * 60, 9 * 60),)
    assert in_force(whole_wednesday, ts("2026-11-26T08:59"), TZ)  # Thursday before 09:00
    assert not in_force(whole_wednesday, ts("2026-11-26T09:00"), TZ)
    until_midnight = (WeeklyWindow(0, 20 * 60, 1440),)
    assert in_force(until_midnight, ts("2026-11-23T23:59"), TZ)
    assert not in_force(until_midnight, ts("2026-11-24T00:00"), TZ)


def test_a_window_keeps_its_local_hours_across_a_daylight_saving_change() -> None:
    paris = ZoneInfo("Europe/Paris")
    monday_morning = (WeeklyWindow(0, 8 * 60, 9 * 60),)
    for day in ("2026-01-05", "2026-07-06"):  # winter (UTC+1) and summer (UTC+2) Mondays
        assert in_force(monday_morning, ts(f"{day}T08:30", paris), "Europe/Paris")
        assert not in_force(monday_morning, ts(f"{day}T09:30", paris), "Europe/Paris")


def test_the_next_schedule_change_is_the_next_opening_or_closing() -> None:
    night = (WeeklyWindow(4, 22 * 60, 6 * 60),)
    assert next_schedule_change(night, ts("2026-11-27T21:00"), TZ) == ts("2026-11-27T22:00")
    assert next_schedule_change(night, ts("2026-11-27T22:00"), TZ) == ts("2026-11-28T06:00")
    assert next_schedule_change(night, ts("2026-11-28T07:00"), TZ) == ts("2026-12-04T22:00")
    assert next_schedule_change((), 0.0, TZ) is None
    sunday_night = (WeeklyWindow(6, 23 * 60, 60),)
    assert next_schedule_change(sunday_night, ts("2026-11-30T00:10"), TZ) == ts("2026-11-30T01:00")
    order = Order(7, 1, 2, zones=(circle(),), curfews=(circle(100.0, night, "curfew"),))
    compiled = compile_order_zones(order)
    assert next_zone_deadline(compiled, ts("2026-11-27T21:00")) == ts("2026-11-27T22:00")


def test_a_scheduled_zone_is_entered_when_its_window_opens_and_left_when_it_closes() -> None:
    school_hours = (WeeklyWindow(0, 8 * 60, 16 * 60),)  # Monday 08:00-16:00
    cz = compile_zone(circle(200.0, school_hours, "school"))
    state, ev = step(ZoneState(), cz, 50.0, 10.0, ts("2026-11-23T07:30"))
    assert ev == []  # not in force yet
    state, ev = step(state, cz, 50.0, 10.0, ts("2026-11-23T08:00"))  # the window opens
    assert [e.kind for e in ev] == [EventKind.ZONE_ENTER]
    state, ev = step(state, cz, 50.0, 10.0, ts("2026-11-23T16:00"))  # and closes
    assert [e.kind for e in ev] == [EventKind.ZONE_EXIT]
    assert ev[0].data["reason"] == "schedule_ended" and state.inside == frozenset()


# -- curfews ----------------------------------------------------------------------------

NIGHT = (WeeklyWindow(4, 22 * 60, 6 * 60),)


def test_a_curfew_is_violated_once_while_he_is_confidently_outside_in_its_window() -> None:
    cz = compile_zone(circle(100.0, NIGHT, "curfew"))
    t = ts("2026-11-27T23:00")
    state, ev = curfew_step(ZoneState(), cz, 500.0, 10.0, t)
    assert [e.kind for e in ev] == [EventKind.CURFEW_VIOLATION]
    assert ev[0].data["outside_m"] == pytest.approx(400.0, abs=0.1)
    for i in range(1, 10):  # still out: the same episode
        state, ev = curfew_step(state, cz, 500.0 + i * 30, 10.0, t + 60 * i)
        assert ev == []
    state, ev = curfew_step(state, cz, 20.0, 10.0, t + 900)  # home
    assert ev == [] and state.violating == frozenset()
    state, ev = curfew_step(state, cz, 400.0, 10.0, t + 1200)  # out again: a new episode
    assert [e.kind for e in ev] == [EventKind.CURFEW_VIOLATION]


def test_a_curfew_is_not_violated_on_a_fix_that_may_be_inside_or_outside_its_window() -> None:
    cz = compile_zone(circle(100.0, NIGHT, "curfew"))
    night = ts("2026-11-27T23:00")
    assert curfew_step(ZoneState(), cz, 105.0, 10.0, night)[1] == []  # may be inside
    assert curfew_step(ZoneState(), cz, 500.0, 10.0, ts("2026-11-27T12:00"))[1] == []


def test_a_curfew_episode_ends_when_the_window_closes() -> None:
    cz = compile_zone(circle(100.0, NIGHT, "curfew"))
    state, _ = curfew_step(ZoneState(), cz, 500.0, 10.0, ts("2026-11-28T05:00"))
    state, ev = curfew_step(state, cz, 500.0, 10.0, ts("2026-11-28T06:00"))
    assert ev == [] and state.violating == frozenset()


def test_a_curfew_episode_ends_in_a_small_home_even_with_a_poor_indoor_fix() -> None:
    cz = compile_zone(circle(60.0, NIGHT, "curfew"))
    t = ts("2026-11-27T23:00")
    state, _ = curfew_step(ZoneState(), cz, 500.0, 10.0, t)
    state, _ = curfew_step(state, cz, 30.0, 80.0, t + 60)  # 30 m inside, 80 m accuracy
    assert state.violating == frozenset()


@given(
    depth=st.floats(0.0, 100.0),
    accuracy=st.floats(3.0, 100.0),
    scatter=st.lists(st.tuples(FRACTION, BEARING), min_size=1, max_size=30),
)
@settings(max_examples=200, deadline=None)
def test_a_man_at_home_is_never_reported_outside_by_fixes_within_their_accuracy(
    depth: float, accuracy: float, scatter: list[tuple[float, float]]
) -> None:
    cz = compile_zone(circle(100.0, NIGHT, "curfew"))
    truth = at(100.0 - depth)
    state, t = ZoneState(), ts("2026-11-27T23:00")
    for i, (frac, bearing) in enumerate(scatter):
        lat, lon = at(frac * accuracy, bearing, truth)
        state, ev = step_zones(state, [], [cz], lat, lon, accuracy, t + i, TZ, 7, 1, 11)
        assert ev == []


@given(
    edge=st.floats(-100.0, 300.0),
    accuracy=st.floats(3.0, 25.0),
    scatter=st.lists(st.tuples(FRACTION, BEARING), min_size=2, max_size=30),
)
@settings(max_examples=200, deadline=None)
def test_curfew_scatter_within_a_good_accuracy_raises_at_most_one_violation(
    edge: float, accuracy: float, scatter: list[tuple[float, float]]
) -> None:
    cz = compile_zone(circle(200.0, NIGHT, "curfew"))
    truth = at(200.0 + edge)
    state, t, count = ZoneState(), ts("2026-11-27T23:00"), 0
    for i, (frac, bearing) in enumerate(scatter):
        lat, lon = at(frac * accuracy, bearing, truth)
        state, ev = step_zones(state, [], [cz], lat, lon, accuracy, t + i, TZ, 7, 1, 11)
        count += len(ev)
    assert count <= 1
