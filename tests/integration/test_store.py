"""The store on real SQLite and real PostgreSQL, through one code path."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text

from bangpae.adapters.store import Store
from bangpae.adapters.store import schema as tables
from bangpae.domain.batch import FixBatch
from bangpae.domain.errors import Conflict, Invalid, NotFound
from bangpae.domain.model import (
    Device,
    DeviceKind,
    Event,
    EventKind,
    Fix,
    Order,
    Person,
    PersonKind,
    Tier,
    WeeklyWindow,
    Zone,
    make_event,
)
from tests.integration.conftest import Case, make_case

MIGRATIONS = Path(__file__).parents[2] / "src/bangpae/adapters/store/migrations"


def _tables(store: Store) -> set[str]:
    with store.engine.connect() as c:
        return set(inspect(c).get_table_names())


def _version(store: Store) -> str:
    with store.engine.connect() as c:
        return str(c.execute(text("SELECT version_num FROM alembic_version")).scalar_one())


# -- construction and migrations ---------------------------------------------------------


def test_constructing_a_store_connects_to_nothing() -> None:
    s = Store("postgresql://nobody@127.0.0.1:1/nowhere")  # nothing listens on port 1
    assert s.dialect == "postgresql" and s.url == "postgresql://nobody@127.0.0.1:1/nowhere"
    assert s.engine.url.drivername == "postgresql+psycopg"
    s.close()


def test_importing_the_store_opens_nothing_and_loads_no_migration_tool() -> None:
    code = "import sys, bangpae.adapters.store; assert 'alembic' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_migrating_twice_is_a_no_op(database_url: str) -> None:
    s = Store(database_url)
    s.migrate()
    before = (_tables(s), _version(s))
    pid = s.add_person("victim", "V")
    s.migrate()
    assert (_tables(s), _version(s)) == before
    assert s.get_person(pid) == Person(pid, PersonKind.VICTIM, "V")
    assert {"people", "devices", "orders", "fixes", "events", "incidents"} <= before[0]
    assert {"incident_entries", "users", "audit", "alembic_version"} <= before[0]
    s.close()


def test_the_migrations_build_exactly_the_declared_tables(store: Store) -> None:
    with store.engine.connect() as c:
        assert compare_metadata(MigrationContext.configure(c), tables.metadata) == []


def test_a_database_at_the_first_revision_is_upgraded_to_the_newest(database_url: str) -> None:
    s = Store(database_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with s.engine.begin() as c:
        cfg.attributes["connection"] = c
        command.upgrade(cfg, "0001")
    assert _version(s) == "0001"
    s.migrate()
    from alembic.script import ScriptDirectory

    assert _version(s) == ScriptDirectory.from_config(cfg).get_current_head()
    with s.engine.connect() as c:
        names = {ix["name"] for ix in inspect(c).get_indexes("incident_entries")}
        columns = {col["name"] for col in inspect(c).get_columns("devices")}
    assert "ix_incident_entries_event_id" in names
    assert "lenient_crc" in columns
    s.close()


def test_sqlite_runs_in_wal_with_full_sync_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    s = Store(f"sqlite:///{tmp_path / 'x.sqlite'}")
    s.migrate()
    with s.engine.connect() as c:
        pragma = {
            name: c.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
        }
    assert pragma == {
        "journal_mode": "wal",
        "synchronous": 2,
        "foreign_keys": 1,
        "busy_timeout": 30000,
    }
    s.close()


def test_an_in_memory_sqlite_store_is_one_database_for_every_thread() -> None:
    s = Store("sqlite://")
    s.migrate()
    ids: list[int] = []
    threads = [
        threading.Thread(target=lambda: ids.append(s.add_person("officer", "O"))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(p.id for p in s.load_all()[0]) == sorted(ids) and len(ids) == 4
    s.close()


# -- people, devices, orders ------------------------------------------------------------------


def test_people_round_trip_and_unknown_ids_are_none(store: Store) -> None:
    pid = store.add_person("officer", "김 경관")
    assert store.get_person(pid) == Person(pid, PersonKind.OFFICER, "김 경관")
    assert store.get_person(pid + 1000) is None


def test_a_person_of_unknown_kind_or_an_overlong_name_is_invalid(store: Store) -> None:
    with pytest.raises(Invalid):
        store.add_person("bystander", "X")
    with pytest.raises(Invalid):
        store.add_person("victim", "x" * 201)


def test_devices_are_found_by_id_or_identifier_and_keep_their_secret_hash(store: Store) -> None:
    pid = store.add_person("offender", "O")
    first = store.add_device("IMEI-1", "ankle_monitor", "gt06", pid, "argon2$hash")
    # An identifier made of digits that is also another device's id: the identifier wins.
    second = store.add_device(str(first), "watch", "h02", pid)
    assert store.get_device(first) == Device(first, "IMEI-1", DeviceKind.ANKLE_MONITOR, "gt06", pid)
    assert store.get_device("IMEI-1") == store.get_device(first)
    assert store.get_device(str(first)).id == second  # type: ignore[union-attr]
    assert store.get_device(str(second)).id == second  # type: ignore[union-attr]
    assert store.get_device("999999") is None and store.get_device("nope") is None
    assert store.device_secret_hash(first) == "argon2$hash"
    assert store.device_secret_hash(second) is None
    assert store.device_ids_of_person(pid) == [first, second]


def test_device_registration_refuses_duplicates_unknown_people_and_kinds(store: Store) -> None:
    pid = store.add_person("victim", "V")
    store.add_device("PHONE", "phone", "osmand", pid)
    with pytest.raises(Conflict):
        store.add_device("PHONE", "watch", "owntracks", pid)
    with pytest.raises(NotFound):
        store.add_device("OTHER", "phone", "osmand", pid + 1000)
    with pytest.raises(Invalid):
        store.add_device("OTHER", "toaster", "osmand", pid)
    assert [d.identifier for d in store.load_all()[1]] == ["PHONE"]


def test_orders_round_trip_every_field(store: Store) -> None:
    off = store.add_person("offender", "O")
    vic = store.add_person("victim", "V")
    home = Zone(
        "home",
        "Home",
        {"type": "Point", "coordinates": [126.97, 37.56]},
        300.0,
        (WeeklyWindow(0, 22 * 60, 6 * 60), WeeklyWindow(6, 0, 1440)),
    )
    school = Zone(
        "school",
        "학교",
        {
            "type": "Polygon",
            "coordinates": [[[127.0, 37.5], [127.01, 37.5], [127.01, 37.51], [127.0, 37.5]]],
        },
    )
    curfew = Zone("night", "Own flat", {"type": "Point", "coordinates": [127.1, 37.6]}, 80.0)
    order = Order(
        id=0,
        offender_id=off,
        victim_id=vic,
        notify_radius_m=5000.0,
        reveal_radius_m=700.0,
        keep_away_m=150.0,
        hysteresis_m=30.0,
        zones=(home, school),
        curfews=(curfew,),
        stale_after_s=90.0,
        offline_after_s=600.0,
        no_fix_after_s=400.0,
        valid_from=1_700_000_000.0,
        valid_until=1_800_000_000.5,
        profile="fr",
        timezone="Europe/Paris",
    )
    oid = store.add_order(order)
    assert store.get_order(oid) == dataclasses.replace(order, id=oid)
    assert store.get_order(oid + 1000) is None


def test_an_order_needs_an_offender_and_a_victim(store: Store) -> None:
    off = store.add_person("offender", "O")
    vic = store.add_person("victim", "V")
    officer = store.add_person("officer", "P")
    for offender, victim in ((vic, off), (off, officer), (officer, vic), (off, vic + 1000)):
        with pytest.raises(Invalid):
            store.add_order(Order(0, offender, victim))
    assert store.load_all()[2] == []


def test_orders_for_a_person_and_load_all_return_everything_in_id_order(store: Store) -> None:
    a = make_case(store, "A")
    b = make_case(store, "B")
    both = store.add_order(Order(0, a.offender, b.victim))
    assert [o.id for o in store.orders_for_person(a.offender)] == [a.order, both]
    assert [o.id for o in store.orders_for_person(b.victim)] == [b.order, both]
    assert store.orders_for_person(a.ankle + 1000) == []
    people, devices, orders = store.load_all()
    assert [p.id for p in people] == [a.offender, a.victim, b.offender, b.victim]
    assert [d.id for d in devices] == [a.ankle, a.phone, b.ankle, b.phone]
    assert [o.id for o in orders] == [a.order, b.order, both]


# -- fixes ------------------------------------------------------------------------------------


def test_fixes_round_trip_every_field_and_their_late_flag(store: Store, case: Case) -> None:
    full = Fix(
        case.ankle,
        1000.25,
        37.5665,
        126.978,
        accuracy_m=7.5,
        speed_mps=1.4,
        heading_deg=271.0,
        battery_pct=18.0,
        valid=True,
        alarms=frozenset({"tamper", "low_battery"}),
        received_at=1003.5,
    )
    bare = Fix(case.phone, 990.0, 37.0, 127.0, valid=False)
    ids = store.append_fixes([full, bare], late=[False, True])
    assert ids[0] < ids[1]
    (got,) = store.fixes_for_device(case.ankle)
    assert (got.id, got.fix, got.late) == (ids[0], full, False)
    (got,) = store.fixes_for_device(case.phone)
    # a fix without a receipt time is taken as received when it was made
    assert (got.fix, got.late) == (dataclasses.replace(bare, received_at=990.0), True)
    assert store.append_fixes([]) == [] and store.count_fixes() == 2


def test_a_batch_of_fixes_is_stored_whole_or_not_at_all(store: Store, case: Case) -> None:
    good = Fix(case.ankle, 1.0, 37.5, 127.0)
    with pytest.raises(NotFound):
        store.append_fixes([good, Fix(case.ankle + 1000, 2.0, 37.5, 127.0)])
    with pytest.raises(Invalid):
        store.append_fixes([good], late=[False, True])
    assert store.count_fixes() == 0


def test_fixes_page_newest_first_with_a_cursor(store: Store, case: Case) -> None:
    ids = []
    for i in range(25):  # interleaved with the other device's fixes
        ids += store.append_fixes(
            [
                Fix(case.ankle, 1000.0 + i, 37.5, 127.0, 5.0),
                Fix(case.phone, 1000.0 + i, 37.0, 127.0),
            ]
        )
    assert ids == sorted(ids) and len(set(ids)) == 50
    pages, cursor = [], None
    while page := store.fixes_for_device(case.ankle, limit=10, before_id=cursor):
        pages.append(page)
        cursor = page[-1].id
    assert [len(p) for p in pages] == [10, 10, 5]
    flat = [x for p in pages for x in p]
    assert [x.fix.fix_time for x in flat] == [1024.0 - i for i in range(25)]
    assert all(x.fix.device_id == case.ankle for x in flat)
    assert [x.id for x in flat] == sorted((x.id for x in flat), reverse=True)


def test_a_batch_of_columns_stores_nan_as_unknown(store: Store, case: Case) -> None:
    n = 6000  # more rows than one INSERT statement carries on SQLite
    devices = np.where(np.arange(n) % 2 == 0, case.ankle, case.phone)
    times = 5000.0 + np.arange(n, dtype=np.float64)
    acc = np.full(n, 12.0)
    acc[::3] = np.nan
    batch = FixBatch.positions(devices, times, np.full(n, 37.5), np.full(n, 127.25), acc)
    ids = store.append_fixes(batch)
    assert ids == list(range(ids[0], ids[0] + n))
    assert store.append_fixes(FixBatch.empty()) == [] and store.count_fixes() == n
    newest = store.fixes_for_device(case.phone, limit=2)
    assert [x.fix.fix_time for x in newest] == [10999.0, 10997.0]
    assert [x.id for x in newest] == [ids[-1], ids[-3]]
    assert newest[0].fix == Fix(case.phone, 10999.0, 37.5, 127.25, 12.0, received_at=10999.0)
    assert newest[1].fix.accuracy_m is None and not newest[1].late
    with pytest.raises(ValueError):
        FixBatch.positions([case.ankle], [1.0, 2.0], [37.0], [127.0], [5.0])


def test_a_batch_stores_every_field_of_its_fixes(store: Store, case: Case) -> None:
    full = Fix(
        case.ankle,
        10.0,
        37.5,
        127.0,
        8.0,
        1.5,
        90.0,
        55.0,
        True,
        frozenset({"sos", "tamper"}),
        11.0,
    )
    bare = Fix(case.phone, 10.5, 37.6, 127.1)
    dark = Fix(case.ankle, 9.0, 37.4, 126.9, valid=False, alarms=frozenset({"power_cut"}))
    ids = store.append_fixes(FixBatch.of([full, bare, dark]), late=[False, False, True])
    stored = {
        x.id: (x.fix, x.late) for d in (case.ankle, case.phone) for x in store.fixes_for_device(d)
    }
    assert [stored[i] for i in ids] == [
        (full, False),
        (dataclasses.replace(bare, received_at=10.5), False),
        (dataclasses.replace(dark, received_at=9.0), True),
    ]
    with pytest.raises(Invalid):
        store.append_fixes([Fix(case.ankle, 1.0, 37.0, 127.0, alarms=frozenset({"nonsense"}))])


def test_latest_fixes_are_the_newest_live_fix_of_each_device(store: Store, case: Case) -> None:
    other = make_case(store, "2")
    store.append_fixes([Fix(case.ankle, 10.0, 37.5, 127.0), Fix(case.ankle, 20.0, 37.6, 127.0)])
    store.append_fixes([Fix(case.ankle, 5.0, 37.7, 127.0)], late=[True])  # uploaded later
    store.append_fixes([Fix(other.ankle, 1.0, 37.0, 127.0)], late=[True])
    store.append_fixes([Fix(case.phone, 30.0, 37.0, 127.0, valid=False)])
    latest = store.latest_fixes()
    assert set(latest) == {case.ankle, case.phone}
    assert latest[case.ankle].fix_time == 20.0 and latest[case.ankle].lat == 37.6
    assert latest[case.phone].valid is False


def test_fix_at_or_before_finds_the_newest_valid_fix_inside_the_window(
    store: Store, case: Case
) -> None:
    store.append_fixes(
        [
            Fix(case.phone, 100.0, 37.0, 127.0),
            Fix(case.ankle, 105.0, 37.1, 127.0),
            Fix(case.ankle, 110.0, 37.2, 127.0, valid=False),
            Fix(case.phone, 130.0, 37.3, 127.0),
        ]
    )
    both = [case.ankle, case.phone]
    assert store.fix_at_or_before(both, 120.0, 30.0).lat == 37.1  # type: ignore[union-attr]
    assert store.fix_at_or_before(both, 130.0, 0.0).lat == 37.3  # type: ignore[union-attr]
    assert store.fix_at_or_before([case.phone], 120.0, 30.0).lat == 37.0  # type: ignore[union-attr]
    assert store.fix_at_or_before(both, 120.0, 9.0) is None  # only the invalid one is that recent
    assert store.fix_at_or_before(both, 99.0, 100.0) is None
    assert store.fix_at_or_before([], 120.0, 30.0) is None


def test_purge_deletes_old_fixes_except_those_under_legal_hold(store: Store, case: Case) -> None:
    store.append_fixes([Fix(case.ankle, float(t), 37.5, 127.0) for t in range(100, 110)])
    store.append_fixes([Fix(case.phone, float(t), 37.5, 127.0) for t in range(100, 110)])
    assert store.hold_fixes([case.ankle], 100.0, 102.0) == 3
    assert store.hold_fixes([], 0.0, 1e12) == 0
    assert store.purge_fixes(105.0) == 2 + 5  # the ankle's 103-104 and the phone's 100-104
    assert store.count_fixes() == 13
    kept = sorted(x.fix.fix_time for x in store.fixes_for_device(case.ankle))
    assert kept == [100.0, 101.0, 102.0, *[float(t) for t in range(105, 110)]]


# -- events and incidents ---------------------------------------------------------------------


def _breach(case: Case, at: float) -> Event:
    return make_event(
        EventKind.TIER_CHANGED,
        at,
        case.order,
        case.ankle,
        order_id=case.order,
        device_id=case.ankle,
        tier_from=Tier.REVEAL,
        tier_to=Tier.BREACH,
        distance_m=42.5,
        data={"poor_accuracy": False, "fix_ids": [1, 2]},
    )


def test_events_are_stored_once_whatever_the_replays(store: Store, case: Case) -> None:
    e1, e2, e3 = (_breach(case, t) for t in (10.0, 20.0, 30.0))
    assert store.add_events([e1, e1, e2]) == [e1, e2]
    assert store.add_events([e2, e3, e1]) == [e3]
    assert store.add_events([]) == []
    with store.engine.connect() as c:
        rows = c.execute(select(tables.events).order_by(tables.events.c.at)).all()
    assert [r.id for r in rows] == [e1.id, e2.id, e3.id]
    assert rows[0].data == {"poor_accuracy": False, "fix_ids": [1, 2]}
    assert (rows[0].tier_from, rows[0].tier_to, rows[0].distance_m) == (2, 3, 42.5)
    assert store.latest_tiers() == {case.order: (Tier.BREACH, Tier.BREACH, 30.0)}


def test_one_open_incident_per_order_and_kind_collects_its_events(store: Store, case: Case) -> None:
    other = make_case(store, "2")
    e1, e2 = _breach(case, 10.0), _breach(case, 20.0)
    first, created = store.record_incident("breach", "critical", e1)
    assert created
    assert store.record_incident("breach", "critical", e2) == (first, False)
    assert store.record_incident("breach", "critical", e2) == (first, False)  # once per event
    tamper = make_event(EventKind.TAMPER, 15.0, case.ankle, order_id=case.order)
    assert store.record_incident("tamper", "critical", tamper)[1] is True
    assert store.record_incident("breach", "critical", _breach(other, 12.0))[1] is True
    incident = store.get_incident(first)
    assert incident is not None and incident.status == "open"
    assert (incident.opened_at, incident.updated_at) == (10.0, 20.0)
    assert [x["event_id"] for x in incident.timeline] == [e1.id, e2.id]
    assert incident.timeline[0]["data"]["distance_m"] == 42.5
    assert len(store.incidents("open")) == 3


def test_events_without_an_order_group_by_person(store: Store, case: Case) -> None:
    def sos(person: int, at: float) -> Event:
        return make_event(EventKind.SOS, at, person, person_id=person)

    a, created_a = store.record_incident("sos", "critical", sos(case.victim, 1.0))
    b, created_b = store.record_incident("sos", "critical", sos(case.offender, 2.0))
    assert created_a and created_b and a != b
    assert store.record_incident("sos", "critical", sos(case.victim, 3.0)) == (a, False)
    # an order-scoped incident of the same kind is a different incident
    scoped = make_event(EventKind.SOS, 4.0, "x", order_id=case.order, person_id=case.victim)
    assert store.record_incident("sos", "critical", scoped)[1] is True


def test_a_replayed_event_never_reopens_a_closed_incident(store: Store, case: Case) -> None:
    e1 = _breach(case, 10.0)
    iid, _ = store.record_incident("breach", "critical", e1)
    store.incident_action(iid, "resolve", "user:1:op", 11.0)
    assert store.record_incident("breach", "critical", e1) == (iid, False)
    assert store.incidents("open") == []
    assert store.record_incident("breach", "critical", _breach(case, 50.0))[1] is True


def test_concurrent_events_for_one_order_open_exactly_one_incident(
    store: Store, case: Case
) -> None:
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for j in range(5):
                store.record_incident("breach", "critical", _breach(case, 100.0 * k + j))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    (only,) = store.incidents()
    assert len(store.get_incident(only.id).timeline) == 40  # type: ignore[union-attr]


def test_an_unknown_priority_is_invalid(store: Store, case: Case) -> None:
    with pytest.raises(Invalid):
        store.record_incident("breach", "urgent", _breach(case, 1.0))


def test_incidents_move_through_their_lifecycle_and_refuse_impossible_steps(
    store: Store, case: Case
) -> None:
    e = make_event(EventKind.TAMPER, 5.0, case.ankle, order_id=case.order, device_id=case.ankle)
    iid, _ = store.record_incident("tamper", "critical", e)
    with pytest.raises(Invalid):
        store.incident_action(iid, "on_scene", "user:1:op", 6.0)
    with pytest.raises(Invalid):
        store.incident_action(iid, "escalate", "user:1:op", 6.0)
    with pytest.raises(NotFound):
        store.incident_action(iid + 1000, "acknowledge", "user:1:op", 6.0)
    steps = [
        ("acknowledge", "acknowledged", "seen", None),
        ("dispatch", "dispatched", "officer 3", {"officer_id": 3}),
        ("on_scene", "on_scene", "", None),
        ("resolve", "resolved", "strap replaced", None),
    ]
    for n, (action, status, note, data) in enumerate(steps):
        got = store.incident_action(iid, action, "user:1:op", 6.0 + n, note, data)
        assert got.status == status and got.updated_at == 6.0 + n
    for action in ("acknowledge", "dispatch", "resolve", "false_alarm"):
        with pytest.raises(Invalid):
            store.incident_action(iid, action, "user:1:op", 20.0)
    done = store.get_incident(iid)
    assert done is not None
    assert [(x["action"], x["actor"], x["note"]) for x in done.timeline] == [
        ("event", "system", "tamper"),
        ("acknowledge", "user:1:op", "seen"),
        ("dispatch", "user:1:op", "officer 3"),
        ("on_scene", "user:1:op", ""),
        ("resolve", "user:1:op", "strap replaced"),
    ]
    assert done.timeline[2]["data"] == {"officer_id": 3}


def test_an_open_incident_may_be_dispatched_at_once_or_closed_as_a_false_alarm(
    store: Store, case: Case
) -> None:
    a, _ = store.record_incident("tamper", "critical", make_event(EventKind.TAMPER, 1.0, "a"))
    b, _ = store.record_incident("sos", "critical", make_event(EventKind.SOS, 1.0, "b"))
    assert store.incident_action(a, "dispatch", "op", 2.0).status == "dispatched"
    assert store.incident_action(b, "false_alarm", "op", 2.0).status == "false_alarm"
    with pytest.raises(Invalid):
        store.incident_action(b, "acknowledge", "op", 3.0)


def test_incident_lists_filter_by_status_newest_first_with_a_limit(
    store: Store, case: Case
) -> None:
    ids = [
        store.record_incident(kind, "high", make_event(EventKind.ZONE_ENTER, 1.0, kind))[0]
        for kind in ("a", "b", "c", "d")
    ]
    store.incident_action(ids[0], "resolve", "op", 2.0)
    store.incident_action(ids[1], "acknowledge", "op", 2.0)
    assert [i.id for i in store.incidents()] == ids[::-1]
    assert [i.id for i in store.incidents("open")] == ids[:0:-1]
    assert [i.id for i in store.incidents("acknowledged")] == [ids[1]]
    assert [i.id for i in store.incidents("resolved")] == [ids[0]]
    assert [i.id for i in store.incidents(limit=2)] == ids[:1:-1]
    assert all(i.timeline == () for i in store.incidents())
    assert store.get_incident(ids[-1] + 1000) is None


def test_a_batch_stores_fixes_events_and_incidents_together_or_not_at_all(
    store: Store, case: Case
) -> None:
    e1, e2 = _breach(case, 10.0), _breach(case, 20.0)
    bad = [Fix(case.ankle, 10.0, 37.5, 127.0), Fix(case.ankle + 1000, 10.0, 37.5, 127.0)]
    with pytest.raises(NotFound):
        store.record_batch(bad, [False, False], [(e1, "breach", "critical")])
    assert (store.count_fixes(), store.add_events([]), store.incidents()) == (0, [], [])
    ids, new = store.record_batch(
        [Fix(case.ankle, 10.0, 37.5, 127.0)], [False], [(e1, "breach", "critical")]
    )
    assert len(ids) == 1 and new == [e1]
    ids, new = store.record_batch([], [], [(e1, "breach", "critical"), (e2, None, None)])
    assert (ids, new) == ([], [e2])
    (incident,) = store.incidents()
    assert len(store.get_incident(incident.id).timeline) == 1  # type: ignore[union-attr]


def test_a_batch_groups_its_events_in_order_as_if_recorded_one_by_one(
    store: Store, case: Case
) -> None:
    other = make_case(store, "2")
    # Recorded before without being stored as an event, then closed: stored now, it
    # still never opens a second incident.
    replayed = _breach(case, 5.0)
    closed, _ = store.record_incident("breach", "critical", replayed)
    store.incident_action(closed, "resolve", "op", 6.0)
    back = make_event(
        EventKind.TIER_CHANGED, 35.0, other.order, tier_from=Tier.BREACH, tier_to=Tier.REVEAL
    )
    back = dataclasses.replace(back, order_id=other.order)
    b1, b2, b3 = _breach(case, 30.0), _breach(case, 20.0), _breach(case, 40.0)
    # Device events of no order and no person group together (order and person both NULL).
    n1, n2 = (make_event(EventKind.NO_FIX, at, "unbound") for at in (7.0, 8.0))
    sos1, sos2 = (make_event(EventKind.SOS, at, "sos", person_id=case.victim) for at in (9.0, 3.0))
    plans: list[tuple[Event, str | None, str | None]] = [
        (replayed, "breach", "critical"),
        (b1, "breach", "critical"),
        (b2, "breach", "critical"),  # older than the incident's last event: updated_at stays
        (b3, "breach", "critical"),
        (b3, "breach", "critical"),  # the same event twice in a batch counts once
        (back, "breach", None),  # no open breach for that order: joins nothing
        (n1, "no_fix", "normal"),
        (n2, "no_fix", "normal"),
        (sos1, "sos", "critical"),
        (sos2, "sos", None),
    ]
    ids, new = store.record_batch([Fix(case.ankle, 30.0, 37.5, 127.0)], [False], plans)
    assert len(ids) == 1 and new == [replayed, b1, b2, b3, back, n1, n2, sos1, sos2]
    shown = [
        (
            i.kind,
            i.status,
            i.order_id,
            i.person_id,
            i.opened_at,
            i.updated_at,
            [x["event_id"] for x in store.get_incident(i.id).timeline],  # type: ignore[union-attr]
        )
        for i in store.incidents()[::-1]
    ]
    assert shown == [
        ("breach", "resolved", case.order, None, 5.0, 6.0, [replayed.id, None]),
        ("breach", "open", case.order, None, 30.0, 40.0, [b1.id, b2.id, b3.id]),
        ("no_fix", "open", None, None, 7.0, 8.0, [n1.id, n2.id]),
        ("sos", "open", None, case.victim, 9.0, 9.0, [sos1.id, sos2.id]),
    ]
    # A later batch: the step out of breach joins the open one and moves its time on.
    out = make_event(
        EventKind.TIER_CHANGED, 50.0, case.order, tier_from=Tier.BREACH, tier_to=Tier.REVEAL
    )
    out = dataclasses.replace(out, order_id=case.order)
    assert store.record_batch([], [], [(out, "breach", None), (b1, "breach", "critical")]) == (
        [],
        [out],
    )
    (current,) = [i for i in store.incidents("open") if i.kind == "breach"]
    got = store.get_incident(current.id)
    assert got is not None and got.updated_at == 50.0
    assert [x["event_id"] for x in got.timeline] == [b1.id, b2.id, b3.id, out.id]
    assert got.timeline[-1]["data"]["tier_to"] == int(Tier.REVEAL)


# -- users ------------------------------------------------------------------------------------


def test_users_are_unique_and_found_by_name_or_id(store: Store, case: Case) -> None:
    uid = store.add_user("victim1", "argon2$v", "victim", case.victim, at=5.0)
    op = store.add_user("op", "argon2$o", "operator")
    got = store.get_user_by_name("victim1")
    assert got is not None and (got.id, got.role, got.person_id) == (uid, "victim", case.victim)
    assert got.password_hash == "argon2$v" and got.disabled is False
    assert store.get_user(op) == store.get_user_by_name("op")
    assert store.get_user(op + 1000) is None and store.get_user_by_name("nobody") is None
    with pytest.raises(Conflict):
        store.add_user("op", "argon2$x", "supervisor")
    with pytest.raises(NotFound):
        store.add_user("ghost", "argon2$g", "victim", case.victim + 1000)
