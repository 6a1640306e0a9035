"""The engine: tiers decided fix by fix, whichever party moved, in batches or one at a time."""

from __future__ import annotations

from geographiclib.geodesic import Geodesic
from hypothesis import given, settings
from hypothesis import strategies as st

from bangpae.domain.model import Device, DeviceKind, EventKind, Fix, Order, Person, PersonKind, Tier
from bangpae.engine.engine import Engine
from tests.scenario import HOME, T0


def at(
    distance_m: float, bearing: float = 90.0, origin: tuple[float, float] = HOME
) -> tuple[float, float]:
    g = Geodesic.WGS84.Direct(origin[0], origin[1], bearing, distance_m)
    return g["lat2"], g["lon2"]


def make_engine(pairs: int = 1, **order_fields: object) -> Engine:
    e = Engine()
    people, devices, orders = [], [], []
    for i in range(pairs):
        off, vic = 2 * i + 1, 2 * i + 2
        people += [Person(off, PersonKind.OFFENDER, "o"), Person(vic, PersonKind.VICTIM, "v")]
        devices += [
            Device(10 * off, f"A{off}", DeviceKind.ANKLE_MONITOR, "api", off),
            Device(10 * vic, f"P{vic}", DeviceKind.PHONE, "api", vic),
        ]
        orders.append(Order(id=100 + i, offender_id=off, victim_id=vic, **order_fields))  # type: ignore[arg-type]
    e.load(people, devices, orders)
    return e


def off_fix(
    t: float, distance_m: float, acc: float | None = 5.0, pair: int = 0, **kw: object
) -> Fix:
    lat, lon = at(distance_m)
    return Fix(10 * (2 * pair + 1), T0 + t, lat, lon, acc, **kw)  # type: ignore[arg-type]


def vic_fix(t: float, distance_m: float = 0.0, acc: float | None = 5.0, pair: int = 0) -> Fix:
    lat, lon = at(distance_m)
    return Fix(10 * (2 * pair + 2), T0 + t, lat, lon, acc)


def tiers_of(events: list) -> list[tuple[Tier, Tier]]:
    return [(e.tier_from, e.tier_to) for e in events if e.kind == EventKind.TIER_CHANGED]


def test_an_offender_walking_in_passes_notify_reveal_and_breach_in_order() -> None:
    e = make_engine()
    events = e.ingest([vic_fix(0)], T0)
    for i, d in enumerate((3000, 1900, 1000, 590, 300, 95)):
        events += e.ingest([off_fix(i + 1, d)], T0 + i + 1)
    assert tiers_of(events) == [
        (Tier.CLEAR, Tier.NOTIFY),
        (Tier.NOTIFY, Tier.REVEAL),
        (Tier.REVEAL, Tier.BREACH),
    ]
    view = e.order_view(100, T0 + 7)
    assert view is not None and view.tier == Tier.BREACH


def test_doubt_counts_toward_danger_when_entering() -> None:
    e = make_engine()
    e.ingest([vic_fix(0, acc=30.0)], T0)
    # 640 m apart, accuracies 30 + 30: the offender may be within 600 m, so reveal.
    events = e.ingest([off_fix(1, 640.0, acc=30.0)], T0 + 1)
    assert tiers_of(events) == [(Tier.CLEAR, Tier.REVEAL)]


def test_reveal_is_left_only_beyond_radius_plus_hysteresis() -> None:
    e = make_engine()
    e.ingest([vic_fix(0), off_fix(0, 500)], T0)
    assert e.order_view(100).tier == Tier.REVEAL  # type: ignore[union-attr]
    # margin d - u: 655 - 10 = 645 <= 650: still reveal
    assert tiers_of(e.ingest([off_fix(1, 655)], T0 + 1)) == []
    # 661 - 10 = 651 > 650: leaves to notify
    assert tiers_of(e.ingest([off_fix(2, 661)], T0 + 2)) == [(Tier.REVEAL, Tier.NOTIFY)]


