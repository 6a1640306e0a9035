"""The hash-chained audit log: appends stay linear, and any tampering is found."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable

import pytest
from sqlalchemy import Connection, text

from bangpae.adapters.store import Store
from bangpae.adapters.store.audit import GENESIS, audit_hash
from bangpae.domain.audit import AuditEntry


def _append(store: Store, n: int, actor: str = "user:1:op") -> list[int]:
    return [
        store.audit_append(
            AuditEntry(
                actor,
                "operator",
                "read_position",
                f"device:{i}",
                "operations",
                ["lat", "lon"],
                at=100.0 + i,
                request_id=f"req-{i}",
            )
        )
        for i in range(n)
    ]


def test_an_intact_chain_verifies_and_reports_its_head(store: Store) -> None:
    assert store.audit_head() is None
    assert store.audit_verify().ok and store.audit_verify().records == 0
    ids = _append(store, 5)
    assert ids == [1, 2, 3, 4, 5]
    report = store.audit_verify()
    assert (report.ok, report.records, report.first_bad_id) == (True, 5, None)
    head = store.audit_head()
    assert head is not None and head[0] == 5 and len(head[1]) == 64
    assert store.audit_verify(anchor=head).ok


def test_the_first_record_links_to_the_genesis_hash_over_its_canonical_json(store: Store) -> None:
    store.audit_append(
        AuditEntry("user:7:a", "auditor", "read_audit", "audit", "review", (), at=1.5)
    )
    record = {
        "id": 1,
        "at": 1.5,
        "actor": "user:7:a",
        "role": "auditor",
        "action": "read_audit",
        "subject": "audit",
        "purpose": "review",
        "fields": [],
        "request_id": None,
    }
    assert store.audit_head() == (1, audit_hash(GENESIS, record))


def test_a_whole_number_time_verifies_like_any_other(store: Store) -> None:
    store.audit_append(AuditEntry("cli", "admin", "purge", "fixes", "retention", at=1_700_000_000))
    assert store.audit_verify().ok


def test_audit_records_filter_by_actor_subject_and_cursor(store: Store) -> None:
    _append(store, 3, actor="user:1:op")
    _append(store, 3, actor="user:2:sup")
    mine = store.audit_records(actor="user:2:sup")
    assert [r["id"] for r in mine] == [4, 5, 6]
    assert mine[0] == {
        "id": 4,
        "at": 100.0,
        "actor": "user:2:sup",
        "role": "operator",
        "action": "read_position",
        "subject": "device:0",
        "purpose": "operations",
        "fields": ["lat", "lon"],
        "request_id": "req-0",
    }
    assert [r["id"] for r in store.audit_records(subject="device:1")] == [2, 5]
    assert [r["id"] for r in store.audit_records(since_id=2, limit=2)] == [3, 4]


def _edit(c: Connection) -> None:
    c.execute(text("UPDATE audit SET purpose = 'curiosity' WHERE id = 3"))


def _edit_hash(c: Connection) -> None:
    c.execute(text("UPDATE audit SET hash = :h WHERE id = 3"), {"h": "f" * 64})


def _delete_middle(c: Connection) -> None:
    c.execute(text("DELETE FROM audit WHERE id = 3"))


def _delete_first(c: Connection) -> None:
    c.execute(text("DELETE FROM audit WHERE id = 1"))


def _forge_at_end(c: Connection) -> None:
    c.execute(
        text(
            "INSERT INTO audit (id, at, actor, role, action, subject, purpose, fields, "
            "request_id, prev_hash, hash) SELECT 6, 200, 'user:9:x', 'operator', "
            "'read_position', 'device:1', 'ops', '[]', NULL, hash, hash FROM audit WHERE id = 5"
        )
    )


def _forge_in_the_middle(c: Connection) -> None:
    """Make room at id 3 and insert a record whose own hash an attacker computed correctly."""
    c.execute(text("UPDATE audit SET id = -id WHERE id >= 3"))
    c.execute(text("UPDATE audit SET id = 1 - id WHERE id < 0"))
    prev = c.execute(text("SELECT hash FROM audit WHERE id = 2")).scalar_one()
    forged = {
        "id": 3,
        "at": 102.5,
        "actor": "user:1:op",
        "role": "operator",
        "action": "read_position",
        "subject": "device:9",
        "purpose": "operations",
        "fields": [],
        "request_id": None,
    }
    c.execute(
        text(
            "INSERT INTO audit (id, at, actor, role, action, subject, purpose, fields, "
            "request_id, prev_hash, hash) VALUES (:id, :at, :actor, :role, :action, :subject, "
            ":purpose, '[]', NULL, :prev, :hash)"
        ),
        {**forged, "prev": prev, "hash": audit_hash(prev, forged)},
    )


def _swap_contents(c: Connection) -> None:
    """Rows 2 and 4 trade everything but their ids."""
    cols = "at, actor, role, action, subject, purpose, fields, request_id, prev_hash, hash"
    rows = {
        r.id: r._asdict()
        for r in c.execute(text(f"SELECT id, {cols} FROM audit WHERE id IN (2, 4)"))
    }
    sets = ", ".join(f"{k} = :{k}" for k in cols.split(", "))
    for target, source in ((2, 4), (4, 2)):
        c.execute(
            text(f"UPDATE audit SET {sets} WHERE id = :target"), {**rows[source], "target": target}
        )


def _swap_ids(c: Connection) -> None:
    """Rows 2 and 4 trade places in the order."""
    c.execute(text("UPDATE audit SET id = -id WHERE id IN (2, 4)"))
    c.execute(text("UPDATE audit SET id = 4 WHERE id = -2"))
    c.execute(text("UPDATE audit SET id = 2 WHERE id = -4"))


@pytest.mark.parametrize(
    ("tamper", "first_bad", "records"),
    [
        (_edit, 3, 5),
        (_edit_hash, 3, 5),
        (_delete_middle, 4, 4),
        (_delete_first, 2, 4),
        (_forge_at_end, 6, 6),
        (_forge_in_the_middle, 3, 6),  # the forged record has no MAC
        (_swap_contents, 2, 5),
        (_swap_ids, 2, 5),
    ],
    ids=[
        "edited-field",
        "edited-hash",
        "deleted-record",
        "deleted-first-record",
        "forged-record-at-the-end",
        "forged-record-in-the-middle",
        "swapped-contents",
        "swapped-order",
    ],
)
def test_any_tampering_with_the_chain_is_detected_at_the_first_bad_record(
    store: Store, tamper: Callable[[Connection], None], first_bad: int, records: int
) -> None:
    _append(store, 5)
    with store.engine.begin() as c:
        tamper(c)
    report = store.audit_verify()
    assert not report.ok and report.first_bad_id == first_bad, report
    assert report.reason
    assert len(store.audit_records(limit=1000)) == records


def test_a_chain_cut_short_at_its_end_is_caught_against_an_anchored_head(store: Store) -> None:
    _append(store, 5)
    head = store.audit_head()
    with store.engine.begin() as c:
        c.execute(text("DELETE FROM audit WHERE id >= 4"))
    assert store.audit_verify().ok  # what is left is a valid chain on its own
    report = store.audit_verify(anchor=head)
    assert not report.ok and report.first_bad_id == 4, report


def test_a_rewritten_head_is_caught_against_the_anchor(store: Store) -> None:
    _append(store, 3)
    head = store.audit_head()
    assert head is not None
    with store.engine.begin() as c:
        c.execute(text("DELETE FROM audit WHERE id = 3"))
    store.audit_append(
        AuditEntry("user:6:x", "operator", "read_position", "device:1", "ops", at=1.0)
    )
    report = store.audit_verify(anchor=head)
    assert not report.ok and report.first_bad_id == 3


def test_concurrent_appends_from_threads_form_one_linear_chain(store: Store) -> None:
    threads = [threading.Thread(target=_append, args=(store, 25, f"t{k}")) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = store.audit_verify()
    assert (report.ok, report.records) == (True, 200), report


APPENDER = r"""
import sys
from bangpae.adapters.store import Store
from bangpae.domain.audit import AuditEntry
s = Store(sys.argv[1])
for i in range(60):
    s.audit_append(
        AuditEntry(sys.argv[2], "operator", "read_position", f"device:{i}", "ops", at=float(i))
    )
