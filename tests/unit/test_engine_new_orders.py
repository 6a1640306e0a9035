"""An order registered while both parties are known is decided at once, not at the next fix."""

from __future__ import annotations

from bangpae.domain.model import Device, DeviceKind, EventKind, Order, Person, PersonKind, Tier
from bangpae.engine.engine import Engine
from tests.unit.test_engine import T0, make_engine, off_fix, vic_fix


def test_a_new_order_is_decided_from_the_latest_fixes_and_only_that_order() -> None:
    e = make_engine()  # order 100: offender 1 (far away), victim 2
    e.ingest([vic_fix(0), vic_fix(6)], T0 + 6)  # her trusted track: two agreeing reports
    e.ingest([off_fix(7, 9000)], T0 + 7)
    near = Person(5, PersonKind.OFFENDER, "o2")
    e.load([near], [Device(50, "A5", DeviceKind.ANKLE_MONITOR, "api", 5)], [])
    e.ingest([off_fix(8, 300, pair=2)], T0 + 8)  # device 50: 300 m from her, no order yet
    e.load([], [], [Order(id=101, offender_id=5, victim_id=2)])
    assert e.tier_of(101) == Tier.CLEAR  # registered, not yet decided
    events = e.evaluate_orders([101], T0 + 9)
    assert e.tier_of(101) == Tier.REVEAL and e.shown_of(101) == Tier.REVEAL
    assert {ev.order_id for ev in events} == {101}
    assert [ev.tier_to for ev in events if ev.kind == EventKind.TIER_CHANGED] == [Tier.REVEAL]
    assert e.tier_of(100) == Tier.CLEAR  # the other order is left alone
    assert e.evaluate_orders([999], T0 + 9) == []  # an unknown order: nothing


def test_an_order_whose_offender_never_reported_stays_undecided() -> None:
    e = Engine()
    e.load(
        [Person(1, PersonKind.OFFENDER, "o"), Person(2, PersonKind.VICTIM, "v")],
        [Device(20, "P2", DeviceKind.PHONE, "api", 2)],
        [Order(id=100, offender_id=1, victim_id=2)],
    )
    e.ingest([vic_fix(0)], T0)
    assert e.evaluate_orders([100], T0 + 1) == []
    assert e.tier_of(100) == Tier.CLEAR
