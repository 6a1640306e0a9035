"""Retention, pure: what each class keeps, and what holds and open incidents protect."""

from __future__ import annotations

import math

import pytest

from bangpae.domain.retention import (
    DAY_S,
    HandoffSpan,
    Hold,
    IncidentSpan,
    OrderSpan,
    Policy,
    gaps,
    is_due,
    merge,
    plan,
)

NOW = 1_800_000_000.0
POLICY = Policy()
OFFENDER, VICTIM = 1, 2
ENDED_LONG_AGO = OrderSpan(10, OFFENDER, VICTIM, ends_at=NOW - 400 * DAY_S)
IN_FORCE = OrderSpan(11, 3, 4, ends_at=None)


def incident(
    iid: int = 100,
    order_id: int | None = 10,
    opened_at: float = NOW - 500 * DAY_S,
    updated_at: float | None = None,
    final: bool = True,
    events: frozenset[str] = frozenset(),
) -> IncidentSpan:
    return IncidentSpan(
        iid,
        order_id,
        None if order_id is not None else OFFENDER,
        opened_at,
        opened_at + 600 if updated_at is None else updated_at,
        final,
        events,
    )


def hold(scope: str, target: int, start: float | None, end: float | None, hid: int = 7) -> Hold:
    return Hold(hid, scope, target, start, end, "court 2024-123", NOW - DAY_S)  # type: ignore[arg-type]


def test_windows_merge_when_they_overlap_or_touch() -> None:
    assert merge([(5, 6), (1, 2), (2, 3), (2.5, 4)]) == [(1, 4), (5, 6)]
    assert merge([(3, 1)]) == []


def test_gaps_leave_out_every_protected_window_and_stop_at_the_cut_off() -> None:
    assert gaps(100, []) == ((None, 100),)
    assert gaps(100, [(10, 20), (30, 40)]) == ((None, 10), (20, 30), (40, 100))
    assert gaps(100, [(90, 200)]) == ((None, 90),)
    assert gaps(100, [(-math.inf, 50)]) == ((50, 100),)
    assert gaps(100, [(-math.inf, math.inf)]) == ()
    assert gaps(100, [(150, 160)]) == ((None, 100),)


def test_a_protected_window_is_closed_and_a_deletable_range_open() -> None:
    ranges = gaps(100, [(10, 20)])
    assert not is_due(10, ranges) and not is_due(20, ranges)
    assert is_due(9.999, ranges) and is_due(20.001, ranges)
    assert not is_due(100, ranges) and is_due(99.9, ranges)


def test_fixes_are_kept_for_their_retention_after_the_fix_whatever_the_order() -> None:
    p = plan(NOW, POLICY, [ENDED_LONG_AGO, IN_FORCE], [], [], [])
    assert p.fixes.before == NOW - 90 * DAY_S
    assert p.fixes.ranges == {}


def test_events_wait_for_a_year_after_their_order_ends() -> None:
    recently_ended = OrderSpan(12, 5, 6, ends_at=NOW - 100 * DAY_S)
    p = plan(NOW, POLICY, [ENDED_LONG_AGO, IN_FORCE, recently_ended], [], [], [])
    assert p.order_events.before is None  # an order's events go only once it is over
    assert p.order_events.ranges == {10: ((None, NOW - 365 * DAY_S),)}
    assert p.person_events.before == NOW - 365 * DAY_S


def test_a_resolved_incident_goes_a_year_after_its_order_ended_and_an_open_one_never() -> None:
    done, still_open = incident(100), incident(101, final=False)
    in_force = incident(102, order_id=11)
    p = plan(NOW, POLICY, [ENDED_LONG_AGO, IN_FORCE], [done, still_open, in_force], [], [])
    assert p.incidents == (100,)


def test_an_open_incident_keeps_its_evidence_from_before_it_opened_onwards() -> None:
    opened = NOW - 200 * DAY_S
    open_one = incident(101, opened_at=opened, final=False, events=frozenset({"e1"}))
    p = plan(NOW, POLICY, [ENDED_LONG_AGO], [open_one], [], [])
    margin = POLICY.evidence_margin_s
    for person in (OFFENDER, VICTIM):
        assert p.fixes.ranges[person] == ((None, opened - margin),)
    assert p.order_events.ranges[10] == ((None, NOW - 365 * DAY_S),)  # before the evidence
    assert "e1" in p.keep_event_ids


