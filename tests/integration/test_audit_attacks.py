"""Attacks on the audit log by someone who can write the database but not read the audit key.

Each attack is made with raw SQL, as such an attacker would, and is then judged by
``Store.audit_verify`` and by ``bangpae audit verify`` (exit code), on SQLite and
PostgreSQL. What the attacker recomputes is only what needs no key: plain SHA-256 chain
hashes, which anyone can compute (docs/audit-log.md).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, text

from bangpae.adapters.anchors import (
    AnchorError,
    anchor_head,
    anchor_marks,
    append_anchor,
    read_anchors,
)
from bangpae.adapters.auditkey import AuditKeyError, open_audit_key
from bangpae.adapters.housekeeping import Housekeeping, run_purge
from bangpae.adapters.store import AuditKeyMissing, AuditReport, Store
from bangpae.adapters.store.audit import GENESIS, audit_hash
from bangpae.cli import main
from bangpae.domain.audit import AuditEntry
from bangpae.domain.retention import DAY_S, Policy

NOW = time.time()
YEARS_6 = 6 * 365 * DAY_S
COLUMNS = "id, at, actor, role, action, subject, purpose, fields, request_id, prev_hash, hash"


@dataclass
class Instance:
    """A store with its data dir (audit key, anchor file), as ``bangpae serve`` leaves them."""

    store: Store
    url: str
    data_dir: Path

    @property
    def anchors(self) -> Path:
        return self.data_dir / "audit-anchors.log"

    def verify(self, **kw: Any) -> AuditReport:
        """What ``audit verify`` decides: every anchor, the default retention, now."""
        marks = anchor_marks(self.anchors, self.store.audit_key)
        return self.store.audit_verify(anchors=marks, audit_days=Policy().audit_days, now=NOW, **kw)

    def cli(self, *argv: str) -> int:
        return main(["audit", *argv, "--data-dir", str(self.data_dir), "--database-url", self.url])

    def append(self, n: int, start: float, step: float = 1.0, actor: str = "user:1:op") -> None:
        for i in range(n):
            self.store.audit_append(
                AuditEntry(
                    actor,
                    "operator",
                    "read_position",
                    f"device:{i}",
                    "operations",
                    ["lat", "lon"],
                    at=start + i * step,
                )
            )

    def anchor(self, at: float) -> None:
        anchor_head(self.store, self.anchors, at)


@pytest.fixture
def inst(database_url: str, tmp_path: Path) -> Iterator[Instance]:
    data = tmp_path / "data"
    data.mkdir()
    key = open_audit_key(data, None, create=True)
    store = Store(database_url, audit_key=key)
    store.migrate()
    yield Instance(store, database_url, data)
    store.close()


def _rows(c: Connection, since: int = 0) -> list[dict[str, Any]]:
    q = text(f"SELECT {COLUMNS} FROM audit WHERE id >= :k ORDER BY id")
    return [dict(r._mapping) for r in c.execute(q, {"k": since})]


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: row[k] for k in COLUMNS.split(", ") if k not in ("prev_hash", "hash")}
    out["at"], out["fields"] = float(out["at"]), json.loads(out["fields"])
    return out


def _rechain(c: Connection, since: int, *, strip: bool = False, prev: str | None = None) -> None:
    """Recompute every chain hash from ``since`` on with plain SHA-256, as an attacker can,
    from ``prev`` (default: the record before); ``strip``: also set their MACs to NULL
    (the attacker cannot compute new ones)."""
    prev_row = c.execute(
        text("SELECT hash FROM audit WHERE id < :k ORDER BY id DESC LIMIT 1"), {"k": since}
    ).first()
    if prev is None:
        prev = GENESIS if prev_row is None else prev_row.hash
    for row in _rows(c, since):
        digest = audit_hash(prev, _plain(row))
        c.execute(
            text(
                "UPDATE audit SET prev_hash = :p, hash = :h"
                + (", mac = NULL" if strip else "")
                + " WHERE id = :id"
            ),
            {"p": prev, "h": digest, "id": row["id"]},
        )
        prev = digest


def _insert(c: Connection, record: dict[str, Any], prev: str) -> None:
    c.execute(
        text(
            f"INSERT INTO audit ({COLUMNS}) VALUES (:id, :at, :actor, :role, :action, "
            ":subject, :purpose, :fields, :request_id, :prev, :hash)"
        ),
        {
            **record,
            "fields": json.dumps(record["fields"]),
            "prev": prev,
            "hash": audit_hash(prev, record),
        },
    )


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _record(rid: int, at: float, **kw: Any) -> dict[str, Any]:
    base = {
        "id": rid,
        "at": at,
        "actor": "user:1:op",
        "role": "operator",
        "action": "read_position",
        "subject": "device:1",
        "purpose": "operations",
        "fields": [],
        "request_id": None,
    }
    return {**base, **kw}


def _broken(inst: Instance, first_bad: int, capsys: pytest.CaptureFixture[str]) -> str:
    """The function and the command both find the chain broken at ``first_bad``."""
    report = inst.verify()
    assert not report.ok and report.first_bad_id == first_bad, report
    capsys.readouterr()
    assert inst.cli("verify") == 1
    err = capsys.readouterr().err
    assert f"BROKEN at record {first_bad}" in err, err
    return report.reason


def _a_recent_log(inst: Instance) -> None:
    """Twenty reads of positions over the last ten minutes, anchored as serve would."""
    inst.append(10, NOW - 600, step=10)
    inst.anchor(NOW - 500)
    inst.append(10, NOW - 400, step=10)
    inst.anchor(NOW - 300)


# -- the forged purge checkpoint ------------------------------------------------------------


def _forge_purge(c: Connection, through: int, *, mac: str | None = None) -> int:
    """Delete records up to ``through`` and append a purge checkpoint saying retention
    did it, with a correct plain SHA-256 (and ``mac`` if the attacker makes one up)."""
    through_hash = c.execute(text("SELECT hash FROM audit WHERE id = :k"), {"k": through}).scalar()
    head = c.execute(text("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1")).one()
    c.execute(text("DELETE FROM audit WHERE id <= :k"), {"k": through})
    forged = _record(
        head.id + 1,
        NOW - 60,
        actor="system",
        role="system",
        action="purge",
        subject="audit",
        purpose="retention",
        fields=[
            f"before={_iso(NOW - 60 - Policy().audit_days * DAY_S)}",
            f"deleted={through}",
            f"through_id={through}",
            f"through_hash={through_hash}",
        ],
    )
    _insert(c, forged, head.hash)
    if mac is not None:
        c.execute(text("UPDATE audit SET mac = :m WHERE id = :k"), {"m": mac, "k": head.id + 1})
    return int(head.id) + 1


def test_a_forged_purge_checkpoint_with_a_plain_hash_is_caught(
    inst: Instance, capsys: pytest.CaptureFixture[str]
) -> None:
    _a_recent_log(inst)
    with inst.store.engine.begin() as c:
        forged = _forge_purge(c, 15)
    reason = _broken(inst, forged, capsys)
    assert "no MAC" in reason
    # even without the anchor file: the checkpoint is not keyed
    inst.anchors.unlink()
    report = inst.verify()
    assert not report.ok and report.first_bad_id == forged


def test_a_forged_purge_checkpoint_with_a_made_up_mac_is_caught(
    inst: Instance, capsys: pytest.CaptureFixture[str]
) -> None:
    _a_recent_log(inst)
    with inst.store.engine.begin() as c:
        forged = _forge_purge(c, 15, mac=secrets.token_hex(32))
    assert "MAC does not match" in _broken(inst, forged, capsys)


def test_a_forged_purge_over_a_chain_recomputed_without_macs_is_caught_by_the_anchors(
    inst: Instance, capsys: pytest.CaptureFixture[str]
) -> None:
    """The attacker strips every MAC and recomputes the whole chain with plain SHA-256, so
    it looks like a log from before the audit key, with a checkpoint that respects the
    retention on its face. The anchors were keyed, and name records it purged: caught."""
    _a_recent_log(inst)
    with inst.store.engine.begin() as c:
        through_hash = c.execute(text("SELECT hash FROM audit WHERE id = 15")).scalar_one()
        forged = _forge_purge(c, 15)
        _rechain(c, 16, strip=True, prev=through_hash)
    report = inst.verify()
    assert not report.ok, report
    # the newest anchor (record 20) was keyed, and record 20 has lost its MAC
    assert report.first_bad_id == 20 and "had a MAC when anchored" in report.reason
    assert _broken(inst, 20, capsys)
    assert forged == 21


def test_a_forged_purge_of_a_log_from_before_the_key_is_caught_by_the_anchors_it_purged(
    inst: Instance, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log written before the audit key existed (plain records, plain anchor lines):
    the forged checkpoint respects the retention on its face, but an anchor written eight
    minutes ago names a record before the cut, so records it cut were not old enough."""
    plain = Store(inst.url)
    legacy = Instance(plain, inst.url, inst.data_dir)
    _a_recent_log(legacy)
    assert all(a.keyed is None for a in read_anchors(inst.anchors))
    with plain.engine.begin() as c:
        forged = _forge_purge(c, 15)
    plain.close()
    reason = _broken(inst, forged, capsys)
    assert "purged before their time" in reason