s.close()
"""


def test_concurrent_appends_from_processes_form_one_linear_chain(database_url: str) -> None:
    s = Store(database_url)
    s.migrate()
    procs = [
        subprocess.Popen([sys.executable, "-c", APPENDER, database_url, f"p{k}"]) for k in range(3)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    report = s.audit_verify()
    assert (report.ok, report.records) == (True, 180), report
    s.close()


def test_appends_made_together_share_one_commit_and_each_gets_its_own_record(
    store: Store,
) -> None:
    from sqlalchemy import event

    commits: list[int] = []
    event.listen(store.engine, "commit", lambda _conn: commits.append(1))
    results: dict[int, int] = {}

    def append(i: int) -> None:
        results[i] = store.audit_append(
            AuditEntry(
                f"user:{i}:v", "victim", "read_position", f"order:{i}", "victim_safety", at=50.0 + i
            )
        )

    # Hold the lock a committing append takes, so that twenty queue up behind it.
    with store._audit_lock:
        threads = [threading.Thread(target=append, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        while len(store._audit_pending) < 20:
            threading.Event().wait(0.005)
    for t in threads:
        t.join(10)
    assert sorted(results.values()) == list(range(1, 21))
    assert len(commits) == 1  # one transaction, one fsync, for all twenty
    assert store.audit_verify().ok
    by_id = {r["id"]: r for r in store.audit_records()}
    assert all(by_id[rid]["subject"] == f"order:{i}" for i, rid in results.items())


def test_an_audit_record_a_column_cannot_hold_fails_alone(store: Store) -> None:
    from bangpae.domain.errors import Invalid

    with pytest.raises(Invalid):
        store.audit_append(AuditEntry("x" * 10_000, "victim", "read_position", "s", "p", at=1.0))
    assert _append(store, 2) == [1, 2]
