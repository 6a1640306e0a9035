"""Device health: alarms on their rising edge, battery once per discharge, jumps, silence."""

from __future__ import annotations

from typing import Any

import pytest
from geographiclib.geodesic import Geodesic
from hypothesis import given, settings
from hypothesis import strategies as st

from bangpae.domain.health import (
    JUMP_SPEED_MPS,
    HealthState,
    HealthThresholds,
    check_timers,
    implied_speed_mps,
    next_deadline,
    step_health,
)
from bangpae.domain.model import Event, EventKind, Fix

T0 = 1_795_000_000.0  # 2026-11-18T11:06:40Z, 20:06 in Seoul
SEOUL = (37.5, 127.0)
DEVICE = 11
G = Geodesic.WGS84


def at(d: float, bearing: float = 90.0, origin: tuple[float, float] = SEOUL) -> tuple[float, float]:
    g = G.Direct(origin[0], origin[1], bearing, d)
    return g["lat2"], g["lon2"]


def msg(t: float, d: float = 0.0, **kw: Any) -> Fix:
    kw.setdefault("accuracy_m", 8.0)
    kw.setdefault("received_at", T0 + t + 1.0)
    return Fix(DEVICE, T0 + t, *at(d), **kw)


def run(
    fixes: list[Fix], state: HealthState | None = None, **kw: Any
) -> tuple[HealthState, list[Event]]:
    state = state or HealthState()
    events: list[Event] = []
    for f in fixes:
        state, ev = step_health(state, f, (f.received_at or f.fix_time), person_id=5, **kw)
        events += ev
    return state, events


# -- alarms -----------------------------------------------------------------------------


def test_an_alarm_repeated_in_every_message_is_raised_once_per_episode() -> None:
    pattern = [{"tamper"}, {"tamper"}, {"tamper"}, set(), {"tamper"}]
    _, events = run([msg(i * 10, alarms=frozenset(a)) for i, a in enumerate(pattern)])
    assert [e.kind for e in events] == [EventKind.TAMPER, EventKind.TAMPER]
    assert events[0].person_id == 5 and events[0].device_id == DEVICE
    assert events[0].data["alarm"] == "tamper" and "lat" in events[0].data


def test_each_alarm_has_its_own_episode_and_unknown_alarms_raise_nothing() -> None:
    pattern = [{"sos"}, {"sos", "case_open"}, {"case_open", "vibration"}, {"power_cut"}]
    _, events = run([msg(i * 10, alarms=frozenset(a)) for i, a in enumerate(pattern)])
    assert [e.kind for e in events] == [EventKind.SOS, EventKind.CASE_OPEN, EventKind.POWER_CUT]


def test_an_alarm_in_a_message_without_gps_is_raised_without_a_position() -> None:
    _, events = run([msg(0, alarms=frozenset({"sos"}), valid=False)])
    assert [e.kind for e in events] == [EventKind.SOS] and "lat" not in events[0].data


def test_with_a_rearm_delay_plain_messages_between_repeats_do_not_split_an_episode() -> None:
    slow = HealthThresholds(alarm_rearm_s=60.0)
    pattern = [(0, {"tamper"}), (10, set()), (20, {"tamper"}), (30, set()), (100, set())]
    fixes = [msg(t, alarms=frozenset(a)) for t, a in pattern] + [
        msg(110, alarms=frozenset({"tamper"}))
    ]
    _, events = run(fixes, thresholds=slow)
    assert [e.at - T0 for e in events] == [0.0, 110.0]


# -- battery ----------------------------------------------------------------------------


def test_low_battery_warns_at_20_and_is_critical_at_10_once_per_discharge() -> None:
    levels = [50, 20, 19, 10, 9, 15, 9, 30, 15]
    _, events = run([msg(i * 60, battery_pct=p) for i, p in enumerate(levels)])
    assert [e.data["severity"] for e in events] == ["warning", "critical", "warning"]
    assert all(e.kind == EventKind.LOW_BATTERY for e in events)
    assert events[1].data["battery_pct"] == 10


