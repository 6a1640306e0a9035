"""Recordings kept as evidence of an SOS, through the real app on SQLite (docs/evidence.md).

Each test tries to break one promise: only the victim's own SOS takes a recording; the
bytes decide the type, not the client; uploads and incidents are bounded; the same
bytes are kept once; nothing of the recording is in the database file, and a key
rotation still opens it; a case carries it with its SHA-256 and an import refuses it
changed; every upload and read is in the audit log, without the content.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from bangpae.adapters.casefile import CaseFileError, export_case, import_case, verify_case
from bangpae.adapters.clock import ManualClock
from bangpae.adapters.crypto import DataKeyError, FieldCipher, add_key, new_key, write_key_file
from bangpae.adapters.housekeeping import run_purge
from bangpae.adapters.store import Store
from bangpae.adapters.store.evidence import EvidenceFull
from bangpae.api.factory import create_app
from bangpae.api.routes import evidence as api_evidence
from bangpae.app import AppContext, build
from bangpae.config import Settings
from bangpae.domain.model import Event, EventKind, Order, event_id
from bangpae.domain.retention import Policy as RetentionPolicy
from bangpae.services import sessions
from bangpae.services.auth import hash_password
from tests.scenario import HOME, T0

in_world_loop = pytest.mark.asyncio(loop_scope="module")


def webm(payload: bytes) -> bytes:
    """A WebM file's EBML header (document type webm), then ``payload``."""
    header = (
        b"\x42\x86\x81\x01"  # EBMLVersion 1
        b"\x42\xf7\x81\x01"  # EBMLReadVersion 1
        b"\x42\xf2\x81\x04"  # EBMLMaxIDLength 4
        b"\x42\xf3\x81\x08"  # EBMLMaxSizeLength 8
        b"\x42\x82\x84webm"  # DocType webm
        b"\x42\x87\x81\x04"  # DocTypeVersion 4
        b"\x42\x85\x81\x02"  # DocTypeReadVersion 2
    )
    return b"\x1a\x45\xdf\xa3" + bytes([0x80 | len(header)]) + header + payload


def ogg(payload: bytes) -> bytes:
    """An Ogg page beginning an Opus stream (its OpusHead packet), then ``payload``."""
    head = b"OpusHead" + bytes([1, 1]) + struct.pack("<HIhB", 312, 48000, 0, 0)
    page = b"OggS\x00\x02" + struct.pack("<qIII", 0, 0x1234, 0, 0) + bytes([1, len(head)])
    return page + head + payload


def mp4(payload: bytes) -> bytes:
    """An MP4 file's ftyp box (brand M4A), then ``payload``."""
    ftyp = b"ftypM4A \x00\x00\x00\x00M4A mp42isom"
    return struct.pack(">I", 4 + len(ftyp)) + ftyp + payload


@dataclass
class World:
    ctx: AppContext
    api: httpx.AsyncClient
    clock: ManualClock
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    person: dict[str, int] = field(default_factory=dict)
    orders: dict[str, int] = field(default_factory=dict)

    async def sos(self, who: str = "victim") -> int:
        """She presses SOS a second later: the incident it opens (her open one is closed
        first, else the SOS would join it)."""
        store = self.ctx.store
        for i in store.incidents("open", 1000):
            order = store.get_order(i.order_id) if i.order_id is not None else None
            hers = i.person_id if order is None else order.victim_id
            if i.kind == "sos" and hers == self.person[who]:
                store.incident_action(i.id, "resolve", "user:0:test", self.clock.now())
        # a report without the alarm first: an alarm still raised raises nothing new
        self.clock.advance(1)
        r = await self.api.post(
            "/api/v1/victim/location",
            json={"lat": HOME[0], "lon": HOME[1], "accuracy_m": 10},
            headers=self.headers[who],
        )
        assert r.status_code == 202, r.text
        self.clock.advance(1)
        before = {i.id for i in store.incidents("open", 1000)}
        r = await self.api.post(
            "/api/v1/victim/sos",
            json={"lat": HOME[0], "lon": HOME[1], "accuracy_m": 10},
            headers=self.headers[who],
        )
        assert r.status_code == 201, r.text
        new = [i.id for i in store.incidents("open", 1000) if i.id not in before]
        assert len(new) == 1, new
        return int(new[0])

    def sign_in(self, name: str) -> None:
        """A new session for ``name`` at the clock's time (access tokens run out)."""
        s = self.ctx.store
        user = s.get_user_by_name(name)
        issued = sessions.open_session(
            s, self.ctx.settings, self.ctx.secret, user, "full", self.clock.now()
        )
        self.headers[name] = {"Authorization": f"Bearer {issued.access_token}"}

    async def upload(
        self, incident: int, data: bytes, who: str = "victim", **headers: str
    ) -> httpx.Response:
        return await self.api.post(
            f"/api/v1/victim/sos/{incident}/evidence",
            content=data,
            headers={**self.headers[who], **headers},
        )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    clock = ManualClock(T0)
    settings = Settings(data_dir=tmp_path_factory.mktemp("evidence"), tick_s=60)
    ctx = build(settings, clock=clock)
    s = ctx.store
    w = World(
        ctx,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(ctx)), base_url="http://test"
        ),
        clock,
    )
    for n in ("", "-2"):
        off = s.add_person("offender", f"O{n}")
        vic = s.add_person("victim", f"V{n}")
        s.add_device(f"ANKLE{n}", "ankle_monitor", "osmand", off)
        w.orders[f"victim{n}"] = s.add_order(Order(0, off, vic, valid_from=1.0))
        w.person[f"victim{n}"] = vic
    for name, role in (
        ("victim", "victim"),
        ("victim-2", "victim"),
        ("operator", "operator"),
        ("supervisor", "supervisor"),
        ("auditor", "auditor"),
    ):
        s.add_user(name, hash_password("not-used-here-0"), role, w.person.get(name))
        w.sign_in(name)
    await ctx.start()
    yield w
    await w.api.aclose()
    await ctx.stop()