def test_a_forged_checkpoint_cutting_younger_records_than_the_retention_is_caught(
    inst: Instance, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log from before the key and no anchor file: the forged checkpoint's own cut-off
    (ten days back) is checked against the retention in force (five years)."""
    plain = Store(inst.url)
    Instance(plain, inst.url, inst.data_dir).append(20, NOW - 30 * DAY_S, step=DAY_S)
    with plain.engine.begin() as c:
        forged = _forge_purge(c, 15)
        fields = json.loads(
            c.execute(text("SELECT fields FROM audit WHERE id = :k"), {"k": forged}).scalar_one()
        )
        fields[0] = f"before={_iso(NOW - 10 * DAY_S)}"
        c.execute(
            text("UPDATE audit SET fields = :f WHERE id = :k"),
            {"f": json.dumps(fields), "k": forged},
        )
        _rechain(c, forged)
    plain.close()
    assert "retention of 1825 days" in _broken(inst, forged, capsys)


def test_a_keyed_purge_after_recent_records_were_backdated_is_refused(inst: Instance) -> None:
    """The attacker cannot forge a checkpoint, so makes the service write one: the times
    of recent records are rewritten six years back before the daily purge runs."""
    _a_recent_log(inst)
    with inst.store.engine.begin() as c:
        c.execute(text("UPDATE audit SET at = at - :d WHERE id <= 15"), {"d": YEARS_6})
    with pytest.raises(AnchorError, match="broken at record 1"):
        run_purge(inst.store, Policy(), NOW, anchor_path=inst.anchors)
    assert len(inst.store.audit_records(limit=100)) == 20  # nothing was deleted
    # and with the hashes recomputed as well, the MACs still give it away
    with inst.store.engine.begin() as c:
        _rechain(c, 1)
    with pytest.raises(AnchorError, match="record 20 differs from the anchor"):
        run_purge(inst.store, Policy(), NOW, anchor_path=inst.anchors)
    assert len(inst.store.audit_records(limit=100)) == 20
    inst.anchors.unlink()  # without any anchor, the MACs alone
    with pytest.raises(AnchorError, match="broken at record 1: MAC does not match"):
        run_purge(inst.store, Policy(), NOW, anchor_path=inst.anchors)
    assert len(inst.store.audit_records(limit=100)) == 20


# -- rewriting, inserting, reordering, deleting ----------------------------------------------


@pytest.mark.parametrize("strip", [False, True], ids=["macs-kept", "macs-stripped"])
def test_a_rewritten_record_with_every_later_hash_recomputed_is_caught(
    inst: Instance, capsys: pytest.CaptureFixture[str], strip: bool
) -> None:
    _a_recent_log(inst)
    inst.append(3, NOW - 2)  # the unanchored tail too
    with inst.store.engine.begin() as c:
        c.execute(text("UPDATE audit SET purpose = 'curiosity' WHERE id = 12"))
        _rechain(c, 12, strip=strip)
    reason = _broken(inst, 12, capsys)
    assert ("no MAC" if strip else "MAC does not match") in reason


def test_a_record_inserted_in_the_middle_is_caught(
    inst: Instance, capsys: pytest.CaptureFixture[str]
) -> None:
    _a_recent_log(inst)
    with inst.store.engine.begin() as c:
        c.execute(text("UPDATE audit SET id = -id WHERE id >= 5"))
        c.execute(text("UPDATE audit SET id = 1 - id WHERE id < 0"))
        prev = c.execute(text("SELECT hash FROM audit WHERE id = 4")).scalar_one()
        _insert(c, _record(5, NOW - 555, subject="device:9"), prev)
        _rechain(c, 6)
    assert "no MAC" in _broken(inst, 5, capsys)


def test_two_records_swapped_are_caught(inst: Instance, capsys: pytest.CaptureFixture[str]) -> None:
    _a_recent_log(inst)
    with inst.store.engine.begin() as c:
        c.execute(text("UPDATE audit SET id = -id WHERE id IN (6, 7)"))
        c.execute(text("UPDATE audit SET id = 7 WHERE id = -6"))
        c.execute(text("UPDATE audit SET id = 6 WHERE id = -7"))
        _rechain(c, 6)
    assert "MAC does not match" in _broken(inst, 6, capsys)


def test_a_record_deleted_in_the_middle_and_the_rest_renumbered_is_caught(
    inst: Instance, capsys: pytest.CaptureFixture[str]
) -> None:
    _a_recent_log(inst)
    with inst.store.engine.begin() as c:
        c.execute(text("DELETE FROM audit WHERE id = 8"))
        c.execute(text("UPDATE audit SET id = -id WHERE id > 8"))
        c.execute(text("UPDATE audit SET id = -id - 1 WHERE id < 0"))
        _rechain(c, 8)
    assert "MAC does not match" in _broken(inst, 8, capsys)


def test_a_record_deleted_in_the_middle_is_caught(
    inst: Instance, capsys: pytest.CaptureFixture[str]
) -> None:
    _a_recent_log(inst)
    with inst.store.engine.begin() as c:
        c.execute(text("DELETE FROM audit WHERE id = 8"))
    assert "record 8 is missing" in _broken(inst, 9, capsys)


def test_a_plain_record_appended_after_the_keyed_ones_is_caught(
    inst: Instance, capsys: pytest.CaptureFixture[str]
) -> None:
    _a_recent_log(inst)
    with inst.store.engine.begin() as c:
        head = c.execute(text("SELECT hash FROM audit WHERE id = 20")).scalar_one()
        _insert(c, _record(21, NOW - 1), head)
    assert "no MAC" in _broken(inst, 21, capsys)


# -- truncation and the unanchored window ------------------------------------------------------


def test_a_tail_older_than_the_anchor_interval_is_caught(
    inst: Instance, capsys: pytest.CaptureFixture[str]
) -> None:
    """Serve's schedule: a tick every second, an anchor every 5 s while records come.
    Records are written every 0.5 s for a minute; deleting any tail that reaches further
    back than one interval and one tick is caught."""
    interval, tick = 5.0, 1.0
    keeper = Housekeeping(
        inst.store, Policy(), inst.anchors, purge_every_s=0, anchor_every_s=interval
    )
    start = NOW - 60
    ats: dict[int, float] = {}
    t = start
    while t < NOW:
        for half in (0.0, 0.5):
            rid = inst.store.audit_append(
                AuditEntry(
                    "user:2:v", "victim", "read_position", "order:1", "victim_safety", at=t + half
                )
            )
            ats[rid] = t + half
        t += tick
        keeper.step(t)
    end = t
    anchored = read_anchors(inst.anchors, inst.store.audit_key)[-1].id
    head = max(ats)
    lost = [rid for rid in ats if rid > anchored]
    # what a deletion right now can still take unseen: the records of the last interval
    window = end - min((ats[r] for r in lost), default=end)
    assert window <= interval + tick, window
    with inst.store.engine.begin() as c:
        c.execute(text("DELETE FROM audit WHERE id > :k"), {"k": anchored})
    assert inst.verify().ok  # the unanchored tail is the bounded loss
    # one record more, written more than an interval and a tick ago: caught
    assert end - ats[anchored] > 0 and anchored < head
    with inst.store.engine.begin() as c:
        c.execute(text("DELETE FROM audit WHERE id = :k"), {"k": anchored})
    assert f"anchored record {anchored}" in _broken(inst, anchored, capsys)


def test_the_writer_logs_at_its_next_append_when_its_unanchored_records_were_cut(
    inst: Instance, caplog: pytest.LogCaptureFixture
) -> None:
    """Within the unanchored window the anchors cannot tell, but the process that wrote
    the records can: its next append finds its newest record gone, and says so in the
    log (kept outside the database)."""
    _a_recent_log(inst)
    other = Store(inst.url, audit_key=inst.store.audit_key)  # another process writing too
    with caplog.at_level(logging.CRITICAL, logger="bangpae.audit"):
        inst.append(2, NOW - 3)
        other.audit_append(
            AuditEntry("cli", "admin", "create_user", "user:2", "administration", at=NOW)
        )
        inst.append(1, NOW - 2)  # 24, after the other process's 23: nothing lost
        assert caplog.text == "" and inst.store.audit_tail_losses == 0
        with inst.store.engine.begin() as c:
            c.execute(text("DELETE FROM audit WHERE id > 20"))
        assert inst.verify().ok  # the anchors cannot tell
        inst.append(1, NOW - 1)  # the next read of a position
    assert "audit record 24" in caplog.text and "gone" in caplog.text
    assert inst.store.audit_tail_losses == 1
    other.close()


def test_the_service_anchors_while_records_are_written_and_the_window_stays_bounded(
    inst: Instance,
) -> None:
    """Real time: records every 20 ms for 3 s; housekeeping ticking every 0.1 s anchors
    every 0.5 s. At every moment the oldest unanchored record is younger than an interval
    and a tick (with scheduling slack)."""
    interval, tick = 0.5, 0.1
    keeper = Housekeeping(
        inst.store, Policy(), inst.anchors, purge_every_s=0, anchor_every_s=interval
    )
    stop = threading.Event()
    written: dict[int, float] = {}

    def writer() -> None:
        while not stop.is_set():
            at = time.time()
            written[
                inst.store.audit_append(
                    AuditEntry("user:2:v", "victim", "read", "order:1", "p", at=at)
                )
            ] = at
            time.sleep(0.02)

    w = threading.Thread(target=writer)
    w.start()
    worst = 0.0
    try:
        t_end = time.time() + 3.0
        while time.time() < t_end:
            keeper.step(time.time())
            time.sleep(tick)
            lines = read_anchors(inst.anchors, inst.store.audit_key)
            last = lines[-1].id if lines else 0
            now = time.time()
            unanchored = [at for rid, at in list(written.items()) if rid > last]
            worst = max(worst, now - min(unanchored, default=now))
    finally:
        stop.set()
        w.join()
    assert len(read_anchors(inst.anchors)) >= 4
    assert worst < interval + tick + 0.5, worst


def test_the_whole_log_rolled_back_to_an_earlier_copy_is_caught(
    inst: Instance, capsys: pytest.CaptureFixture[str]
) -> None:
    _a_recent_log(inst)
    with inst.store.engine.begin() as c:
        c.execute(text("DELETE FROM audit WHERE id > 12"))
    assert "before the anchored record 20" in _broken(inst, 13, capsys)


def test_an_anchor_line_cannot_be_forged_without_the_key(inst: Instance) -> None:
    _a_recent_log(inst)
    append_anchor(inst.anchors, 30, "a" * 64, NOW, key=secrets.token_bytes(32), keyed=True)
    with pytest.raises(AnchorError, match="tag does not match"):
        read_anchors(inst.anchors, inst.store.audit_key)
    assert inst.cli("verify") == 1


def test_an_untagged_line_after_a_keyed_one_is_refused(inst: Instance) -> None:
    _a_recent_log(inst)
    with inst.anchors.open("a") as f:
        f.write(f"30 {'a' * 64} 2026-01-01T00:00:00Z\n")
    with pytest.raises(AnchorError, match="no tag"):
        read_anchors(inst.anchors, inst.store.audit_key)


# -- what must still verify ----------------------------------------------------------------


def test_a_legitimate_purge_by_retention_verifies_intact(
    inst: Instance, capsys: pytest.CaptureFixture[str]
) -> None:
    old = NOW - YEARS_6
    inst.append(10, old, step=60)  # six years old: past the five years' retention
    inst.anchor(old + 600)
    other = Store(inst.url, audit_key=inst.store.audit_key)  # the recent ones: another process
    Instance(other, inst.url, inst.data_dir).append(5, NOW - 600, step=60)
    other.close()
    inst.anchor(NOW - 300)
    report = run_purge(inst.store, Policy(), NOW - 120, anchor_path=inst.anchors)
    assert report.counts["audit"] == 10
    inst.append(1, NOW - 60)  # the newest record this process wrote was purged: no alarm
    assert inst.store.audit_tail_losses == 0
    verdict = inst.verify()
    assert verdict.ok and verdict.base == 10 and verdict.legacy == 0, verdict
    capsys.readouterr()
    inst.anchor(NOW - 50)
    assert inst.cli("verify") == 0
    assert "records up to 10 purged by retention" in capsys.readouterr().out
    assert "days=1825" in inst.store.audit_records(subject="audit", limit=100)[-1]["fields"]
    # a retention lengthened since does not make the past purge look early
    marks = anchor_marks(inst.anchors, inst.store.audit_key)
    assert inst.store.audit_verify(anchors=marks, audit_days=10_000, now=NOW).ok


def test_records_from_before_the_key_verify_as_a_legacy_prefix(
    inst: Instance, capsys: pytest.CaptureFixture[str]
) -> None:
    before = Store(inst.url)  # an instance from before the audit key
    for i in range(4):
        before.audit_append(
            AuditEntry("user:1:op", "operator", "read_position", f"d:{i}", "ops", at=NOW - 900)
        )
    before.close()
    anchor_head(Store(inst.url), inst.anchors, NOW - 890)  # an anchor line of that time
    inst.append(3, NOW - 60)
    inst.anchor(NOW - 50)
    report = inst.verify()
    assert (report.ok, report.legacy, report.records) == (True, 4, 7), report
    assert inst.cli("verify") == 0
    assert "the first 4 written before the audit key" in capsys.readouterr().out
    # a keyless process cannot extend the keyed chain
    keyless = Store(inst.url)
    with pytest.raises(AuditKeyMissing):
        keyless.audit_append(AuditEntry("x", "operator", "read", "s", "p", at=NOW))
    keyless.close()
    # rewriting a legacy record breaks the link the first keyed record's MAC covers
    with inst.store.engine.begin() as c:
        c.execute(text("UPDATE audit SET purpose = 'x' WHERE id = 2"))
        _rechain(c, 2)
    assert "anchored head" in _broken(inst, 4, capsys)  # the anchor of the legacy head
    inst.anchors.unlink()
    assert "MAC does not match" in _broken(inst, 5, capsys)  # the first keyed record


def test_verify_without_the_key_refuses_a_keyed_chain(
    inst: Instance, capsys: pytest.CaptureFixture[str]
) -> None:
    _a_recent_log(inst)
    (inst.data_dir / "audit-key").unlink()
    capsys.readouterr()
    assert inst.cli("verify") == 1
    assert "no audit key" in capsys.readouterr().err


# -- the key -----------------------------------------------------------------------------------


def test_the_audit_key_is_made_once_with_mode_0600_or_taken_from_the_environment(
    tmp_path: Path,
) -> None:
    assert open_audit_key(tmp_path, None, create=False) is None
    key = open_audit_key(tmp_path, None, create=True)
    assert key is not None and len(key) == 32
    assert os.stat(tmp_path / "audit-key").st_mode & 0o777 == 0o600
    assert open_audit_key(tmp_path, None, create=True) == key
    assert open_audit_key(tmp_path, "ab" * 32, create=True) == bytes.fromhex("ab" * 32)
    with pytest.raises(AuditKeyError, match="64 hex digits"):
        open_audit_key(tmp_path, "not a key", create=False)


def test_a_second_host_without_the_key_refuses_to_start_rather_than_make_its_own(
    inst: Instance, tmp_path: Path
) -> None:
    from bangpae.app import open_store
    from bangpae.config import Settings

    _a_recent_log(inst)
    other = tmp_path / "other-host"
    settings = Settings(data_dir=other, database_url=inst.url)
    with pytest.raises(SystemExit, match="no audit key here"):
        open_store(settings, create=True)
    assert not (other / "audit-key").exists()
    wrong = Settings(data_dir=other, database_url=inst.url, audit_key="cd" * 32)
    with pytest.raises(SystemExit, match="does not confirm record 20"):
        open_store(wrong, create=True)
    key = inst.store.audit_key
    assert key is not None
    right = Settings(data_dir=other, database_url=inst.url, audit_key=key.hex())
    open_store(right, create=True).close()


def test_a_command_without_the_key_says_so_and_writes_nothing(
    inst: Instance, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _a_recent_log(inst)
    person = inst.store.add_person("victim", "V")
    other = tmp_path / "other-host"
    other.mkdir()
    argv = [
        "hold",
        "add",
        "--person",
        str(person),
        "--reason",
        "court 2026-1",
        "--data-dir",
        str(other),
    ]
    capsys.readouterr()
    assert main([*argv, "--database-url", inst.url]) == 1
    assert "no audit key" in capsys.readouterr().err
    assert len(inst.store.audit_records(limit=100)) == 20


def test_a_witness_file_gets_every_anchor_line_and_verify_checks_it(
    inst: Instance, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    witness = tmp_path / "elsewhere" / "witness.log"
    keeper = Housekeeping(
        inst.store, Policy(), inst.anchors, purge_every_s=0, anchor_every_s=5, witness=str(witness)
    )
    inst.append(3, NOW - 30)
    keeper.step(NOW - 20)
    inst.append(3, NOW - 10)
    keeper.step(NOW - 5)
    assert witness.read_text() == inst.anchors.read_text()
    assert len(witness.read_text().splitlines()) == 2
    capsys.readouterr()
    assert inst.cli("verify", "--witness", str(witness)) == 0
    assert "checked against 4 anchors" in capsys.readouterr().out
    # the anchor file lost (or cut back) by someone who could reach it: the witness still tells
    inst.anchors.unlink()
    with inst.store.engine.begin() as c:
        c.execute(text("DELETE FROM audit WHERE id > 4"))
    assert inst.cli("verify") == 0  # nothing left to tell by
    assert inst.cli("verify", "--witness", str(witness)) == 1