def test_a_battery_that_falls_straight_to_critical_raises_only_critical() -> None:
    _, events = run([msg(0, battery_pct=80), msg(60, battery_pct=7)])
    assert [e.data["severity"] for e in events] == ["critical"]


def test_a_low_battery_alarm_without_a_percentage_counts_as_a_warning() -> None:
    _, events = run(
        [msg(0, alarms=frozenset({"low_battery"})), msg(60, alarms=frozenset({"low_battery"}))]
    )
    assert [e.data["severity"] for e in events] == ["warning"]


# -- position jumps ---------------------------------------------------------------------


def test_a_position_jump_is_the_implied_speed_after_both_accuracies() -> None:
    a, b = msg(0, 0.0, accuracy_m=10.0), msg(10, 1000.0, accuracy_m=10.0)
    assert implied_speed_mps(a, b) == pytest.approx(98.0, abs=0.01)
    _, events = run([a, b])
    assert [e.kind for e in events] == [EventKind.POSITION_JUMP]
    assert events[0].at == b.fix_time and events[0].data["implied_speed_mps"] == 98.0
    assert events[0].data["from_fix_time"] == a.fix_time


def test_fixes_whose_accuracies_explain_the_distance_are_not_a_jump() -> None:
    _, events = run([msg(0, 0.0, accuracy_m=400.0), msg(5, 1000.0, accuracy_m=400.0)])
    assert events == []  # (1000 - 800) / 5 = 40 m/s


@pytest.mark.parametrize(("metres", "jump"), [(694.0 + 20.0, False), (696.0 + 20.0, True)])
def test_the_jump_threshold_is_250_km_per_hour(metres: float, jump: bool) -> None:
    _, events = run([msg(0, 0.0, accuracy_m=10.0), msg(10, metres, accuracy_m=10.0)])
    assert bool(events) is jump


def test_an_outlier_and_the_fix_that_returns_from_it_are_one_jump_episode() -> None:
    track = [msg(0, 0), msg(10, 5000), msg(20, 30), msg(30, 60), msg(40, 9000), msg(50, 9020)]
    _, events = run(track)
    assert [e.at - T0 for e in events] == [10.0, 40.0]


def test_fixes_without_gps_are_skipped_by_the_jump_check() -> None:
    _, events = run([msg(0, 0), msg(10, 5000, valid=False), msg(20, 40)])
    assert events == []


@given(
    steps=st.lists(
        st.tuples(
            st.floats(0.0, JUMP_SPEED_MPS - 0.01),  # true speed
            st.floats(1.0, 120.0),  # seconds between fixes
            st.floats(0.0, 360.0),  # heading
            st.floats(3.0, 60.0),  # accuracy
            st.floats(0.0, 0.999),  # scatter, as a fraction of the accuracy
            st.floats(0.0, 360.0),  # scatter direction
        ),
        min_size=1,
        max_size=25,
    )
)
@settings(max_examples=200, deadline=None)
def test_a_device_below_250_km_per_hour_with_honest_accuracy_never_jumps(
    steps: list[tuple[float, float, float, float, float, float]],
) -> None:
    truth, t = SEOUL, 0.0
    fixes = [msg(0.0, 0.0, accuracy_m=5.0)]
    for speed, dt, heading, acc, frac, bearing in steps:
        truth = at(speed * dt, heading, truth)
        t += dt
        lat, lon = at(frac * acc, bearing, truth)
        fixes.append(Fix(DEVICE, T0 + t, lat, lon, acc, received_at=T0 + t))
    _, events = run(fixes)
    assert events == []


# -- replays and late messages ----------------------------------------------------------


def test_replaying_a_message_raises_nothing_new_and_ids_are_deterministic() -> None:
    fixes = [msg(0, alarms=frozenset({"sos"}), battery_pct=9), msg(10, 3000)]
    s1, e1 = run(fixes)
    s2, e2 = run(fixes)
    assert [e.id for e in e1] == [e.id for e in e2] and s1 == s2
    assert len({e.id for e in e1}) == len(e1) == 3
    again, ev = step_health(s1, fixes[0], T0 + 30)
    assert ev == [] and again.newest_fix_time == s1.newest_fix_time


