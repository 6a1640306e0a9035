"""Ingest on a real store: group commit, incidents once per order and kind, late data."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from geographiclib.geodesic import Geodesic

from bangpae.adapters.bus import InProcessBus
from bangpae.adapters.clock import ManualClock
from bangpae.adapters.store import Store
from bangpae.domain.audit import AuditEntry
from bangpae.domain.model import EventKind, Fix, Order
from bangpae.engine.engine import Engine
from bangpae.services.ingest import Ingest
from tests.scenario import HOME, T0


def at(distance_m: float) -> tuple[float, float]:
    g = Geodesic.WGS84.Direct(HOME[0], HOME[1], 90.0, distance_m)
    return g["lat2"], g["lon2"]


@pytest.fixture
async def case(tmp_path: Path):
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.migrate()
    off = store.add_person("offender", "O")
    vic = store.add_person("victim", "V")
    ankle = store.add_device("ANKLE", "ankle_monitor", "osmand", off)
    phone = store.add_device("PHONE", "phone", "osmand", vic)
    order = store.add_order(Order(id=0, offender_id=off, victim_id=vic))
    clock = ManualClock(T0)
    bus = InProcessBus()
    ingest = Ingest(store, Engine(), clock, bus)
    await ingest.start(tick_s=3600)
    yield store, ingest, clock, bus, ankle, phone, order
    await ingest.stop()
    store.close()


def fix(device: int, t: float, d: float, **kw: object) -> Fix:
    lat, lon = at(d)
    return Fix(device, T0 + t, lat, lon, 5.0, **kw)  # type: ignore[arg-type]


async def test_submitted_fixes_are_stored_before_submit_returns(case) -> None:
    store, ingest, clock, _bus, ankle, phone, _ = case
    ids = await ingest.submit([fix(phone, 0, 0), fix(ankle, 0, 3000)])
    assert len(ids) == 2 and store.count_fixes() == 2


async def test_a_breach_opens_one_critical_incident_however_often_it_jitters(case) -> None:
    store, ingest, clock, bus, ankle, phone, order = case
    q = bus.subscribe()
    await ingest.submit([fix(phone, 0, 0)])
    for i in range(60):  # jitter around the keep-away radius
        clock.set(T0 + i + 1)
        await ingest.submit([fix(ankle, i + 1, 80 if i % 2 else 160)])
    open_ = store.incidents(status="open")
    breach = [x for x in open_ if x.order_id == order and x.priority == "critical"]
    assert len(breach) == 1
    kinds = set()
    while not q.empty():
        kinds.add(q.get_nowait().kind)
    assert EventKind.TIER_CHANGED in kinds


async def test_a_late_breach_is_stored_as_late_data_and_never_changes_the_live_tier(case) -> None:
    store, ingest, clock, _bus, ankle, phone, order = case
    clock.set(T0 + 100)
    await ingest.submit([fix(phone, 0, 0), fix(phone, 50, 0), fix(ankle, 100, 3000)])
    await ingest.submit([fix(ankle, 52, 40)])  # uploaded late: he was at 40 m at t=52
    assert ingest.engine.order_view(order).tier.label == "clear"
    incidents = store.incidents(status="open")
    assert any(x.kind == "retro_breach" for x in incidents), incidents


async def test_a_restart_rebuilds_positions_and_tiers_from_the_store(case, tmp_path: Path) -> None:
    store, ingest, clock, _bus, ankle, phone, order = case
    await ingest.submit([fix(phone, 0, 0), fix(ankle, 0, 400)])
    assert ingest.engine.order_view(order).tier.label == "reveal"
    again = Ingest(store, Engine(), clock, InProcessBus())
    await again.start(tick_s=3600)
    try:
        view = again.engine.order_view(order, clock.now())
        assert view.tier.label == "reveal" and view.offender is not None
        # a replay of what was already applied decides nothing new
        await again.submit([fix(ankle, 0, 400)])
        assert again.stats.events == 0
    finally:
        await again.stop()


async def test_a_buffered_tamper_alarm_arriving_late_is_kept_as_late_evidence(case) -> None:
    store, ingest, clock, _bus, ankle, phone, order = case
    clock.set(T0 + 200)
    await ingest.submit([fix(phone, 0, 0), fix(ankle, 200, 3000)])
    # uploaded after the fact: the strap was cut at t=120, far from her
    await ingest.submit([fix(ankle, 120, 2500, alarms=frozenset({"tamper"}))])
    assert ingest.engine.order_view(order).tier.label == "clear"
    tamper = [x for x in store.incidents(status="open") if x.kind == "tamper"]
    assert len(tamper) == 1 and tamper[0].priority == "critical"


async def test_a_batch_wakes_only_the_streams_that_follow_an_order_it_touched(case) -> None:
    store, ingest, _clock, _bus, ankle, phone, order = case
    off2 = store.add_person("offender", "O2")
    vic2 = store.add_person("victim", "V2")
    ankle2 = store.add_device("ANKLE2", "ankle_monitor", "osmand", off2)
    other = store.add_order(Order(id=0, offender_id=off2, victim_id=vic2))
    await ingest.reload_registry()
    mine, theirs, both = (
        ingest.live.watch([order]),
        ingest.live.watch([other]),
        ingest.live.watch([order, other]),
    )
    await ingest.submit([fix(ankle, 0, 3000)])
    assert mine.get_nowait() == {order} and both.get_nowait() == {order}
    assert theirs.empty()
    ingest.live.unwatch(mine)
    await ingest.submit([fix(ankle2, 1, 3000), fix(phone, 1, 0)])
    assert mine.empty() and theirs.get_nowait() == {other}
    assert both.get_nowait() == {order, other}
    ingest.live.unwatch(theirs)
    ingest.live.unwatch(both)
    assert not ingest.live  # no stream follows any order any more


async def test_a_live_view_gets_the_status_a_batch_made_with_its_reads_already_audited(
    case,
) -> None:
    store, ingest, _clock, _bus, ankle, phone, order = case
    subject = f"order:{order}/offender"

    def view(now: float) -> tuple[dict, list[AuditEntry]]:
        tier = ingest.engine.order_view(order, now).tier.label
        reads = [
            AuditEntry(
                actor="user:7:victim",
                role="victim",
                action="read_position",
                subject=subject,
                purpose="victim_safety",
                fields=["lat", "lon"],
                at=now,
                request_id=None,
            )
        ]
        return {"tier": tier}, reads if tier in ("reveal", "breach") else []

    q = ingest.live.watch([order], view)
    await ingest.submit([fix(phone, 0, 0), fix(ankle, 0, 1500)])
    assert q.get_nowait() == {"tier": "notify"}
    assert store.audit_records(subject=subject) == []
    await ingest.submit([fix(ankle, 1, 400)])
    assert q.get_nowait() == {"tier": "reveal"}
    (record,) = store.audit_records(subject=subject)
    assert record["actor"] == "user:7:victim" and record["fields"] == ["lat", "lon"]
    assert store.audit_verify().ok

    def broken(now: float) -> tuple[dict, list[AuditEntry]]:
        status, reads = view(now)
        return status, [replace(r, actor="x" * 10_000) for r in reads]

    other = ingest.live.watch([order], broken)  # a record the audit log cannot hold
    await ingest.submit([fix(ankle, 2, 300)])  # the fixes are stored all the same
    assert other.get_nowait() == {order}  # that stream reads and audits its status itself
    assert q.get_nowait() == {"tier": "reveal"} and store.count_fixes() == 4
    assert len(store.audit_records(subject=subject)) == 2
    with pytest.raises(TypeError):  # a record missing what audit_append needs
        store.check_audit({"actor": "user:7:victim", "role": "victim"})


def _poison(monkeypatch: pytest.MonkeyPatch, bad: set[int]) -> None:
    """Fault injection: the engine fails on any batch holding a fix of these devices."""
    real = Engine.ingest_batch

    def failing(self: Engine, batch, now):  # type: ignore[no-untyped-def]
        if bad & set(batch.device.tolist()):
            raise IndexError("engine fault on a poisoned fix")
        return real(self, batch, now)

    monkeypatch.setattr(Engine, "ingest_batch", failing)


async def test_a_failing_fix_takes_no_healthy_fix_down_with_it(
    case, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, ingest, clock, bus, ankle, phone, order = case
    other = store.add_device("OTHER", "ankle_monitor", "osmand", store.add_person("offender", "P"))
    await ingest.reload_registry()
    _poison(monkeypatch, {other})
    q = bus.subscribe()
    # three submissions that the writer takes as one batch
    healthy = [ingest.enqueue([fix(phone, 0, 0)]), ingest.enqueue([fix(ankle, 0, 3000)])]
    poisoned = ingest.enqueue([fix(other, 0, 100)])
    ids = [await f for f in healthy]
    assert [len(x) for x in ids] == [1, 1] and store.count_fixes() == 2
    with pytest.raises(IndexError):
        await poisoned
    assert ingest.engine.order_view(order).tier.label == "clear"  # decided as usual
    assert ingest.degraded(clock.now()) is None  # nobody is told the service failed
    assert ingest.stats.refused == 1 and ingest.stats.failures == 0
    refused = [i for i in store.incidents("open") if i.kind == "fix_refused"]
    assert len(refused) == 1 and refused[0].priority == "high"
    kinds = []
    while not q.empty():
        kinds.append(q.get_nowait().kind)
    assert EventKind.FIX_REFUSED in kinds


async def test_when_every_fix_fails_alone_the_service_itself_is_failing(
    case, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, ingest, clock, _bus, ankle, phone, _ = case
    _poison(monkeypatch, {ankle, phone})
    futures = [ingest.enqueue([fix(phone, 0, 0)]), ingest.enqueue([fix(ankle, 0, 3000)])]
    for f in futures:
        with pytest.raises(IndexError):
            await f
    assert store.count_fixes() == 0
    assert ingest.degraded(clock.now()) == "storing fixes failed"
    assert [i for i in store.incidents("open") if i.kind == "fix_refused"] == []