def test_a_victim_walking_toward_a_parked_offender_is_evaluated() -> None:
    e = make_engine()
    e.ingest([off_fix(0, 0.0)], T0)
    events = []
    for i, d in enumerate((2500, 1500, 550, 80)):
        events += e.ingest([vic_fix(i + 1, d)], T0 + i + 1)
    assert tiers_of(events) == [
        (Tier.CLEAR, Tier.NOTIFY),
        (Tier.NOTIFY, Tier.REVEAL),
        (Tier.REVEAL, Tier.BREACH),
    ]


@given(prior=st.sampled_from(list(Tier)[:4]), d_new=st.floats(0, 4000))
@settings(max_examples=200, deadline=None)
def test_the_decision_does_not_depend_on_which_party_arrived_last(
    prior: Tier, d_new: float
) -> None:
    # Same two latest fixes, same prior tier; only which one arrived last differs.
    results = []
    for offender_last in (True, False):
        e = make_engine()
        e.restore({}, {100: (prior, prior, T0)})
        first = vic_fix(1, 0.0) if offender_last else off_fix(1, d_new)
        second = off_fix(2, d_new) if offender_last else vic_fix(2, 0.0)
        e.ingest([first], T0 + 3)
        e.restore({}, {100: (prior, prior, T0)})  # reset the tier the first fix may have moved
        e.ingest([second], T0 + 3)
        results.append(e.order_view(100).tier)  # type: ignore[union-attr]
    assert results[0] == results[1]


fix_script = st.lists(
    st.tuples(st.integers(0, 2), st.booleans(), st.floats(0, 3000), st.integers(1, 3)),
    min_size=1,
    max_size=40,
)


def _script_fixes(script: list[tuple[int, bool, float, int]]) -> list[Fix]:
    t = 0.0
    fixes = []
    for pair, offender, d, dt in script:
        t += dt
        fixes.append(off_fix(t, d, pair=pair) if offender else vic_fix(t, 0.0, pair=pair))
    return fixes


@given(script=fix_script, cuts=st.lists(st.integers(1, 39), max_size=6))
@settings(max_examples=150, deadline=None)
def test_a_batch_decides_exactly_what_one_fix_at_a_time_decides(
    script: list[tuple[int, bool, float, int]], cuts: list[int]
) -> None:
    fixes = _script_fixes(script)
    now = fixes[-1].fix_time
    one = make_engine(pairs=3)
    single = [ev for f in fixes for ev in one.ingest([f], now)]
    many = make_engine(pairs=3)
    bounds = sorted({0, len(fixes), *[c for c in cuts if c < len(fixes)]})
    batched = [
        ev for a, b in zip(bounds, bounds[1:], strict=False) for ev in many.ingest(fixes[a:b], now)
    ]
    assert sorted(ev.id for ev in single) == sorted(ev.id for ev in batched)
    for oid in (100, 101, 102):
        assert one.order_view(oid).tier == many.order_view(oid).tier  # type: ignore[union-attr]


@given(script=fix_script, replay=st.lists(st.integers(0, 39), min_size=1, max_size=10))
@settings(max_examples=100, deadline=None)
def test_replaying_any_fix_emits_no_new_live_event(
    script: list[tuple[int, bool, float, int]], replay: list[int]
) -> None:
    fixes = _script_fixes(script)
    now = fixes[-1].fix_time
    e = make_engine(pairs=3)
    e.ingest(fixes, now)
    tiers_before = [e.order_view(o).tier for o in (100, 101, 102)]  # type: ignore[union-attr]
    again = e.ingest([fixes[i % len(fixes)] for i in replay], now)
    assert again == []
    assert [e.order_view(o).tier for o in (100, 101, 102)] == tiers_before  # type: ignore[union-attr]


def test_a_late_fix_never_changes_the_live_tier_and_is_set_aside() -> None:
    e = make_engine()
    e.ingest([vic_fix(0), off_fix(10, 3000)], T0 + 10)
    late = off_fix(5, 50)  # store-and-forward: a breach five seconds ago
    assert e.ingest([late], T0 + 11) == []
    assert e.order_view(100).tier == Tier.CLEAR  # type: ignore[union-attr]
    assert e.drain_late() == [late]
    assert e.drain_late() == []


