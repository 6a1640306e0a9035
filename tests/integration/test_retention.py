"""Retention on a real store: data kept until due, then purged; holds kept; audit still verifies."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from bangpae.adapters.anchors import (
    AnchorError,
    anchor_head,
    anchor_tag,
    latest_anchor,
    read_anchors,
)
from bangpae.adapters.clock import ManualClock
from bangpae.adapters.housekeeping import Housekeeping, run_housekeeping, run_purge
from bangpae.adapters.store import Store
from bangpae.adapters.store import schema as tables
from bangpae.cli import main
from bangpae.config import Settings
from bangpae.domain.audit import AuditEntry
from bangpae.domain.errors import Invalid, NotFound
from bangpae.domain.model import EventKind, Fix, Order, Tier, make_event
from bangpae.domain.retention import DAY_S, Policy

T0 = 1_700_000_000.0
ENDS = T0 + 30 * DAY_S
POLICY = Policy()


def _order(store: Store, ends: float | None = ENDS) -> tuple[int, int, int, int]:
    """An ended order: (order, offender's ankle monitor, victim's phone, offender)."""
    off = store.add_person("offender", "Offender")
    vic = store.add_person("victim", "Victim")
    ankle = store.add_device("ANKLE", "ankle_monitor", "osmand", off)
    phone = store.add_device("PHONE", "phone", "osmand", vic)
    order = store.add_order(Order(0, off, vic, valid_from=T0, valid_until=ends))
    return order, ankle, phone, off


def _daily_fixes(store: Store, devices: list[int], days: int = 10) -> None:
    store.append_fixes(
        [
            Fix(d, T0 + k * DAY_S, 37.5 + k / 1000, 127.0, accuracy_m=5.0)
            for k in range(days)
            for d in devices
        ]
    )


def _fix_days(store: Store, device: int) -> list[int]:
    return sorted(
        round((f.fix.fix_time - T0) / DAY_S) for f in store.fixes_for_device(device, 1000)
    )


def _count(store: Store, table: str) -> int:
    with store.engine.connect() as c:
        t = tables.metadata.tables[table]
        return int(c.execute(select(func.count()).select_from(t)).scalar_one())


def _breach(store: Store, order: int, at: float) -> tuple[int, str]:
    e = make_event(
        EventKind.TIER_CHANGED,
        at,
        order,
        order_id=order,
        tier_from=Tier.REVEAL,
        tier_to=Tier.BREACH,
        distance_m=42.5,
    )
    store.add_events([e])
    iid, _ = store.record_incident("breach", "critical", e)
    return iid, e.id


def test_fixes_are_kept_until_due_and_then_purged(store: Store) -> None:
    _, ankle, phone, _ = _order(store)
    _daily_fixes(store, [ankle, phone])
    due_at = T0 + 90 * DAY_S  # the first fix is due just after this
    report = run_purge(store, POLICY, due_at)
    assert report.counts["fixes"] == 0 and _fix_days(store, ankle) == list(range(10))
    report = run_purge(store, POLICY, due_at + 1)
    assert report.counts["fixes"] == 2 and _fix_days(store, ankle) == list(range(1, 10))
    run_purge(store, POLICY, due_at + 5 * DAY_S + 1)
    assert _fix_days(store, phone) == list(range(6, 10))


def test_a_court_hold_keeps_its_range_until_released(store: Store) -> None:
    order, ankle, phone, _ = _order(store)
    _daily_fixes(store, [ankle, phone])
    hold = store.place_hold(
        "order",
        order,
        T0 + 2 * DAY_S,
        T0 + 4 * DAY_S,
        "court 2024-123",
        actor="t",
        role="admin",
        at=T0,
    )
    assert [h.id for h in store.legal_holds()] == [hold.id]
    later = T0 + 400 * DAY_S
    assert run_purge(store, POLICY, later).counts["fixes"] == 14
    assert _fix_days(store, ankle) == _fix_days(store, phone) == [2, 3, 4]
    store.release_hold(hold.id, "court lifted it", actor="t", role="admin", at=later)
    assert store.legal_holds() == []
    assert run_purge(store, POLICY, later).counts["fixes"] == 6
    assert _count(store, "fixes") == 0


def test_a_fix_level_hold_flag_is_never_purged(store: Store) -> None:
    _, ankle, phone, _ = _order(store)
    _daily_fixes(store, [ankle, phone])
    assert store.hold_fixes([ankle], T0 + 7 * DAY_S, T0 + 7 * DAY_S) == 1
    run_purge(store, POLICY, T0 + 1000 * DAY_S)
    assert _fix_days(store, ankle) == [7] and _fix_days(store, phone) == []


def test_holds_refuse_bad_input(store: Store) -> None:
    order, *_ = _order(store)
    with pytest.raises(NotFound):
        store.place_hold("order", 999, None, None, "x", actor="t", role="admin", at=T0)
    with pytest.raises(Invalid, match="reason"):
        store.place_hold("order", order, None, None, " ", actor="t", role="admin", at=T0)
    with pytest.raises(Invalid, match="ends before"):
        store.place_hold("order", order, T0 + 1, T0, "x", actor="t", role="admin", at=T0)
    with pytest.raises(Invalid, match="not 'device'"):
        store.place_hold("device", 1, None, None, "x", actor="t", role="admin", at=T0)
    with pytest.raises(NotFound):
        store.release_hold(12345, "x", actor="t", role="admin", at=T0)


def test_events_and_incidents_wait_a_year_after_the_order_ends(store: Store) -> None:
    order, ankle, phone, _ = _order(store)
    iid, _ = _breach(store, order, T0 + 5 * DAY_S)
    store.incident_action(iid, "resolve", "user:1:op", T0 + 6 * DAY_S, "resolved")
    just_before = ENDS + 365 * DAY_S
    report = run_purge(store, POLICY, just_before)
    assert (report.counts["events"], report.counts["incidents"]) == (0, 0)
    assert store.get_incident(iid) is not None
    report = run_purge(store, POLICY, just_before + 1)
    assert (report.counts["events"], report.counts["incidents"]) == (1, 1)
    assert report.details["incidents"] == {"entries": 2}
    assert store.get_incident(iid) is None and _count(store, "events") == 0


def test_an_open_incident_keeps_its_events_and_the_fixes_around_it(store: Store) -> None:
    order, ankle, phone, _ = _order(store)
    _daily_fixes(store, [ankle, phone])
    iid, event_id = _breach(store, order, T0 + 5 * DAY_S + 600)
    report = run_purge(store, POLICY, ENDS + 1000 * DAY_S)
    assert store.get_incident(iid) is not None and report.counts["incidents"] == 0
    assert _count(store, "events") == 1
    # its evidence: from an hour before it opened, onwards while it is open
    assert _fix_days(store, ankle) == _fix_days(store, phone) == [5, 6, 7, 8, 9]
    store.incident_action(iid, "resolve", "user:1:op", T0 + 5 * DAY_S + 900)
    report = run_purge(store, POLICY, ENDS + 1000 * DAY_S)
    assert report.counts == {
        "fixes": 10,
        "events": 1,
        "handoffs": 0,
        "incidents": 1,
        "notices": 0,
        "signins": 0,
        "audit": 0,
    }


def test_a_dry_run_counts_what_a_real_run_deletes_and_writes_nothing(store: Store) -> None:
    order, ankle, phone, _ = _order(store)
    _daily_fixes(store, [ankle, phone])
    _breach(store, order, T0 + DAY_S)
    store.audit_append(
        AuditEntry("user:1:op", "operator", "read_position", "device:1", "ops", at=T0)
    )
    now = ENDS + 2000 * DAY_S
    dry = run_purge(store, POLICY, now, dry_run=True)
    assert _count(store, "audit") == 1 and _count(store, "fixes") == 20
    real = run_purge(store, POLICY, now)
    assert dict(dry.counts) == dict(real.counts) != {}
    # the open breach keeps its evidence: the fixes from an hour before it onwards
    assert dry.as_dict()["classes"]["fixes"] == {"due": 2, "before": "2029-03-07T22:13:20Z"}


def test_every_class_purged_leaves_one_audit_record_with_count_and_cut_off(store: Store) -> None:
    _, ankle, phone, _ = _order(store)
    _daily_fixes(store, [ankle, phone])
    run_purge(store, POLICY, T0 + 95 * DAY_S, actor="cli", role="admin")
    records = [r for r in store.audit_records(limit=100) if r["action"] == "purge"]
    assert [r["subject"] for r in records] == [
        "fixes",
        "events",
        "handoffs",
        "incidents",
        "notices",
        "signins",
        "audit",
    ]
    assert records[0]["fields"][:2] == ["before=2023-11-19T22:13:20Z", "deleted=10"]
    assert all(r["actor"] == "cli" and r["purpose"] == "retention" for r in records)
    assert store.last_purge_at() == T0 + 95 * DAY_S


def _old_audit(store: Store, n: int) -> None:
    for k in range(n):
        store.audit_append(
            AuditEntry(
                "user:1:op", "operator", "read_position", f"device:{k}", "ops", at=T0 + k * DAY_S
            )
        )


def test_purging_old_audit_records_keeps_the_chain_verifiable(store: Store) -> None:
    _old_audit(store, 10)
    policy = Policy(audit_days=100)
    report = run_purge(store, policy, T0 + 105 * DAY_S)  # cut-off T0 + 5 days
    assert report.counts["audit"] == 5
    ids = [r["id"] for r in store.audit_records(limit=100)]
    assert ids[0] == 6 and ids == list(range(6, 18))
    assert store.audit_base() is not None and store.audit_base()[0] == 5  # type: ignore[index]
    verdict = store.audit_verify()
    assert (verdict.ok, verdict.records) == (True, 12), verdict
    # a second purge continues from the first checkpoint
    assert run_purge(store, policy, T0 + 108 * DAY_S).counts["audit"] == 3
    assert store.audit_verify().ok and store.audit_base()[0] == 8  # type: ignore[index]


@pytest.mark.parametrize(
    ("tamper", "first_bad"),
    [
        ("UPDATE audit SET purpose = 'curiosity' WHERE id = 7", 7),
        ("DELETE FROM audit WHERE id = 6", 7),  # one more than the checkpoint says
        ("DELETE FROM audit WHERE id = 17", 6),  # the checkpoint itself
        ("UPDATE audit SET fields = '[\"through_id=4\"]' WHERE id = 17", 6),
    ],
    ids=["edited", "deleted-after-the-checkpoint", "checkpoint-deleted", "checkpoint-edited"],
)
def test_tampering_is_still_detected_after_a_purge(
    store: Store, tamper: str, first_bad: int
) -> None:
    _old_audit(store, 10)
    run_purge(store, Policy(audit_days=100), T0 + 105 * DAY_S)
    with store.engine.begin() as c:
        c.execute(text(tamper))
    verdict = store.audit_verify()
    assert not verdict.ok and verdict.first_bad_id == first_bad, verdict


def test_the_audit_purge_never_cuts_past_a_hold_in_force(store: Store) -> None:
    order, *_ = _order(store)
    _old_audit(store, 3)
    hold = store.place_hold("order", order, None, None, "court", actor="t", role="admin", at=T0)
    _old_audit(store, 3)
    run_purge(store, Policy(audit_days=1), T0 + 1000 * DAY_S)
    assert store.audit_records(limit=1)[0]["id"] == hold.id
    assert [h.id for h in store.legal_holds()] == [hold.id] and store.audit_verify().ok


# -- anchors ------------------------------------------------------------------------------


def test_an_anchor_line_names_the_head_and_is_written_once_per_head(
    store: Store, tmp_path: Path
) -> None:
    path = tmp_path / "anchors.log"
    assert anchor_head(store, path, T0) is None and not path.exists()
    _old_audit(store, 3)
    head = anchor_head(store, path, T0)
    assert head == store.audit_head()
    anchor_head(store, path, T0 + 1)
    lines = path.read_text().splitlines()
    body = f"3 {head[1]} 2023-11-14T22:13:20Z k"  # type: ignore[index]
    assert store.audit_key is not None
    assert lines == [f"{body} {anchor_tag(store.audit_key, body)}"]
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_tail_cut_short_after_the_anchor_is_detected(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "anchors.log"
    _old_audit(store, 5)
    anchor_head(store, path, T0)
    with store.engine.begin() as c:
        c.execute(text("DELETE FROM audit WHERE id >= 4"))
    anchor = latest_anchor(path)
    assert anchor is not None
    verdict = store.audit_verify(anchor=(anchor.id, anchor.hash))
    assert not verdict.ok and verdict.first_bad_id == 4, verdict
    with pytest.raises(AnchorError, match="record 5 is missing"):
        anchor_head(store, path, T0 + 1)  # never bless a truncated chain
    assert len(read_anchors(path)) == 1


def test_a_tail_rewritten_with_valid_hashes_is_detected(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "anchors.log"
    _old_audit(store, 5)
    anchor_head(store, path, T0)
    # Someone with the database rewrites records 3.. and recomputes every hash after them.
    with store.engine.begin() as c:
        c.execute(text("DELETE FROM audit WHERE id >= 3"))
    for _ in range(3):
        store.audit_append(
            AuditEntry("user:9:x", "operator", "read_position", "device:1", "ops", at=T0)
        )
    assert store.audit_verify().ok  # a valid chain on its own
    anchor = latest_anchor(path)
    assert anchor is not None
    verdict = store.audit_verify(anchor=(anchor.id, anchor.hash))
    assert not verdict.ok and verdict.first_bad_id == 5
    assert "anchored" in verdict.reason


def test_a_purge_anchors_afterwards_so_the_anchor_survives_it(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "anchors.log"
    _old_audit(store, 5)
    anchor_head(store, path, T0)
    _old_audit(store, 5)
    assert anchor_head(store, path, T0) == store.audit_head()
    run_purge(store, Policy(audit_days=100), T0 + 200 * DAY_S, anchor_path=path)
    anchors = read_anchors(path)
    assert len(anchors) == 3 and (anchors[-1].id, anchors[-1].hash) == store.audit_head()
    assert store.audit_verify(anchor=(anchors[-1].id, anchors[-1].hash)).ok
    # the record the purge stopped at is still checked, through the checkpoint
    assert store.audit_base() == (anchors[1].id, anchors[1].hash)
    assert store.audit_verify(anchor=(anchors[1].id, anchors[1].hash)).ok
    # an older anchor named a record purged since: it can no longer vouch for the chain
    verdict = store.audit_verify(anchor=(anchors[0].id, anchors[0].hash))
    assert not verdict.ok and "purged" in verdict.reason


def test_a_purge_refuses_to_run_over_a_chain_that_lost_its_anchor(
    store: Store, tmp_path: Path
) -> None:
    path = tmp_path / "anchors.log"
    _old_audit(store, 5)
    anchor_head(store, path, T0)
    with store.engine.begin() as c:
        c.execute(text("DELETE FROM audit WHERE id = 5"))
    with pytest.raises(AnchorError, match="anchored record 5 is missing"):
        run_purge(store, Policy(audit_days=1), T0 + 100 * DAY_S, anchor_path=path)
    assert _count(store, "audit") == 4


def test_a_malformed_anchor_file_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "anchors.log"
    path.write_text(f"1 {'a' * 64} 2024-01-01T00:00:00Z\nnot an anchor\n")
    with pytest.raises(AnchorError, match="line 2"):
        read_anchors(path)


# -- the schedule and the commands --------------------------------------------------------


def test_housekeeping_anchors_at_once_and_purges_one_interval_later(
    store: Store, tmp_path: Path
) -> None:
    _, ankle, phone, _ = _order(store)
    _daily_fixes(store, [ankle, phone])
    clock = ManualClock(T0 + 200 * DAY_S)
    path = tmp_path / "anchors.log"
    keeper = Housekeeping(store, POLICY, path, purge_every_s=DAY_S, anchor_every_s=3600)
    store.audit_append(
        AuditEntry("user:1:op", "operator", "read_position", "device:1", "ops", at=T0)
    )
    keeper.step(clock.now())
    assert len(read_anchors(path)) == 1 and _count(store, "fixes") == 20
    clock.advance(DAY_S - 1)
    keeper.step(clock.now())
    assert _count(store, "fixes") == 20
    clock.advance(1)
    keeper.step(clock.now())
    assert _count(store, "fixes") == 0 and store.last_purge_at() == clock.now()
    # a restarted service waits a full interval after the last recorded purge
    again = Housekeeping(store, POLICY, path, purge_every_s=DAY_S, anchor_every_s=3600)
    again.step(clock.now() + 10)
    assert again.next_purge_at == clock.now() + DAY_S
    assert store.audit_verify(anchor=(latest_anchor(path).id, latest_anchor(path).hash)).ok  # type: ignore[union-attr]


def test_housekeeping_ends_the_sign_ins_of_an_order_that_ended(
    store: Store, tmp_path: Path
) -> None:
    off = store.add_person("offender", "O")
    vic = store.add_person("victim", "V")
    store.add_order(Order(0, off, vic, valid_from=T0, valid_until=T0 + DAY_S))
    uids = [
        store.add_user(n, "hash", r, p)
        for n, r, p in (("o", "offender", off), ("v", "victim", vic))
    ]
    sids = [store.open_session(u, "full", f"{u:064x}", T0, T0 + 30 * DAY_S) for u in uids]
    keeper = Housekeeping(store, POLICY, tmp_path / "a.log", purge_every_s=0, anchor_every_s=0)
    keeper.step(T0 + DAY_S - 1)
    assert all(
        store.session_active(sid, u, T0 + DAY_S - 1) for sid, u in zip(sids, uids, strict=True)
    )
    keeper.step(T0 + DAY_S + 1)  # the order is over: so is their access
    assert not any(
        store.session_active(sid, u, T0 + DAY_S + 1) for sid, u in zip(sids, uids, strict=True)
    )
    # a restarted service catches up on orders that ended while it was down
    sid = store.open_session(uids[1], "full", "f" * 64, T0 + DAY_S + 2, T0 + 30 * DAY_S)
    assert (
        Housekeeping(store, POLICY, tmp_path / "a.log", 0, 0).end_sessions_of_ended_orders(
            T0 + DAY_S + 3
        )
        == 1
    )
    assert not store.session_active(sid, uids[1], T0 + DAY_S + 3)


def _cli(tmp_path: Path, *argv: str) -> int:
    return main([*argv, "--data-dir", str(tmp_path / "data")])


def test_the_purge_command_dry_runs_then_deletes_and_audit_verify_checks_the_anchor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data").mkdir()
    store = Store(f"sqlite:///{tmp_path / 'data' / 'bangpae.sqlite'}")
    store.migrate()
    _, ankle, phone, _ = _order(store)
    _daily_fixes(store, [ankle, phone])  # 2023: long past retention
    store.close()
    assert _cli(tmp_path, "purge", "--dry-run") == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["dry_run"] is True and dry["classes"]["fixes"]["due"] == 20
    assert _cli(tmp_path, "purge") == 0
    real = json.loads(capsys.readouterr().out)
    assert real["classes"]["fixes"]["deleted"] == 20
    assert (tmp_path / "data" / "audit-anchors.log").exists()
    assert _cli(tmp_path, "audit", "verify") == 0
    assert "intact: 7 records" in capsys.readouterr().out
    store = Store(f"sqlite:///{tmp_path / 'data' / 'bangpae.sqlite'}")
    with store.engine.begin() as c:
        c.execute(text("DELETE FROM audit WHERE id = 7"))
    store.close()
    assert _cli(tmp_path, "audit", "verify") == 1
    err = capsys.readouterr().err
    assert "BROKEN at record 7" in err and "line 1 of" in err
    assert _cli(tmp_path, "audit", "anchor") == 1
    assert "not anchored" in capsys.readouterr().err


def test_the_hold_commands_place_list_and_release(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data").mkdir()
    store = Store(f"sqlite:///{tmp_path / 'data' / 'bangpae.sqlite'}")
    store.migrate()
    order, *_ = _order(store)
    store.close()
    argv = ["hold", "add", "--order", str(order), "--from", "2023-11-15T00:00:00+09:00"]
    assert _cli(tmp_path, *argv, "--reason", "Seoul court 2024-77") == 0
    placed = json.loads(capsys.readouterr().out)
    assert placed["from"] == "2023-11-14T15:00:00.000Z" and placed["until"] is None
    assert _cli(tmp_path, "hold", "list") == 0
    assert json.loads(capsys.readouterr().out)["id"] == placed["id"]
    assert _cli(tmp_path, *argv[:4], "--from", "2023-11-15", "--reason", "x") == 2
    assert "time zone" in capsys.readouterr().err
    assert _cli(tmp_path, "hold", "release", str(placed["id"]), "--reason", "lifted") == 0
    capsys.readouterr()
    assert _cli(tmp_path, "hold", "list") == 0 and capsys.readouterr().out == ""


async def test_the_service_task_anchors_on_the_app_clock_until_cancelled(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, tick_s=0.01)
    store = Store(settings.resolved_database_url())
    store.migrate()
    store.audit_append(
        AuditEntry("user:1:op", "operator", "read_position", "device:1", "ops", at=T0)
    )
    task = asyncio.create_task(run_housekeeping(store, settings, ManualClock(T0)))
    for _ in range(200):
        await asyncio.sleep(0.01)
        if (tmp_path / "audit-anchors.log").exists():
            break
    task.cancel()
    assert read_anchors(tmp_path / "audit-anchors.log")[0].id == 1
    store.close()