def _audit(w: World, action: str) -> list[dict[str, Any]]:
    return [r for r in w.ctx.store.audit_records(limit=100_000) if r["action"] == action]


@in_world_loop
async def test_a_text_file_named_webm_is_refused_and_nothing_is_kept(world: World) -> None:
    sos = await world.sos()
    text = b"this is not a recording, whatever its name says\n" * 20
    r = await world.upload(sos, text, **{"Content-Type": "audio/webm"})
    assert r.status_code == 415, r.text
    assert r.headers["content-type"] == "application/problem+json"
    # a Matroska video, an Ogg Vorbis stream and a QuickTime file are not kept either
    for other in (
        webm(b"")[:-0].replace(b"webm", b"mkvx"),
        ogg(b"").replace(b"OpusHead", b"\x01vorbis\x00"),
        mp4(b"").replace(b"M4A ", b"qt  "),
    ):
        assert (await world.upload(sos, other + os.urandom(64))).status_code == 415
    assert world.ctx.store.incident_evidence(sos) == []
    assert not _audit(world, "evidence_upload") or all(
        f"incident:{sos}/" not in r["subject"] for r in _audit(world, "evidence_upload")
    )


@in_world_loop
async def test_webm_ogg_and_mp4_are_kept_with_the_type_of_their_bytes(world: World) -> None:
    sos = await world.sos()
    for make, kind in ((webm, "audio/webm"), (ogg, "audio/ogg"), (mp4, "audio/mp4")):
        data = make(os.urandom(2000))
        r = await world.upload(sos, data, **{"Content-Type": "text/plain"})
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["content_type"] == kind
        assert body["sha256"] == hashlib.sha256(data).hexdigest()
        assert body["size"] == len(data)
    # the control centre sees that recordings arrived, in the incident's timeline
    r = await world.api.get(f"/api/v1/incidents/{sos}", headers=world.headers["operator"])
    entries = [e for e in r.json()["timeline"] if e["action"] == "evidence"]
    assert [e["data"]["content_type"] for e in entries] == ["audio/webm", "audio/ogg", "audio/mp4"]


@in_world_loop
async def test_the_same_bytes_again_give_the_same_recording_with_200(world: World) -> None:
    sos = await world.sos()
    data = webm(os.urandom(3000))
    first = await world.upload(sos, data, **{"X-Recorded-At": "2027-01-15T08:00:00Z"})
    again = await world.upload(sos, data)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json() == again.json()
    assert len(world.ctx.store.incident_evidence(sos)) == 1
    timeline = world.ctx.store.get_incident(sos).timeline
    assert [e["action"] for e in timeline].count("evidence") == 1
    [kept] = world.ctx.store.incident_evidence(sos)
    assert kept.recorded_at == T0


