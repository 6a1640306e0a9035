"""Fix positions encrypted at rest, on SQLite and PostgreSQL (docs/data-at-rest.md).

The attack first: someone who copies the database file (and its write-ahead log) learns
no coordinate of any fix, stored directly or through the engine with its events and
incidents (an alarm's event carries its fix's position, sealed), though the same search
finds every one in a store without keys. Then: a record moved to another row, or a
row's time or device changed, does not open; a rotation re-seals in batches and the
newest key alone reads everything; a store without keys writes plaintext that a store
with keys seals when it migrates; a database from before (schema 0007) is migrated,
sealed, and scrubbed of the old values; a case carries positions opened and an import
seals them again.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text

import bangpae.adapters.store as store_module
from bangpae.adapters.bus import InProcessBus
from bangpae.adapters.casefile import data_checksums, export_case, import_case
from bangpae.adapters.clock import ManualClock
from bangpae.adapters.crypto import DataKeyError, FieldCipher, new_key
from bangpae.adapters.store import Store
from bangpae.adapters.store.positions import SEAL_BATCH
from bangpae.domain.batch import FixBatch
from bangpae.domain.model import Fix, Order
from bangpae.engine.engine import Engine
from bangpae.services.ingest import Ingest

MIGRATIONS = Path(store_module.__file__).parent / "migrations"
T0 = 1_790_000_000.0


def _people(store: Store) -> tuple[int, int, int]:
    """An order's two parties with one device each: (offender's device, hers, order id)."""
    off = store.add_person("offender", "Offender")
    vic = store.add_person("victim", "Victim")
    ankle = store.add_device("ANKLE-1", "ankle_monitor", "gt06", off)
    phone = store.add_device("PHONE-1", "phone", "osmand", vic)
    return ankle, phone, store.add_order(Order(0, off, vic, valid_from=T0 - 10), at=T0 - 10)


def _fixes(ankle: int, phone: int, n: int = 40) -> list[Fix]:
    """Real-looking fixes of both parties in Seoul, at 1e-6 degrees, with speed and heading."""
    rng = np.random.default_rng(7)
    out = []
    for k in range(n):
        lat = round(float(rng.uniform(37.45, 37.65)), 6)
        lon = round(float(rng.uniform(126.85, 127.15)), 6)
        speed = round(float(rng.uniform(0.5, 30.0)), 2) if k % 3 else None
        heading = round(float(rng.uniform(0.0, 360.0)), 1) if k % 3 else None
        out.append(
            Fix(
                ankle if k % 2 == 0 else phone,
                T0 + k,
                lat,
                lon,
                accuracy_m=5.0,
                speed_mps=speed,
                heading_deg=heading,
                battery_pct=80.0,
                received_at=T0 + k + 0.25,
            )
        )
    return out


def _renderings(x: float) -> list[bytes]:
    """How a stored coordinate may look in the file: as a double either way round, or as
    decimal text (Python's shortest repr, or 4 to 6 places)."""
    out = [struct.pack("<d", x), struct.pack(">d", x), repr(x).encode()]
    out += [f"{x:.{k}f}".encode() for k in (4, 5, 6)]
    return out


def _secrets(fixes: list[Fix]) -> dict[bytes, float]:
    values = [v for f in fixes for v in (f.lat, f.lon, f.speed_mps, f.heading_deg) if v]
    return {r: v for v in values for r in _renderings(v) if len(r) >= 6}


def _file_hits(db: Path, fixes: list[Fix]) -> set[float]:
    """The coordinates found anywhere in the database file, its log or its shared memory."""
    found: set[float] = set()
    secrets = _secrets(fixes)
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        if path.exists():
            data = path.read_bytes()
            found |= {v for r, v in secrets.items() if r in data}
    return found


def _column_hits(db: Path, fixes: list[Fix]) -> set[float]:
    """The coordinates found in any column of any table, read with sqlite3 (not the store):
    equal as numbers (within 1e-7), or in any text or bytes."""
    values = {v for f in fixes for v in (f.lat, f.lon, f.speed_mps, f.heading_deg) if v}
    secrets = _secrets(fixes)
    found: set[float] = set()
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in con.execute(f'SELECT * FROM "{table}"'):  # names from the file itself
                for cell in row:
                    if isinstance(cell, float):
                        found |= {v for v in values if math.isclose(cell, v, abs_tol=1e-7)}
                    elif isinstance(cell, str | bytes):
                        raw = cell.encode() if isinstance(cell, str) else cell
                        found |= {v for r, v in secrets.items() if r in raw}
    finally:
        con.close()
    return found


@pytest.fixture
def key() -> str:
    return new_key()


@pytest.fixture
def sealed(database_url: str, key: str) -> Iterator[Store]:
    s = Store(database_url, cipher=FieldCipher([key]))
    s.migrate()
    yield s
    s.close()


# -- the attack: a copy of the file ------------------------------------------------------


def test_a_copy_of_the_database_file_and_its_log_holds_no_coordinate_of_any_fix(
    tmp_path: Path,
) -> None:
    db = tmp_path / "bangpae.sqlite"
    store = Store(f"sqlite:///{db}", cipher=FieldCipher([new_key()]))
    store.migrate()
    ankle, phone, _ = _people(store)
    fixes = _fixes(ankle, phone)
    store.append_fixes(fixes[:20])
    store.append_fixes(FixBatch.of(fixes[20:]), late=[k % 5 == 0 for k in range(20)])
    assert db.with_name(db.name + "-wal").stat().st_size > 0  # the fixes are in the log now
    assert _file_hits(db, fixes) == set() and _column_hits(db, fixes) == set()
    got = store.fixes_for_device(ankle, limit=100) + store.fixes_for_device(phone, limit=100)
    assert sorted((x.fix for x in got), key=lambda f: f.fix_time) == fixes
    store.close()  # the log is checkpointed into the file
    assert _file_hits(db, fixes) == set() and _column_hits(db, fixes) == set()


def test_the_same_search_finds_every_coordinate_in_a_store_without_keys(tmp_path: Path) -> None:
    db = tmp_path / "bangpae.sqlite"
    store = Store(f"sqlite:///{db}")
    store.migrate()
    ankle, phone, _ = _people(store)
    fixes = _fixes(ankle, phone)
    store.append_fixes(fixes)
    store.close()
    every = {v for f in fixes for v in (f.lat, f.lon, f.speed_mps, f.heading_deg) if v}
    assert _file_hits(db, fixes) == every == _column_hits(db, fixes)


async def _ingest(store: Store, fixes: list[Fix]) -> None:
    """Feed fixes through the engine and the store as the service does, events included."""
    clock = ManualClock(T0)
    ingest = Ingest(store, Engine(), clock, InProcessBus())
    await ingest.start(tick_s=3600)
    try:
        for f in fixes:
            clock.set(f.fix_time)
            await ingest.submit([f])
    finally:
        await ingest.stop()


def _approach(ankle: int, phone: int) -> list[Fix]:
    """He walks from 3 km to 50 m of her and back: tier changes, a breach, an incident."""
    her, out = (37.5663, 126.9779), []
    for k in range(60):
        d = 3000.0 - 100.0 * k if k < 30 else 50.0 + 100.0 * (k - 30)
        lat, lon = her[0] + d / 111_000.0, her[1] + 0.000013 * k
        out.append(
            Fix(ankle, T0 + 2 * k, lat, lon, 5.0, speed_mps=1.4 + k / 100, heading_deg=180.5)
        )
        out.append(Fix(phone, T0 + 2 * k + 1, her[0] + k * 1e-6, her[1], 8.0))
    return out


def test_the_service_path_leaves_no_coordinate_in_the_file_events_and_incidents_included(
    tmp_path: Path,
) -> None:
    db = tmp_path / "bangpae.sqlite"
    store = Store(f"sqlite:///{db}", cipher=FieldCipher([new_key()]))
    store.migrate()
    ankle, phone, _ = _people(store)
    fixes = _approach(ankle, phone)
    asyncio.run(_ingest(store, fixes))
    assert store.count_fixes() == len(fixes) and store.incidents(status="open")
    assert _file_hits(db, fixes) == set() and _column_hits(db, fixes) == set()
    store.close()
    assert _file_hits(db, fixes) == set()


def test_an_alarm_event_keeps_its_position_sealed_and_gives_it_back_opened(
    tmp_path: Path,
) -> None:
    db = tmp_path / "bangpae.sqlite"
    key = new_key()
    store = Store(f"sqlite:///{db}", cipher=FieldCipher([key]))
    store.migrate()
    ankle, phone, oid = _people(store)
    sos = Fix(phone, T0, 37.512345, 127.054321, 5.0, alarms=frozenset({"sos"}))
    asyncio.run(_ingest(store, [sos]))
    assert _column_hits(db, [sos]) == set() and _file_hits(db, [sos]) == set()
    (incident,) = [x for x in store.incidents(status="open") if x.kind == "sos"]
    entry = next(e for e in store.get_incident(incident.id).timeline if e["action"] == "event")
    assert (entry["data"]["data"]["lat"], entry["data"]["data"]["lon"]) == (sos.lat, sos.lon)
    out = tmp_path / "case"
    export_case(store, oid, out, now=T0 + 10)
    assert "37.512345" in (out / "events.jsonl").read_text()
    assert "37.512345" in (out / "incident_entries.jsonl").read_text()
    store.cipher = FieldCipher([new_key(), key])
    counts = store.reseal_fields()
    assert counts["events.data"] == {"resealed": 1, "sealed": 0}
    assert counts["incident_entries.data"] == {"resealed": 1, "sealed": 0}
    store.close()
    assert _column_hits(db, [sos]) == set()


# -- a record belongs to its row ---------------------------------------------------------


def _raw_position(store: Store, row_id: int) -> bytes:
    with store.engine.connect() as c:
        value = c.execute(text("SELECT position FROM fixes WHERE id = :id"), {"id": row_id})
        return bytes(value.scalar_one())


def _set(store: Store, row_id: int, **values: object) -> None:
    names = ", ".join(f"{k} = :{k}" for k in values)
    with store.engine.begin() as c:
        c.execute(text(f"UPDATE fixes SET {names} WHERE id = :id"), {"id": row_id, **values})


def test_two_rows_whose_records_are_swapped_are_refused_not_read_as_each_other(
    sealed: Store,
) -> None:
    ankle, phone, _ = _people(sealed)
    ids = sealed.append_fixes(_fixes(ankle, phone, 4))
    # his two fixes swapped (same device), then his and hers (another device's key)
    for a, b, devices in ((ids[0], ids[2], {ankle}), (ids[1], ids[2], {ankle, phone})):
        ra, rb = _raw_position(sealed, a), _raw_position(sealed, b)
        _set(sealed, a, position=rb)
        _set(sealed, b, position=ra)
        for device in devices:
            with pytest.raises(DataKeyError, match="does not authenticate"):
                sealed.fixes_for_device(device, limit=10)
        _set(sealed, a, position=ra)
        _set(sealed, b, position=rb)
    assert len(sealed.fixes_for_device(ankle, limit=10)) == 2


def test_a_row_whose_time_or_device_was_changed_is_refused(sealed: Store) -> None:
    ankle, phone, _ = _people(sealed)
    first = sealed.append_fixes(_fixes(ankle, phone, 2))[0]
    _set(sealed, first, fix_time=T0 - 3600)  # an hour earlier: out of a purge's or hold's way
    with pytest.raises(DataKeyError, match=f"fixes {first} position"):
        sealed.fixes_for_device(ankle)
    _set(sealed, first, fix_time=T0, device_id=phone)  # his fix passed off as hers
    with pytest.raises(DataKeyError, match="does not authenticate"):
        sealed.fixes_for_device(phone)
    _set(sealed, first, device_id=ankle)
    assert sealed.fixes_for_device(ankle)[0].fix.fix_time == T0


def test_a_wrong_key_and_no_key_are_refused_loudly(sealed: Store, database_url: str) -> None:
    ankle, phone, _ = _people(sealed)
    sealed.append_fixes(_fixes(ankle, phone, 2))
    wrong = Store(database_url, cipher=FieldCipher([new_key()]))
    keyless = Store(database_url)
    try:
        with pytest.raises(DataKeyError, match="not among the 1 given"):
            wrong.latest_fixes()
        with pytest.raises(DataKeyError):
            wrong.check_keys()
        with pytest.raises(DataKeyError):
            wrong.migrate()  # nothing sealed under a key that cannot read what is there
        with pytest.raises(DataKeyError, match="no data keys were given"):
            keyless.fixes_for_device(ankle)
        with pytest.raises(DataKeyError):
            keyless.check_keys()
    finally:
        wrong.close()
        keyless.close()


# -- rotation ----------------------------------------------------------------------------


def test_a_rotation_reseals_every_position_in_batches_so_the_newest_key_alone_reads_them(
    sealed: Store, key: str, database_url: str
) -> None:
    ankle, phone, _ = _people(sealed)
    n = SEAL_BATCH + 300
    t = T0 + np.arange(n, dtype=np.float64)
    lat, lon = 37.5 + np.arange(n) * 1e-6, np.full(n, 127.0)
    devices = np.where(np.arange(n) % 2 == 0, ankle, phone).astype(np.int64)
    sealed.append_fixes(FixBatch.positions(devices, t, lat, lon, np.full(n, 5.0)))
    before = sealed.latest_fixes()
    newer = new_key()
    sealed.cipher = FieldCipher([newer, key])
    assert sealed.reseal_fields()["fixes.position"] == {"resealed": n, "sealed": 0, "current": 0}
    again = sealed.reseal_fields()["fixes.position"]  # an interrupted one resumes like this
    assert again == {"resealed": 0, "sealed": 0, "current": n}
    alone = Store(database_url, cipher=FieldCipher([newer]))  # the old key dropped
    old = Store(database_url, cipher=FieldCipher([key]))
    try:
        alone.check_keys()
        assert alone.latest_fixes() == before
        assert len(alone.fixes_for_device(phone, limit=n)) == n // 2
        with pytest.raises(DataKeyError):
            old.latest_fixes()
    finally:
        alone.close()
        old.close()


# -- plaintext left: by a store without keys, by schema 0007 ------------------------------


def test_a_keyless_store_writes_plaintext_that_a_store_with_keys_seals_when_it_migrates(
    database_url: str, key: str
) -> None:
    plain = Store(database_url)
    plain.migrate()
    ankle, phone, _ = _people(plain)
    fixes = _fixes(ankle, phone, 6)
    ids = plain.append_fixes(fixes)
    assert _raw_position(plain, ids[0])[:1] == b"\x00"
    assert [x.fix for x in plain.fixes_for_device(ankle)][::-1] == fixes[0::2]
    s = Store(database_url, cipher=FieldCipher([key]))
    try:
        s.migrate()
        assert all(_raw_position(s, i)[:1] == b"\x01" for i in ids)
        assert [x.fix for x in s.fixes_for_device(phone)][::-1] == fixes[1::2]
        with pytest.raises(DataKeyError, match="no data keys were given"):
            plain.fixes_for_device(ankle)
        assert s.seal_positions() == 0  # nothing left to seal: found by the partial index
    finally:
        s.close()
        plain.close()


def _at_0007(url: str) -> Store:
    s = Store(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with s.engine.begin() as c:
        cfg.attributes["connection"] = c
        command.upgrade(cfg, "0007")
    return s


def test_a_database_from_before_is_migrated_sealed_and_scrubbed_of_the_old_values(
    tmp_path: Path,
) -> None:
    db = tmp_path / "old.sqlite"
    old = _at_0007(f"sqlite:///{db}")
    ankle, phone, _ = _people(old)
    fixes = _fixes(ankle, phone)
    with old.engine.begin() as c:  # as schema 0007 stored them: plain columns
        c.execute(
            text(
                "INSERT INTO fixes (device_id, fix_time, received_at, lat, lon, accuracy_m,"
                " speed_mps, heading_deg, battery_pct, valid, alarms, late, hold) VALUES"
                " (:d, :t, :r, :lat, :lon, :acc, :speed, :heading, :bat, 1, '', 0, 0)"
            ),
            [
                {
                    "d": f.device_id,
                    "t": f.fix_time,
                    "r": f.received_at,
                    "lat": f.lat,
                    "lon": f.lon,
                    "acc": f.accuracy_m,
                    "speed": f.speed_mps,
                    "heading": f.heading_deg,
                    "bat": f.battery_pct,
                }
                for f in fixes
            ],
        )
    old.close()
    assert _file_hits(db, fixes)  # the control: the old values are there to be found
    s = Store(f"sqlite:///{db}", cipher=FieldCipher([new_key()]))
    try:
        s.migrate()
        got = s.fixes_for_device(ankle, limit=100) + s.fixes_for_device(phone, limit=100)
        assert sorted((x.fix for x in got), key=lambda f: f.fix_time) == fixes
        assert _file_hits(db, fixes) == set() and _column_hits(db, fixes) == set()
    finally:
        s.close()
    assert _file_hits(db, fixes) == set()


def test_schema_0008_is_applied_and_rolled_back_with_plaintext_records_only(
    database_url: str,
) -> None:
    s = _at_0007(database_url)
    ankle, phone, _ = _people(s)
    with s.engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO fixes (device_id, fix_time, received_at, lat, lon, valid, alarms,"
                " late, hold) VALUES (:d, :t, :t, 37.5, 127.25, true, '', false, false)"
            ),
            {"d": ankle, "t": T0},
        )
    s.migrate()  # no keys: packed into a plaintext record
    fix = s.fixes_for_device(ankle)[0].fix
    assert (fix.lat, fix.lon, fix.speed_mps) == (37.5, 127.25, None)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with s.engine.begin() as c:
        cfg.attributes["connection"] = c
        command.downgrade(cfg, "0007")
    with s.engine.connect() as c:
        assert c.execute(text("SELECT lat, lon FROM fixes")).one() == (37.5, 127.25)
    s.close()
    keyed = Store(database_url, cipher=FieldCipher([new_key()]))
    try:
        keyed.migrate()  # sealed this time: a downgrade has no key to open it with
        with keyed.engine.begin() as c:
            cfg.attributes["connection"] = c
            with pytest.raises(RuntimeError, match="1 fix positions are sealed"):
                command.downgrade(cfg, "0007")
        assert keyed.fixes_for_device(ankle)[0].fix == fix
    finally:
        keyed.close()


# -- a case carries positions opened -----------------------------------------------------


def test_a_case_carries_positions_opened_and_an_import_seals_them_again(
    tmp_path: Path, database_url: str
) -> None:
    source = Store(f"sqlite:///{tmp_path / 'source.sqlite'}", cipher=FieldCipher([new_key()]))
    source.migrate()
    fresh = Store(database_url, cipher=FieldCipher([new_key()]))  # another instance's keys
    fresh.migrate()
    try:
        ankle, phone, oid = _people(source)
        fixes = _fixes(ankle, phone, 8)
        source.append_fixes(fixes)
        first, second = tmp_path / "first", tmp_path / "second"
        export_case(source, oid, first, now=T0 + 100)
        exported = (first / "fixes.jsonl").read_text()
        assert repr(fixes[3].lat) in exported and "position" not in exported
        assert repr(fixes[3].lon) in (first / "fixes.geojson").read_text()
        import_case(fresh, first, now=T0 + 200)
        with fresh.engine.connect() as c:
            records = [bytes(x) for x in c.execute(text("SELECT position FROM fixes")).scalars()]
        assert len(records) == 8 and all(r[:1] == b"\x01" for r in records)
        assert fresh.latest_fixes() == source.latest_fixes()
        export_case(fresh, oid, second, now=T0 + 300)
        assert data_checksums(first) == data_checksums(second)
    finally:
        source.close()
        fresh.close()