def test_a_stale_offender_in_reveal_becomes_uncertain_when_the_timer_fires() -> None:
    e = make_engine()
    e.ingest([vic_fix(0), off_fix(0, 400)], T0)
    assert e.tick(T0 + 119) == []
    lost = e.tick(T0 + 121)
    assert tiers_of(lost) == [(Tier.REVEAL, Tier.UNCERTAIN)]
    assert lost[0].at == T0 + 120  # the deadline, not when the tick ran: a replay has the same id
    assert e.tick(T0 + 122) == []
    # His signal comes back far away: uncertainty ends with a fresh decision.
    back = e.ingest([vic_fix(130), off_fix(131, 1500)], T0 + 131)
    assert tiers_of(back) == [(Tier.UNCERTAIN, Tier.NOTIFY)]


def test_a_device_reporting_no_gps_fix_during_a_breach_makes_the_order_uncertain() -> None:
    e = make_engine()
    e.ingest([vic_fix(0), off_fix(0, 50)], T0)
    assert e.order_view(100).tier == Tier.BREACH  # type: ignore[union-attr]
    events = e.ingest([off_fix(1, 0.0, valid=False)], T0 + 1)
    assert tiers_of(events) == [(Tier.BREACH, Tier.UNCERTAIN)]


def test_offline_and_no_fix_timers_fire_once_per_episode() -> None:
    e = make_engine()
    e.ingest([off_fix(0, 3000)], T0)
    assert [x.kind for x in e.tick(T0 + 299)] == []
    assert [x.kind for x in e.tick(T0 + 301)] == [EventKind.OFFLINE]
    assert e.tick(T0 + 400) == []
    for t in (500, 650, 790):  # still reporting, but without a GPS fix
        e.ingest([off_fix(t, 3000, valid=False)], T0 + t)
        assert e.tick(T0 + t) == []
    assert [x.kind for x in e.tick(T0 + 801)] == [EventKind.NO_FIX]
    assert e.tick(T0 + 802) == []


def _timer_deadlines(e: Engine, device_ids: list[int]) -> dict[tuple[int, EventKind], float]:
    """Seconds after a fix without GPS at T0 at which each device's health timers fire."""
    e.ingest([Fix(d, T0, HOME[0], HOME[1], 5.0, valid=False) for d in device_ids], T0)
    fired = [x for t in range(0, 401, 10) for x in e.tick(T0 + t)]
    return {(int(x.device_id), x.kind): x.at - T0 for x in fired}  # type: ignore[arg-type]


def test_an_offenders_devices_take_the_tightest_timers_of_his_orders_when_loaded() -> None:
    people = [
        Person(1, PersonKind.OFFENDER, "o"),
        Person(2, PersonKind.VICTIM, "v"),
        Person(3, PersonKind.OFFENDER, "o2"),
    ]
    ankle, phone, spare, moved = (
        Device(10, "A", DeviceKind.ANKLE_MONITOR, "api", 1),
        Device(20, "P", DeviceKind.PHONE, "api", 2),
        Device(11, "S", DeviceKind.ANKLE_MONITOR, "api", 1),
        Device(12, "M", DeviceKind.ANKLE_MONITOR, "api", 3),
    )
    rebound = Device(12, "M", DeviceKind.ANKLE_MONITOR, "api", 1)
    his = [
        Order(id=100, offender_id=1, victim_id=2, offline_after_s=120.0, no_fix_after_s=200.0),
        Order(id=101, offender_id=1, victim_id=2, offline_after_s=240.0, no_fix_after_s=60.0),
    ]
    other = Order(id=102, offender_id=3, victim_id=2, offline_after_s=280.0, no_fix_after_s=290.0)
    tight = {EventKind.NO_FIX: 60.0, EventKind.OFFLINE: 120.0}  # one from each of his orders
    default = {EventKind.OFFLINE: 300.0}  # offline fires first: no_fix never does

    def deadlines(reload: bool) -> dict[int, dict[EventKind, float]]:
        e = Engine()
        e.load(people, [ankle, phone, moved], [*his, other])
        # Bound to him after his orders were registered: their timers do not reach these
        # devices until the orders are registered again (the next load); a device moved
        # to him keeps what it had.
        e.add_device(spare)
        e.add_order(other)
        e.add_device(rebound)
        if reload:
            e.load(people, [ankle, phone, spare, rebound], [*his, other])
            # An order updated to looser timers never loosens what another order set.
            e.add_order(Order(id=100, offender_id=1, victim_id=2, offline_after_s=500.0))
        out: dict[int, dict[EventKind, float]] = {}
        for (dev, kind), at_s in _timer_deadlines(e, [10, 11, 12, 20]).items():
            out.setdefault(dev, {})[kind] = at_s
        return out

    assert deadlines(reload=False) == {
        10: tight,
        11: default,
        12: {EventKind.OFFLINE: 280.0},
        20: default,
    }
    assert deadlines(reload=True) == {10: tight, 11: tight, 12: tight, 20: default}