@in_world_loop
async def test_a_recorded_at_that_cannot_be_true_is_refused(world: World) -> None:
    sos = await world.sos()
    for bad in ("yesterday", "2027-01-15T08:00:00", "2027-01-15T09:00:00Z", "2020-01-01T00:00Z"):
        r = await world.upload(sos, webm(os.urandom(100)), **{"X-Recorded-At": bad})
        assert r.status_code == 422, (bad, r.text)


@in_world_loop
async def test_only_her_own_sos_open_or_closed_within_a_day_takes_a_recording(
    world: World,
) -> None:
    hers = await world.sos()
    theirs = await world.sos("victim-2")
    data = webm(os.urandom(500))
    # another victim's SOS, an incident that is no SOS, one that does not exist: all 404
    assert (await world.upload(theirs, data)).status_code == 404
    store = world.ctx.store
    tamper, _ = store.record_incident(
        "tamper",
        "high",
        Event(event_id("evidence-test", 1), EventKind.TAMPER, T0, order_id=world.orders["victim"]),
    )
    assert (await world.upload(int(tamper), data)).status_code == 404
    offender = store.get_order(world.orders["victim"]).offender_id
    his, _ = store.record_incident(
        "sos",
        "critical",
        Event(
            event_id("evidence-test", 2),
            EventKind.SOS,
            T0,
            order_id=world.orders["victim"],
            person_id=offender,
        ),
    )
    assert (await world.upload(int(his), data)).status_code == 404
    assert (await world.upload(999_999, data)).status_code == 404
    # staff cannot upload, victims cannot read
    r = await world.upload(hers, data, who="operator")
    assert r.status_code == 403
    # closed: still takes the day's recordings, then no more
    now = world.clock.now()
    store.incident_action(hers, "resolve", "user:0:test", now)
    try:
        world.clock.set(now + 23 * 3600)
        world.sign_in("victim")
        assert (await world.upload(hers, data)).status_code == 201
        world.clock.set(now + 25 * 3600)
        world.sign_in("victim")
        assert (await world.upload(hers, webm(os.urandom(500)))).status_code == 404
    finally:
        world.clock.set(now)
        world.sign_in("victim")
    assert store.incident_evidence(theirs) == []


@in_world_loop
async def test_an_upload_past_its_limit_and_an_sos_past_its_cap_get_413(world: World) -> None:
    sos = await world.sos()
    too_big = webm(b"\x00" * api_evidence.MAX_UPLOAD)
    r = await world.upload(sos, too_big)
    assert r.status_code == 413, r.text
    # sent in chunks, with no length to check first: stopped as it arrives

    async def chunks() -> AsyncIterator[bytes]:
        for k in range(0, len(too_big), 1 << 20):
            yield too_big[k : k + (1 << 20)]

    r = await world.api.post(
        f"/api/v1/victim/sos/{sos}/evidence", content=chunks(), headers=world.headers["victim"]
    )
    assert r.status_code == 413 and "content-length" not in r.request.headers, r.text
    assert r.headers["content-type"] == "application/problem+json", r.text
    for _ in range(api_evidence.MAX_RECORDINGS):
        assert (await world.upload(sos, ogg(os.urandom(32)))).status_code == 201
    r = await world.upload(sos, ogg(os.urandom(32)))
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
    assert len(world.ctx.store.incident_evidence(sos)) == api_evidence.MAX_RECORDINGS
    # the bytes of an incident's recordings together, in the store itself
    other = await world.sos()
    kw: dict[str, Any] = {"at": T0, "recorded_at": None, "uploaded_by": "user:1:v"}
    store = world.ctx.store
    store.add_evidence(
        other, world.person["victim"], b"a" * 600, "audio/ogg", max_total=1000, max_count=10, **kw
    )
    with pytest.raises(EvidenceFull):
        store.add_evidence(
            other,
            world.person["victim"],
            b"b" * 401,
            "audio/ogg",
            max_total=1000,
            max_count=10,
            **kw,
        )


