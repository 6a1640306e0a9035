"""Export and import of a case: checksummed files, an exact round trip, tampering refused."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from geographiclib.geodesic import Geodesic

from bangpae.adapters.bus import InProcessBus
from bangpae.adapters.casefile import (
    CaseFileError,
    data_checksums,
    export_case,
    import_case,
    verify_case,
)
from bangpae.adapters.clock import ManualClock
from bangpae.adapters.store import IncidentRecord, Store
from bangpae.cli import main
from bangpae.domain.audit import AuditEntry
from bangpae.domain.model import Fix, Order
from bangpae.engine.engine import Engine
from bangpae.services.ingest import Ingest
from tests.scenario import HOME, T0

EXPORTED_AT = T0 + 7200


def at(distance_m: float) -> tuple[float, float]:
    g = Geodesic.WGS84.Direct(HOME[0], HOME[1], 90.0, distance_m)
    return g["lat2"], g["lon2"]


@dataclass
class Source:
    store: Store
    order: int
    other_order: int
    ankle: int
    phone: int


def _parties(store: Store, suffix: str) -> tuple[int, int, int, int]:
    off = store.add_person("offender", f"Offender {suffix}", at=T0 - 86400)
    vic = store.add_person("victim", f"Victim {suffix}", at=T0 - 86400)
    ankle = store.add_device(f"ANKLE{suffix}", "ankle_monitor", "gt06", off, "key-hash", T0 - 60)
    phone = store.add_device(f"PHONE{suffix}", "phone", "osmand", vic, at=T0 - 60)
    return off, vic, ankle, phone


@pytest.fixture
async def source(tmp_path: Path) -> AsyncIterator[Source]:
    """A case built the way the service builds one: fixes through the engine, a breach,
    an incident worked by operators and handed to the police, and audited reads."""
    store = Store(f"sqlite:///{tmp_path / 'source.sqlite'}")
    store.migrate()
    o2, v2, ankle2, phone2 = _parties(store, "B")  # another case: never exported with this one
    other = store.add_order(Order(0, o2, v2, valid_from=T0 - 3600), at=T0 - 3600)
    off, vic, ankle, phone = _parties(store, "A")
    order = store.add_order(
        Order(0, off, vic, valid_from=T0 - 3600, notify_radius_m=2000.5), at=T0 - 3600
    )
    clock = ManualClock(T0)
    ingest = Ingest(store, Engine(), clock, InProcessBus())
    await ingest.start(tick_s=3600)
    try:
        lat, lon = HOME
        await ingest.submit([Fix(phone, T0, lat, lon, 7.25, battery_pct=81.0)])
        await ingest.submit([Fix(phone2, T0, lat, lon, 7.25)])
        for i, d in enumerate((3000.0, 1500.0, 550.0, 90.0, 40.0, 35.5)):
            clock.set(T0 + 10 * (i + 1))
            lat, lon = at(d)
            await ingest.submit(
                [
                    Fix(
                        ankle,
                        T0 + 10 * (i + 1),
                        lat,
                        lon,
                        4.0 + i / 3,
                        speed_mps=1.0 / 3,
                        heading_deg=271.123456789,
                        received_at=T0 + 10 * (i + 1) + 0.123,
                    )
                ]
            )
    finally:
        await ingest.stop()
    breach = [x for x in store.incidents() if x.order_id == order]
    assert breach, "the fixes should have opened incidents"
    iid = breach[-1].id
    store.incident_action(iid, "acknowledge", "user:2:operator", T0 + 100, "seen")
    store.incident_action(iid, "dispatch", "user:2:operator", T0 + 130, "unit 3", {"officer": 9})
    hid = store.create_handoff(
        iid, "webhook", "police please", {"lat": 37.1, "n": 1}, "a" * 64, T0 + 140, "user:2:op"
    )
    store.record_handoff_attempt(hid, 1, T0 + 141, "delivered", 200, final_status="delivered")
    store.audit_append(
        AuditEntry(
            "user:2:operator",
            "operator",
            "read_position",
            f"device:{ankle}",
            "operations",
            ["lat"],
            at=T0 + 150,
        )
    )
    store.audit_append(
        AuditEntry(
            "user:3:police",
            "police",
            "read_position",
            f"incident:{iid}/person:{off}",
            "handoff",
            at=T0 + 160,
        )
    )
    store.audit_append(
        AuditEntry(
            "user:2:operator",
            "operator",
            "read_position",
            f"device:{ankle2}",
            "operations",
            at=T0 + 170,
        )
    )
    yield Source(store, order, other, ankle, phone)
    store.close()


def _breaches(store: Store, order: int) -> list[IncidentRecord]:
    return [
        store.get_incident(x.id)  # type: ignore[misc]
        for x in store.incidents(limit=1000)
        if x.order_id == order
    ]


def test_an_export_writes_every_file_listed_in_a_sha256sum_manifest(
    source: Source, tmp_path: Path
) -> None:
    out = tmp_path / "case"
    progress = io.StringIO()
    manifest = export_case(source.store, source.order, out, now=EXPORTED_AT, progress=progress)
    assert manifest["schema_version"] == 1 and manifest["order_id"] == source.order
    assert manifest["exported_at"] == "2027-01-15T10:00:00Z"
    assert manifest["source"]["audit_head"]["id"] == source.store.audit_head()[0] - 1  # type: ignore[index]
    counts = manifest["counts"]
    assert (counts["orders"], counts["people"], counts["devices"]) == (1, 2, 2)
    assert counts["fixes"] == 7 and counts["handoffs"] == counts["handoff_attempts"] == 1
    assert counts["audit"] == 2  # the reads of this case's device and incident only
    names = {p.name for p in out.iterdir()}
    assert {"fixes.geojson", "fixes.csv", "fixes.jsonl", "events.csv", "audit.jsonl"} <= names
    assert {"incident_entries.jsonl", "MANIFEST.sha256", "manifest.json"} <= names
    for line in (out / "MANIFEST.sha256").read_text().splitlines():
        digest, name = line.split("  ")
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    assert "export: fixes: 7 rows" in progress.getvalue().splitlines()
    geo = json.loads((out / "fixes.geojson").read_text())
    assert len(geo["features"]) == 7 and geo["features"][0]["geometry"]["type"] == "Point"
    devices = [json.loads(x) for x in (out / "devices.jsonl").read_text().splitlines()]
    assert all("secret_hash" not in d for d in devices)
    exported = source.store.audit_records(limit=1000)[-1]
    assert (exported["action"], exported["subject"]) == ("export", f"order:{source.order}")


def test_a_case_round_trips_exactly_into_a_fresh_instance(
    source: Source, tmp_path: Path, database_url: str
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    export_case(source.store, source.order, first, now=EXPORTED_AT)
    fresh = Store(database_url)
    fresh.migrate()
    try:
        counts = import_case(fresh, first, now=EXPORTED_AT + 60)
        assert counts["fixes"] == 7 and counts["orders"] == 1
        export_case(fresh, source.order, second, now=EXPORTED_AT + 120)
        assert data_checksums(first) == data_checksums(second)
        assert len(data_checksums(first)) == 22  # evidence.jsonl among them, empty
        # the same breach, incidents, timelines and fixes, to the last bit
        assert _breaches(fresh, source.order) == _breaches(source.store, source.order)
        assert fresh.fixes_for_device(source.ankle, 100) == source.store.fixes_for_device(
            source.ankle, 100
        )
        assert fresh.get_order(source.order) == source.store.get_order(source.order)
        assert fresh.latest_tiers()[source.order] == source.store.latest_tiers()[source.order]
        assert fresh.get_order(source.other_order) is None
        imported = fresh.audit_records(limit=10)[0]
        assert (imported["action"], imported["subject"]) == ("import", f"order:{source.order}")
        assert fresh.audit_verify().ok
        # new records get ids after the imported ones (people 3 and 4), on either backend
        assert fresh.add_person("officer", "New") == 5
        with pytest.raises(CaseFileError, match="already holds"):
            import_case(fresh, first, now=EXPORTED_AT + 180)
    finally:
        fresh.close()


def _fresh(tmp_path: Path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'fresh.sqlite'}")
    store.migrate()
    return store


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("fixes.csv", "checksum mismatch: fixes.csv"),
        ("fixes.jsonl", "checksum mismatch: fixes.jsonl"),
        ("manifest.json", "checksum mismatch: manifest.json"),
    ],
)
def test_an_import_refuses_any_file_that_differs_from_its_checksum(
    source: Source, tmp_path: Path, name: str, message: str
) -> None:
    out = tmp_path / "case"
    export_case(source.store, source.order, out, now=EXPORTED_AT)
    data = bytearray((out / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (out / name).write_bytes(bytes(data))
    fresh = _fresh(tmp_path)
    with pytest.raises(CaseFileError, match=message):
        import_case(fresh, out, now=EXPORTED_AT)
    assert fresh.get_order(source.order) is None and fresh.audit_head() is None
    fresh.close()


def test_an_import_refuses_missing_unlisted_and_escaping_files(
    source: Source, tmp_path: Path
) -> None:
    out = tmp_path / "case"
    export_case(source.store, source.order, out, now=EXPORTED_AT)
    (out / "notes.txt").write_text("hello")
    with pytest.raises(CaseFileError, match="notes.txt is in the case directory but not in"):
        verify_case(out)
    (out / "notes.txt").unlink()
    (out / "events.csv").unlink()
    with pytest.raises(CaseFileError, match="events.csv is listed in MANIFEST.sha256 but missing"):
        verify_case(out)
    listing = out / "MANIFEST.sha256"
    listing.write_text(listing.read_text() + f"{'0' * 64}  ../secret\n")
    with pytest.raises(CaseFileError, match="not a file of the case"):
        verify_case(out)


def test_an_export_refuses_a_directory_that_is_not_empty(source: Source, tmp_path: Path) -> None:
    (tmp_path / "case").mkdir()
    (tmp_path / "case" / "x").write_text("")
    with pytest.raises(CaseFileError, match="not an empty directory"):
        export_case(source.store, source.order, tmp_path / "case", now=EXPORTED_AT)


def test_the_export_and_import_commands(
    source: Source, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = ["--database-url", source.store.url]
    out = tmp_path / "case"
    assert main(["export", "--order", str(source.order), "--out", str(out), *src]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["counts"]["fixes"] == 7
    assert "export: fixes: 7 rows" in captured.err
    assert main(["export", "--order", "999", "--out", str(tmp_path / "x"), *src]) == 1
    assert "order 999 does not exist" in capsys.readouterr().err
    dst = ["--data-dir", str(tmp_path / "instance")]
    assert main(["import", str(out), *dst]) == 0
    assert json.loads(capsys.readouterr().out)["imported"]["fixes"] == 7
    assert main(["import", str(out), *dst]) == 1
    assert "import refused: this database already holds" in capsys.readouterr().err
    (out / "people.csv").write_text("tampered\n")
    assert main(["import", str(out), "--data-dir", str(tmp_path / "other")]) == 1
    assert "checksum mismatch: people.csv" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()  # refused before any database was opened