def test_a_late_message_proves_the_device_alive_but_decides_nothing() -> None:
    state, _ = run([msg(0), msg(100)])
    late = msg(50, alarms=frozenset({"tamper"}), received_at=T0 + 500.0)
    state, events = step_health(state, late, T0 + 500.0)
    assert events == [] and state.last_message_at == T0 + 500.0
    assert state.newest_fix_time == T0 + 100.0 and state.active == frozenset()


# -- timers -----------------------------------------------------------------------------


def test_offline_is_raised_once_at_its_deadline_and_rearmed_by_any_message() -> None:
    state, _ = run([msg(0)])  # received at T0 + 1
    assert next_deadline(state) == T0 + 301.0
    state, ev = check_timers(state, T0 + 300.0)
    assert ev == []
    state, ev = check_timers(state, T0 + 400.0)
    assert [e.kind for e in ev] == [EventKind.OFFLINE] and ev[0].at == T0 + 301.0
    assert ev[0].device_id == DEVICE and ev[0].person_id == 5
    state, again = check_timers(state, T0 + 900.0)
    assert again == [] and next_deadline(state) is None
    state, _ = run([msg(1000, valid=False)], state)  # back, without a fix
    assert next_deadline(state) == T0 + 1001.0  # no GPS since the last valid fix: no_fix due now


def test_a_late_tick_gives_the_same_offline_event_id() -> None:
    state, _ = run([msg(0)])
    _, early = check_timers(state, T0 + 302.0)
    _, late = check_timers(state, T0 + 5000.0)
    assert [e.id for e in early] == [e.id for e in late]


def test_no_fix_is_raised_when_messages_come_without_gps_for_300_s() -> None:
    state, _ = run([msg(0)] + [msg(t, valid=False) for t in range(60, 600, 60)])
    _, ev = check_timers(state, T0 + 290.0)
    assert ev == []
    state, ev = check_timers(state, T0 + 302.0)
    assert [e.kind for e in ev] == [EventKind.NO_FIX] and ev[0].at == T0 + 301.0
    state, ev = check_timers(state, T0 + 700.0)  # the same episode; offline due at T0 + 841
    assert ev == []
    state, _ = run([msg(800)], state)  # a fix again: re-armed
    state, _ = run([msg(t, valid=False) for t in range(860, 1200, 60)], state)
    _, ev = check_timers(state, T0 + 1102.0)
    assert [e.kind for e in ev] == [EventKind.NO_FIX]


def test_no_fix_is_not_dated_before_the_first_message_without_gps() -> None:
    state, _ = run([msg(0), msg(1000, valid=False)])
    assert next_deadline(state) == T0 + 1001.0
    _, ev = check_timers(state, T0 + 1002.0)
    assert [e.kind for e in ev] == [EventKind.NO_FIX] and ev[0].at == T0 + 1001.0


def test_a_device_that_never_had_a_fix_is_reported_300_s_after_its_first_message() -> None:
    state, _ = run([msg(t, valid=False) for t in range(0, 400, 30)])
    _, ev = check_timers(state, T0 + 302.0)
    assert [e.kind for e in ev] == [EventKind.NO_FIX] and ev[0].data["last_valid_fix_time"] is None


def test_a_device_never_heard_from_has_no_deadline() -> None:
    assert next_deadline(HealthState()) is None
    assert check_timers(HealthState(), T0) == (HealthState(), [])


def test_timer_durations_are_the_callers() -> None:
    state, _ = run([msg(0)])
    assert next_deadline(state, offline_after_s=60.0) == T0 + 61.0
    _, ev = check_timers(state, T0 + 62.0, offline_after_s=60.0)
    assert [e.kind for e in ev] == [EventKind.OFFLINE] and ev[0].data["after_s"] == 60.0