@in_world_loop
async def test_staff_hear_it_for_a_purpose_the_policy_gives_them_and_every_read_is_audited(
    world: World,
) -> None:
    sos = await world.sos()
    data = mp4(os.urandom(5000))
    eid = (await world.upload(sos, data)).json()["id"]
    upload = [r for r in _audit(world, "evidence_upload") if r["subject"].endswith(f":{eid}")]
    assert len(upload) == 1 and upload[0]["actor"].endswith(":victim")
    assert f"sha256={hashlib.sha256(data).hexdigest()}" in upload[0]["fields"]

    reads = len(_audit(world, "read_evidence"))
    ok = (
        ("operator", "incident_response"),
        ("supervisor", "court_order"),
        ("auditor", "verification_task"),
    )
    for who, purpose in ok:
        r = await world.api.get(
            f"/api/v1/incidents/{sos}/evidence?purpose={purpose}", headers=world.headers[who]
        )
        assert r.status_code == 200, r.text
        assert [e["id"] for e in r.json()["evidence"]] == [eid]
        r = await world.api.get(
            f"/api/v1/evidence/{eid}?purpose={purpose}", headers=world.headers[who]
        )
        assert r.status_code == 200, r.text
        assert r.content == data
        assert r.headers["content-type"] == "audio/mp4"
        assert r.headers["content-disposition"].startswith("attachment;")
        assert r.headers["cache-control"] == "no-store"
    refused = (
        ("operator", "court_order"),
        ("auditor", "incident_response"),
        ("victim", "incident_response"),
    )
    for who, purpose in refused:
        for path in (f"/api/v1/incidents/{sos}/evidence", f"/api/v1/evidence/{eid}"):
            r = await world.api.get(f"{path}?purpose={purpose}", headers=world.headers[who])
            assert r.status_code == 403, (who, purpose, r.text)
    r = await world.api.get(f"/api/v1/evidence/{eid}", headers=world.headers["operator"])
    assert r.status_code == 422  # no purpose, no read
    records = _audit(world, "read_evidence")[reads:]
    assert [(r["role"], r["purpose"]) for r in records] == [
        (who, purpose) for who, purpose in ok for _ in (1, 2)
    ]
    assert {r["subject"] for r in records} == {f"incident:{sos}", f"incident:{sos}/evidence:{eid}"}
    # never the content: no field is longer than a digest's line
    for r in upload + records:
        assert all(len(f) < 80 for f in r["fields"]), r


@in_world_loop
async def test_the_database_file_holds_no_byte_of_a_recording_and_a_rotation_still_opens_it(
    world: World,
) -> None:
    sos = await world.sos()
    data = webm(os.urandom(4096))
    eid = (await world.upload(sos, data)).json()["id"]
    db = Path(world.ctx.settings.data_dir) / "bangpae.sqlite"
    assert db.exists()
    raw = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (blob,) = raw.execute("SELECT blob FROM evidence WHERE id = ?", (eid,)).fetchone()
    finally:
        raw.close()
    probe = data[-64:]  # random bytes: found anywhere only if stored in the clear
    assert probe not in blob
    files = [db, db.with_name(db.name + "-wal")]
    assert all(probe not in f.read_bytes() for f in files if f.exists())

    # a new key first, every recording re-sealed under it, then the old key dropped
    store = world.ctx.store
    cipher = store.cipher
    assert isinstance(cipher, FieldCipher) and cipher.path is not None
    old = cipher.keys
    rotated = add_key(cipher)
    counts = store.reseal_fields()
    assert counts["evidence.blob"]["resealed"] >= 1
    write_key_file(cipher.path, [rotated.keys[0]])
    assert store.cipher.keys != old  # type: ignore[union-attr]
    r = await world.api.get(
        f"/api/v1/evidence/{eid}?purpose=incident_response", headers=world.headers["operator"]
    )
    assert r.status_code == 200 and r.content == data
    # and the old key alone no longer opens it: it was sealed again, not left
    alone = Store(store.url, FieldCipher(old))
    try:
        with pytest.raises(DataKeyError):
            alone.evidence_with_bytes(eid)
    finally:
        alone.close()


@in_world_loop
async def test_a_record_moved_to_another_row_is_refused_not_read(world: World) -> None:
    sos = await world.sos()
    a = (await world.upload(sos, ogg(os.urandom(300)))).json()["id"]
    b = (await world.upload(sos, ogg(os.urandom(300)))).json()["id"]
    db = Path(world.ctx.settings.data_dir) / "bangpae.sqlite"
    raw = sqlite3.connect(db)
    try:
        (blob_a,) = raw.execute("SELECT blob FROM evidence WHERE id = ?", (a,)).fetchone()
        raw.execute("UPDATE evidence SET blob = ? WHERE id = ?", (blob_a, b))
        raw.commit()
    finally:
        raw.close()
    with pytest.raises(DataKeyError):
        world.ctx.store.evidence_with_bytes(b)
    assert world.ctx.store.evidence_with_bytes(a) is not None