def test_a_jump_faster_than_250_kmh_is_flagged() -> None:
    e = make_engine()
    e.ingest([off_fix(0, 3000)], T0)
    events = e.ingest([off_fix(10, 5000)], T0 + 10)  # 2 km in 10 s
    assert [x.kind for x in events] == [EventKind.POSITION_JUMP]


def test_a_fast_approach_is_predicted_before_the_keep_away_radius_is_crossed() -> None:
    e = make_engine()
    e.ingest([vic_fix(0)], T0)
    events = []
    for i, d in enumerate((1500, 1300, 1100, 900)):  # 20 m/s toward her
        events += e.ingest(
            [off_fix(10 * (i + 1), d, speed_mps=20.0, heading_deg=270.0)], T0 + 10 * (i + 1)
        )
    kinds = [x.kind for x in events]
    assert EventKind.APPROACH_FAST in kinds
    assert kinds.count(EventKind.APPROACH_FAST) == 1


def test_a_victim_following_a_revealed_offender_raises_disclosure_misuse() -> None:
    e = make_engine()
    e.ingest([off_fix(0, 0.0), vic_fix(0, 580)], T0)
    events = []
    # her reports 10 s apart: her track is confirmed and he is shown from the second on;
    # three steps closing in while she sees him are the pattern
    for i, d in enumerate((540, 500, 460, 420)):
        events += e.ingest([vic_fix(10 * (i + 1), d)], T0 + 10 * (i + 1))
    assert [x.kind for x in events].count(EventKind.DISCLOSURE_MISUSE) == 1


def test_event_ids_are_the_same_for_the_same_inputs() -> None:
    runs = []
    for _ in range(2):
        e = make_engine()
        runs.append([x.id for x in e.ingest([vic_fix(0), off_fix(1, 50)], T0 + 1)])
    assert runs[0] == runs[1] and runs[0]


def test_engine_state_stays_under_one_kibibyte_per_pair() -> None:
    # Dense ids, as the database hands them out: person 2i+1/2i+2, device = person.
    e = Engine()
    n = 5000
    people = [
        Person(p, PersonKind.OFFENDER if p % 2 else PersonKind.VICTIM, "x")
        for p in range(1, 2 * n + 1)
    ]
    devices = [Device(p, f"D{p}", DeviceKind.PHONE, "api", p) for p in range(1, 2 * n + 1)]
    orders = [Order(id=i + 1, offender_id=2 * i + 1, victim_id=2 * i + 2) for i in range(n)]
    e.load(people, devices, orders)
    lat, lon = at(900)
    fixes = [
        Fix(p, T0, lat if p % 2 else HOME[0], lon if p % 2 else HOME[1], 5.0)
        for p in range(1, 2 * n + 1)
    ]
    e.ingest(fixes, T0)
    assert e.order_view(1).tier == Tier.NOTIFY  # type: ignore[union-attr]
    assert 200 < e.bytes_per_pair() <= 1024


def test_after_a_message_without_gps_his_last_seen_time_is_that_of_his_last_position() -> None:
    e = make_engine()
    e.ingest([vic_fix(0), off_fix(0, 300)], T0)
    e.ingest([off_fix(30, 0.0, valid=False)], T0 + 30)
    view = e.order_view(100, T0 + 31)
    assert view.tier == Tier.UNCERTAIN  # type: ignore[union-attr]
    assert view.offender.fix_time == T0  # type: ignore[union-attr]
    assert view.offender_stale  # type: ignore[union-attr]