def test_a_resolved_incident_protects_nothing_unless_held() -> None:
    done = incident(100, opened_at=NOW - 100 * DAY_S)
    p = plan(NOW, POLICY, [ENDED_LONG_AGO], [done], [], [])
    assert p.fixes.ranges == {}
    held = plan(NOW, POLICY, [ENDED_LONG_AGO], [done], [], [hold("incident", 100, None, None)])
    window = (done.opened_at - 3600, done.updated_at + 3600)
    assert held.fixes.ranges[OFFENDER] == ((None, window[0]), (window[1], NOW - 90 * DAY_S))
    assert held.incidents == ()


def test_a_court_hold_on_an_order_keeps_both_parties_data_in_its_range() -> None:
    t0, t1 = NOW - 300 * DAY_S, NOW - 200 * DAY_S
    p = plan(NOW, POLICY, [ENDED_LONG_AGO], [], [], [hold("order", 10, t0, t1)])
    cut = NOW - 90 * DAY_S
    assert p.fixes.ranges[OFFENDER] == p.fixes.ranges[VICTIM] == ((None, t0), (t1, cut))
    assert p.order_events.ranges[10] == ((None, NOW - 365 * DAY_S),)  # older than the hold
    assert p.notices.ranges[10] == ((None, t0), (t1, NOW - 90 * DAY_S))
    older = plan(NOW, POLICY, [ENDED_LONG_AGO], [], [], [hold("order", 10, t0 - 200 * DAY_S, t0)])
    assert older.order_events.ranges[10] == ((None, t0 - 200 * DAY_S),)
    assert p.audit_keep_from_id == 7


def test_a_hold_on_a_person_covers_their_orders_and_their_incidents() -> None:
    done = incident(100, opened_at=NOW - 450 * DAY_S)
    p = plan(NOW, POLICY, [ENDED_LONG_AGO], [done], [], [hold("person", VICTIM, None, None)])
    assert p.fixes.ranges[VICTIM] == ()
    # the other party keeps the evidence of the incident the hold now covers
    window = (done.opened_at - 3600, done.updated_at + 3600)
    assert p.fixes.ranges[OFFENDER] == ((None, window[0]), (window[1], NOW - 90 * DAY_S))
    assert p.order_events.ranges[10] == ()
    assert p.incidents == ()


def test_a_hold_outside_the_incident_leaves_it_due() -> None:
    done = incident(100, opened_at=NOW - 500 * DAY_S)
    late_hold = hold("order", 10, NOW - 420 * DAY_S, NOW - 410 * DAY_S)
    assert plan(NOW, POLICY, [ENDED_LONG_AGO], [done], [], [late_hold]).incidents == (100,)


def test_handoffs_go_after_closing_and_an_incident_waits_for_its_handoffs() -> None:
    done = incident(100)
    closed_long_ago = HandoffSpan(1, 100, NOW - 400 * DAY_S)
    p = plan(NOW, POLICY, [ENDED_LONG_AGO], [done], [closed_long_ago], [])
    assert (p.incidents, p.handoffs) == ((100,), (1,))
    still_open = HandoffSpan(2, 100, None)
    p = plan(NOW, POLICY, [ENDED_LONG_AGO], [done], [closed_long_ago, still_open], [])
    assert (p.incidents, p.handoffs) == ((), (1,))


def test_a_handoff_of_an_open_incident_is_kept() -> None:
    open_one = incident(101, final=False)
    p = plan(
        NOW, POLICY, [ENDED_LONG_AGO], [open_one], [HandoffSpan(1, 101, NOW - 400 * DAY_S)], []
    )
    assert p.handoffs == ()


def test_incidents_of_no_order_go_a_year_after_their_last_activity() -> None:
    old, recent = incident(100, order_id=None), incident(101, order_id=None, opened_at=NOW - DAY_S)
    assert plan(NOW, POLICY, [], [old, recent], [], []).incidents == (100,)


def test_the_audit_cut_off_is_five_years_by_default() -> None:
    p = plan(NOW, POLICY, [], [], [], [])
    assert p.audit_before == NOW - 1825 * DAY_S and p.audit_keep_from_id is None
    assert set(p.cutoffs) == {
        "fixes",
        "events",
        "incidents",
        "handoffs",
        "notices",
        "signins",
        "audit",
    }


def test_a_policy_refuses_a_non_positive_retention() -> None:
    with pytest.raises(ValueError, match="fixes_days"):
        Policy(fixes_days=0)
    with pytest.raises(ValueError, match="evidence_margin_s"):
        Policy(evidence_margin_s=-1)