@in_world_loop
async def test_a_case_carries_the_recording_with_its_sha256_and_an_import_refuses_it_changed(
    world: World, tmp_path: Path
) -> None:
    sos = await world.sos("victim-2")
    data = ogg(os.urandom(7000))
    digest = hashlib.sha256(data).hexdigest()
    eid = (await world.upload(sos, data, who="victim-2")).json()["id"]
    out = tmp_path / "case"
    manifest = export_case(world.ctx.store, world.orders["victim-2"], out, now=T0)
    assert manifest["counts"]["evidence"] == 1
    [name] = [f for f in manifest["files"] if f.startswith("evidence/")]
    assert (out / name).read_bytes() == data
    assert f"{digest}  {name}" in (out / "MANIFEST.sha256").read_text().splitlines()
    listing = [line for line in (out / "evidence.jsonl").read_text().splitlines()]
    assert len(listing) == 1 and f'"sha256":"{digest}"' in listing[0]
    assert f'"incident_id":{sos}' in listing[0] and '"content_type":"audio/ogg"' in listing[0]
    assert (out / name).stat().st_mode & 0o077 == 0

    def fresh() -> Store:
        n = len(list(tmp_path.glob("import-*")))
        s = Store(f"sqlite:///{tmp_path / f'import-{n}.sqlite'}", FieldCipher([new_key()]))
        s.migrate()
        return s

    # one byte of the recording changed: refused before anything is read
    tampered = tmp_path / "tampered"
    shutil.copytree(out, tampered)
    blob = bytearray((tampered / name).read_bytes())
    blob[len(blob) // 2] ^= 0x01
    (tampered / name).write_bytes(bytes(blob))
    with pytest.raises(CaseFileError, match="checksum mismatch"):
        verify_case(tampered)
    # ... and with MANIFEST.sha256 rewritten to match, evidence.jsonl still names the digest
    # the recording arrived with
    lines = (tampered / "MANIFEST.sha256").read_text().splitlines()
    new = hashlib.sha256(bytes(blob)).hexdigest()
    lines = [f"{new}  {name}" if x.endswith(name) else x for x in lines]
    (tampered / "MANIFEST.sha256").write_text("\n".join(lines) + "\n")
    target = fresh()
    try:
        with pytest.raises(CaseFileError, match="not the recording that arrived"):
            import_case(target, tampered, now=T0)
        assert target.incident_evidence(sos) == []
    finally:
        target.close()
    # a recording file the list does not name is refused too
    extra = tmp_path / "extra"
    shutil.copytree(out, extra)
    (extra / "evidence" / f"{eid + 1000}-{'0' * 16}.ogg").write_bytes(data)
    with pytest.raises(CaseFileError, match="not in MANIFEST"):
        verify_case(extra)

    # the case as exported imports, the recording sealed under the importer's keys
    target = fresh()
    try:
        counts = import_case(target, out, now=T0)
        assert counts["evidence"] == 1
        got = target.evidence_with_bytes(eid)
        assert got is not None and got[1] == data and got[0].sha256 == digest
    finally:
        target.close()


def test_retention_purges_a_recording_with_its_incident_and_a_hold_keeps_both(
    tmp_path: Path,
) -> None:
    day = 86400.0
    store = Store(f"sqlite:///{tmp_path / 'purge.sqlite'}", FieldCipher([new_key()]))
    store.migrate()
    try:
        off, vic = store.add_person("offender", "O"), store.add_person("victim", "V")
        ends = T0 + 30 * day
        order = store.add_order(Order(0, off, vic, valid_from=T0, valid_until=ends))
        ids = []
        for n in (1, 2):
            event = Event(event_id("purge", n), EventKind.SOS, T0 + n, order_id=order)
            iid, _ = store.record_incident("sos", "critical", event)
            store.add_evidence(
                iid,
                vic,
                ogg(os.urandom(100)),
                "audio/ogg",
                at=T0 + n,
                recorded_at=None,
                uploaded_by="user:1:v",
                max_total=10_000,
                max_count=5,
            )
            store.incident_action(iid, "resolve", "user:2:op", T0 + day)
            ids.append(iid)
        store.place_hold(
            "incident",
            ids[1],
            None,
            None,
            "court case 2027-31",
            actor="t",
            role="admin",
            at=T0 + day,
        )
        report = run_purge(store, RetentionPolicy(), ends + 400 * day)
        assert report.counts["incidents"] == 1
        assert store.get_incident(ids[0]) is None and store.incident_evidence(ids[0]) == []
        [kept] = store.incident_evidence(ids[1])
        assert store.evidence_with_bytes(kept.id) is not None
    finally:
        store.close()
