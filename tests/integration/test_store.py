"""The store on real SQLite and real PostgreSQL, through one code path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from bangpae.adapters.store import Store
from bangpae.adapters.store.errors import Conflict, Invalid, NotFound
from bangpae.domain.model import EventKind, Fix, Order, Tier, WeeklyWindow, Zone, make_event


@pytest.fixture
def store(database_url: str):
    s = Store(database_url)
    s.migrate()
    yield s
    s.close()


def _case(store: Store) -> tuple[int, int, int, int, int]:
    off = store.add_person("offender", "O")
    vic = store.add_person("victim", "V")
    a = store.add_device("ANKLE", "ankle_monitor", "osmand", off)
    p = store.add_device("PHONE", "phone", "osmand", vic)
    zone = Zone(
        "home",
        "Home",
        {"type": "Point", "coordinates": [126.97, 37.56]},
        300.0,
        (WeeklyWindow(0, 22 * 60, 6 * 60),),
    )
    o = store.add_order(Order(0, off, vic, zones=(zone,), valid_from=1.0))
    return off, vic, a, p, o


def test_migrating_twice_is_a_no_op(store: Store) -> None:
    store.migrate()
    assert store.count_fixes() == 0


def test_people_devices_and_orders_round_trip(store: Store) -> None:
    off, vic, a, p, o = _case(store)
    order = store.get_order(o)
    assert order is not None and order.offender_id == off and order.victim_id == vic
    assert order.zones[0].schedule == (WeeklyWindow(0, 1320, 360),)
    assert store.get_device("ANKLE").id == a  # type: ignore[union-attr]
    assert store.get_device(p).identifier == "PHONE"  # type: ignore[union-attr]
    assert store.get_device(str(p)).id == p  # type: ignore[union-attr]
    assert [x.id for x in store.orders_for_person(vic)] == [o]
    people, devices, orders = store.load_all()
    assert (len(people), len(devices), len(orders)) == (2, 2, 1)


def test_duplicates_and_wrong_kinds_are_refused(store: Store) -> None:
    off, vic, *_ = _case(store)
    with pytest.raises(Conflict):
        store.add_device("ANKLE", "phone", "osmand", vic)
    with pytest.raises(NotFound):
        store.add_device("X", "phone", "osmand", 999)
    with pytest.raises(Invalid):
        store.add_order(Order(0, vic, off))
    store.add_user("op", "hash", "operator")
    with pytest.raises(Conflict):
        store.add_user("op", "hash", "operator")


def test_fixes_page_newest_first_with_a_cursor(store: Store) -> None:
    _, _, a, _, _ = _case(store)
    ids = store.append_fixes([Fix(a, 1000.0 + i, 37.5, 127.0, 5.0) for i in range(25)])
    assert ids == sorted(ids) and len(set(ids)) == 25
    first = store.fixes_for_device(a, limit=10)
    second = store.fixes_for_device(a, limit=10, before_id=first[-1].id)
    third = store.fixes_for_device(a, limit=10, before_id=second[-1].id)
    times = [x.fix.fix_time for x in first + second + third]
    assert times == sorted(times, reverse=True) and len(times) == 25
    assert store.latest_fixes()[a].fix_time == 1024.0


def test_events_are_idempotent_and_incidents_join_the_open_one(store: Store) -> None:
    _, _, a, _, o = _case(store)
    e1 = make_event(
        EventKind.TIER_CHANGED, 10.0, o, a, order_id=o, tier_from=Tier.REVEAL, tier_to=Tier.BREACH
    )
    e2 = make_event(
        EventKind.TIER_CHANGED, 20.0, o, a, order_id=o, tier_from=Tier.REVEAL, tier_to=Tier.BREACH
    )
    assert store.add_events([e1]) == [e1]
    assert store.add_events([e1]) == []
    _, new = store.record_batch([], [], [(e1, "breach", "critical"), (e2, "breach", "critical")])
    assert new == [e2]
    open_ = store.incidents("open")
    assert len(open_) == 1 and open_[0].kind == "breach" and open_[0].priority == "critical"
    assert store.latest_tiers()[o][0] == Tier.BREACH


def test_incidents_move_through_their_lifecycle_and_refuse_impossible_steps(store: Store) -> None:
    _, _, a, _, o = _case(store)
    e = make_event(EventKind.TAMPER, 5.0, a, order_id=o, device_id=a)
    iid, created = store.record_incident("tamper", "critical", e)
    assert created and store.record_incident("tamper", "critical", e) == (iid, False)
    with pytest.raises(Invalid):
        store.incident_action(iid, "on_scene", "op", 6.0)
    store.incident_action(iid, "acknowledge", "op", 6.0, "seen")
    store.incident_action(iid, "dispatch", "op", 7.0, "officer 3", {"officer_id": 3})
    store.incident_action(iid, "on_scene", "op", 8.0)
    done = store.incident_action(iid, "resolve", "op", 9.0, "strap replaced")
    assert done.status == "resolved"
    assert [x["action"] for x in done.timeline] == [
        "event",
        "acknowledge",
        "dispatch",
        "on_scene",
        "resolve",
    ]
    # a new tamper after resolution opens a new incident
    e2 = make_event(EventKind.TAMPER, 50.0, a, order_id=o, device_id=a)
    assert store.record_incident("tamper", "critical", e2)[1] is True


def _audit(store: Store, n: int) -> None:
    for i in range(n):
        store.audit_append(
            "user:1:op",
            "operator",
            "read_position",
            f"device:{i}",
            "ops",
            ["lat", "lon"],
            at=100.0 + i,
        )


def test_an_intact_audit_chain_verifies(store: Store) -> None:
    _audit(store, 5)
    report = store.audit_verify()
    assert report.ok and report.records == 5


@pytest.mark.parametrize(
    ("tamper", "bad"),
    [
        ("UPDATE audit SET purpose = 'curiosity' WHERE id = 3", 3),
        ("DELETE FROM audit WHERE id = 3", 4),
        (
            "UPDATE audit SET subject = (CASE id WHEN 2 THEN 'device:3' ELSE 'device:1' END) "
            "WHERE id IN (2, 4)",
            2,
        ),
        (
            "INSERT INTO audit (id, at, actor, role, action, subject, purpose, fields, "
            "prev_hash, hash) SELECT 6, 200, 'user:9:x', 'operator', 'read_position', "
            "'device:1', 'ops', '[]', hash, hash FROM audit WHERE id = 5",
            6,
        ),
    ],
    ids=["edit", "delete", "reorder", "insert"],
)
def test_any_tampering_with_the_audit_chain_is_detected(
    store: Store, tamper: str, bad: int
) -> None:
    _audit(store, 5)
    with store.engine.begin() as c:
        c.execute(text(tamper))
    report = store.audit_verify()
    assert not report.ok and report.first_bad_id == bad, report


def test_purge_keeps_fixes_under_legal_hold(store: Store) -> None:
    _, _, a, _, _ = _case(store)
    store.append_fixes([Fix(a, float(t), 37.5, 127.0, 5.0) for t in range(100, 110)])
    assert store.hold_fixes([a], 100.0, 102.0) == 3
    assert store.purge_fixes(105.0) == 2
    assert store.count_fixes() == 8


WRITER = r"""
import sys
from bangpae.adapters.store import Store
from bangpae.domain.model import Fix
s = Store(sys.argv[1]); s.migrate()
dev = int(sys.argv[2])
for i in range(100000):
    (fid,) = s.append_fixes([Fix(dev, 1000.0 + i, 37.5, 127.0, 5.0)])
    print(fid, flush=True)
"""


def test_every_acknowledged_fix_survives_kill_9(database_url: str, tmp_path: Path) -> None:
    s = Store(database_url)
    s.migrate()
    _, _, a, _, _ = _case(s)
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, database_url, str(a)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    acked = [int(proc.stdout.readline()) for _ in range(200)]
    proc.kill()
    proc.wait()
    acked += [int(x) for x in proc.stdout.read().split()]
    stored = {x.id for x in s.fixes_for_device(a, limit=100000)}
    assert set(acked) <= stored
    s.close()


def test_zone_geometry_survives_the_round_trip_as_json(store: Store) -> None:
    *_, o = _case(store)
    zone = store.get_order(o).zones[0]  # type: ignore[union-attr]
    assert json.loads(json.dumps(dict(zone.geometry)))["type"] == "Point"
