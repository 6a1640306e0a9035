"""The ``bangpae`` command: serve, demo, simulate, admin, audit, purge, hold, export, import,
import-refuges, keys, bench."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bangpae.adapters.datadir import make_private_dir, private_umask
from bangpae.adapters.logsafe import install as redact_logs
from bangpae.config import Settings
from bangpae.domain.audit import AuditEntry
from bangpae.services.auth import ROLES


def _settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment, overridden by the flags given."""
    given = {
        key: value
        for key in (
            "data_dir",
            "http",
            "osmand",
            "gt06",
            "h02",
            "tcp_workers",
            "database_url",
            "bus_url",
            "mqtt_url",
            "audit_anchor_path",
        )
        if (value := getattr(args, key, None)) is not None
    }
    return Settings(**given)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, help="data directory (BANGPAE_DATA_DIR)")
    p.add_argument("--database-url", help="SQLAlchemy URL (BANGPAE_DATABASE_URL)")


def _listeners(p: argparse.ArgumentParser) -> None:
    p.add_argument("--http", help="API listener HOST:PORT or off (BANGPAE_HTTP)")
    p.add_argument("--osmand", help="OsmAnd listener HOST:PORT or off (BANGPAE_OSMAND)")
    p.add_argument("--gt06", help="GT06 listener HOST:PORT or off (BANGPAE_GT06)")
    p.add_argument("--h02", help="H02 listener HOST:PORT or off (BANGPAE_H02)")
    p.add_argument(
        "--tcp-workers",
        type=int,
        help="processes serving the GT06 and H02 listeners, 0: in this one (BANGPAE_TCP_WORKERS)",
    )
    p.add_argument("--bus-url", help="event bus URL (BANGPAE_BUS_URL)")
    p.add_argument("--mqtt-url", help="MQTT broker for OwnTracks (BANGPAE_MQTT_URL)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bangpae", description="Real-time protection for protective orders."
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the API and the device listeners")
    _common(s)
    _listeners(s)

    d = sub.add_parser("demo", help="serve a seeded Seoul case with simulated devices")
    _common(d)
    _listeners(d)
    d.add_argument("--duration", type=float, default=None, help="stop after N seconds")

    sim = sub.add_parser("simulate", help="drive simulated devices over OsmAnd HTTP")
    sim.add_argument("--url", default="http://127.0.0.1:5055/", help="OsmAnd listener URL")
    sim.add_argument("--interval", type=float, default=2.0)
    sim.add_argument("--duration", type=float, default=None)

    a = sub.add_parser("admin", help="administration")
    asub = a.add_subparsers(dest="admin_command", required=True)
    cu = asub.add_parser("create-user", help="create a login")
    _common(cu)
    cu.add_argument("--username", required=True)
    cu.add_argument("--password", required=True)
    cu.add_argument("--role", required=True, choices=sorted(ROLES))
    cu.add_argument("--person-id", type=int)
    cu.add_argument(
        "--init",
        action="store_true",
        help="make the data directory and database when there are none (a new installation)",
    )
    cp = asub.add_parser(
        "clear-pins", help="clear a protected person's app and duress PINs (a forgotten PIN)"
    )
    _common(cp)
    cp.add_argument("--username", required=True)
    cp.add_argument("--reason", required=True, help="why, for the audit trail")

    au = sub.add_parser("audit", help="the audit trail")
    ausub = au.add_subparsers(dest="audit_command", required=True)
    av = ausub.add_parser("verify", help="check the hash chain (exit 0 only when intact)")
    _common(av)
    av.add_argument("--anchor-path", type=Path, help="anchor file (BANGPAE_AUDIT_ANCHOR_PATH)")
    av.add_argument(
        "--witness",
        type=Path,
        help="a witness file of anchor lines to check as well (BANGPAE_AUDIT_WITNESS)",
    )
    av.add_argument(
        "--audit-retention-days",
        type=float,
        help="the audit retention purges are checked against (BANGPAE_RETENTION_AUDIT_DAYS)",
    )
    aa = ausub.add_parser("anchor", help="append the chain's head to the anchor file")
    _common(aa)
    aa.add_argument("--anchor-path", type=Path, help="anchor file (BANGPAE_AUDIT_ANCHOR_PATH)")

    ar = ausub.add_parser(
        "review", help="who read whose positions in a time range, for what, on which basis"
    )
    _common(ar)
    ar.add_argument("--since", help="from (ISO 8601 with zone, or POSIX seconds)")
    ar.add_argument("--until", help="until, not included (ISO 8601 with zone, or POSIX seconds)")
    ar.add_argument("--json", action="store_true", help="the whole report as JSON")
    asr = ausub.add_parser(
        "subject-report",
        help="the reads of one person's positions, by role and purpose (for the court and "
        "the person's counsel)",
    )
    _common(asr)
    asr.add_argument("--person", type=int, required=True)
    asr.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    asr.add_argument("--since", help="from (ISO 8601 with zone, or POSIX seconds)")
    asr.add_argument("--until", help="until, not included (ISO 8601 with zone, or POSIX seconds)")

    pu = sub.add_parser("purge", help="delete data past retention (legal holds kept), audited")
    _common(pu)
    pu.add_argument("--retention-days", type=int, help="override BANGPAE_RETENTION_DAYS")
    pu.add_argument("--dry-run", action="store_true", help="only count what is due, per class")
    pu.add_argument("--anchor-path", type=Path, help="anchor file (BANGPAE_AUDIT_ANCHOR_PATH)")

    ho = sub.add_parser("hold", help="legal holds: data kept whatever its retention")
    hosub = ho.add_subparsers(dest="hold_command", required=True)
    ha = hosub.add_parser("add", help="place a hold on an order, a person or an incident")
    _common(ha)
    target = ha.add_mutually_exclusive_group(required=True)
    target.add_argument("--order", type=int)
    target.add_argument("--person", type=int)
    target.add_argument("--incident", type=int)
    ha.add_argument("--from", dest="start", help="held from (ISO 8601 with zone; default: ever)")
    ha.add_argument("--until", help="held until (ISO 8601 with zone; default: ever)")
    ha.add_argument("--reason", required=True, help="the court's request, e.g. its case number")
    hl = hosub.add_parser("list", help="the holds in force, as JSON lines")
    _common(hl)
    hr = hosub.add_parser("release", help="release a hold")
    _common(hr)
    hr.add_argument("hold_id", type=int)
    hr.add_argument("--reason", required=True)

    sc = sub.add_parser(
        "set-contact", help="a protected person's phone number for texts (docs/sms.md), audited"
    )
    _common(sc)
    sc.add_argument("--person", type=int, required=True, help="the protected person's id")
    sc.add_argument(
        "--phone", required=True, help="+821012345678 or 010-1234-5678; 'none' to remove it"
    )
    sc.add_argument("--sms", choices=("on", "off"), help="texts on or off (default: as they are)")
    sc.add_argument("--lang", choices=("ko", "en"), help="the texts' language (default: as it is)")

    ex = sub.add_parser("export", help="write one order's case to a directory, checksummed")
    _common(ex)
    ex.add_argument("--order", type=int, required=True)
    ex.add_argument("--out", type=Path, required=True, help="a new or empty directory")
    ex.add_argument("--purpose", default="case export", help="why (kept in the audit record)")

    im = sub.add_parser("import", help="verify a case directory, then import it")
    _common(im)
    im.add_argument("directory", type=Path)

    ir = sub.add_parser(
        "import-refuges",
        help="import places of refuge from a GeoJSON FeatureCollection, all or none, audited",
    )
    _common(ir)
    ir.add_argument("file", type=Path, help="GeoJSON FeatureCollection of Points")
    ir.add_argument(
        "--mode",
        choices=("merge", "replace"),
        default="merge",
        help="merge: update and add; replace: also remove those not in the file",
    )

    k = sub.add_parser(
        "keys", help="the data keys encrypting phone numbers, zones and positions at rest"
    )
    ksub = k.add_subparsers(dest="keys_command", required=True)
    kr = ksub.add_parser(
        "rotate",
        help="put a new data key first in the key file, then re-encrypt every encrypted "
        "field with it (plaintext left from before encryption too), audited",
    )
    _common(kr)
    kr.add_argument(
        "--no-new-key",
        action="store_true",
        help="only re-encrypt, with the newest key there is (e.g. after putting a new key "
        "first in BANGPAE_DATA_KEYS)",
    )
    ksub.add_parser("generate", help="print a new data key (for BANGPAE_DATA_KEYS)")

    b = sub.add_parser("bench", help="run a standard workload, printing JSON lines")
    b.add_argument("workload", choices=("w1", "w2", "w3", "w4", "flood", "soak"))
    b.add_argument("--pairs", type=int, default=10_000)
    b.add_argument("--store", choices=("memory", "sqlite"), default="memory")
    b.add_argument("--runs", type=int, default=3)
    b.add_argument("--rate", type=float, help="w2: offered fixes per second (default: saturate)")
    b.add_argument(
        "--transport",
        choices=("osmand", "gt06"),
        default="osmand",
        help="w2: OsmAnd over HTTP, or GT06 with one TCP connection per device",
    )
    b.add_argument(
        "--tcp-workers",
        type=int,
        default=0,
        help="w2 over GT06, flood, soak: the server's intake workers",
    )
    b.add_argument("--phase-seconds", type=float, default=60.0, help="flood: length of each phase")
    b.add_argument("--settle-seconds", type=float, default=5.0, help="flood: rest between phases")
    b.add_argument("--clients", type=int, default=32, help="flood: concurrent wrong-key clients")
    b.add_argument(
        "--half-open",
        type=int,
        help="flood, soak: connections held half-open (default 4000; soak 300)",
    )
    b.add_argument(
        "--sources",
        type=int,
        default=1024,
        help="flood, soak: loopback source addresses the attacks come from",
    )
    b.add_argument(
        "--devices", type=int, default=300, help="flood, soak: good devices (OsmAnd, GT06, H02)"
    )
    b.add_argument(
        "--interval", type=float, default=1.0, help="flood, soak: seconds between a device's fixes"
    )
    b.add_argument("--minutes", type=float, default=30.0, help="soak: how long")
    b.add_argument(
        "--bad-key-rate", type=float, default=2.0, help="soak: wrong-key requests per second"
    )
    b.add_argument(
        "--garbage-rate",
        type=float,
        default=2.0,
        help="soak: connections per second sending garbage to the TCP tracker ports",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bangpae`` command."""
    private_umask()  # what any command writes (database, keys, exports) is its user's alone
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("BANGPAE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("alembic", "httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    redact_logs()
    handler = COMMANDS[
        args.command
        if args.command not in ("admin", "audit", "hold", "keys")
        else f"{args.command}.{getattr(args, args.command + '_command')}"
    ]
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from bangpae.adapters.store import AuditKeyMissing

        if not isinstance(exc, AuditKeyMissing):
            raise
        print(f"audit key: {exc}", file=sys.stderr)
        return 1


def _serve(args: argparse.Namespace) -> int:
    from bangpae.adapters.datadir import loose_modes, refusal, sqlite_files
    from bangpae.app import build, run_serve

    settings = _settings(args)
    # Refused, not quietly tightened: the operator learns the data was exposed.
    loose = loose_modes(settings.data_dir, sqlite_files(settings.resolved_database_url()))
    if loose:
        print(f"bangpae serve: {refusal(settings.data_dir, loose)}", file=sys.stderr)
        return 1
    ctx = build(settings)
    run_serve(ctx)
    return 0


def _audit_cli(store: Any, action: str, subject: str, fields: list[str]) -> None:
    """The audit record of an administration step taken from the command line."""
    from bangpae.adapters.clock import SystemClock

    store.audit_append(
        AuditEntry(
            actor="cli",
            role="admin",
            action=action,
            subject=subject,
            purpose="administration",
            fields=fields,
            at=SystemClock().now(),
        )
    )


def add_login(
    store: Any, username: str, password_hash: str, role: str, person_id: int | None
) -> int:
    """Add a login with its audit record, as ``admin create-user`` does; its id."""
    uid = int(store.add_user(username, password_hash, role, person_id))
    _audit_cli(store, "create_user", f"user:{uid}", ["username", "role"])
    return uid


def _create_user(args: argparse.Namespace) -> int:
    from bangpae.domain.errors import Conflict
    from bangpae.services.auth import WeakPassword, new_password_hash

    settings = _settings(args)
    try:
        password_hash = new_password_hash(args.password, args.username)
    except WeakPassword as exc:
        print(f"password: {exc}", file=sys.stderr)
        return 2
    missing = None if args.init else _no_database(settings)
    if missing is not None:  # a mistyped --data-dir must not become an empty installation
        print(f"bangpae admin create-user: {missing}", file=sys.stderr)
        return 2
    store = _open_store(settings, create=True)
    try:
        uid = add_login(store, args.username, password_hash, args.role, args.person_id)
    except Conflict:
        print(f"user {args.username!r} exists already", file=sys.stderr)
        return 1
    print(json.dumps({"id": uid, "username": args.username, "role": args.role}))
    store.close()
    return 0


def _clear_pins(args: argparse.Namespace) -> int:
    """Her PINs cleared by the control centre when she forgot her app PIN (docs/sos.md):
    only from the command line, after the centre has verified it is her."""
    settings = _settings(args)
    missing = _no_database(settings)
    if missing is not None:
        print(f"bangpae admin clear-pins: {missing}", file=sys.stderr)
        return 2
    if not args.reason.strip():
        print("--reason: say why, for the audit trail", file=sys.stderr)
        return 2
    store = _open_store(settings, create=False)
    try:
        user = store.get_user_by_name(args.username)
        if user is None or user.role != "victim":
            print(f"no protected person's login {args.username!r}", file=sys.stderr)
            return 1
        store.set_pins(user.id, None, None)
        fields = ["app_pin=cleared", "duress_pin=cleared", f"reason={args.reason[:200]}"]
        _audit_cli(store, "clear_pins", f"user:{user.id}", fields)
    finally:
        store.close()
    print(json.dumps({"username": args.username, "pins": "cleared"}))
    return 0


def _no_database(settings: Settings) -> str | None:
    """Why there is no database to add a login to (None: there is one, or it lives on a
    server, whose business it is)."""
    from bangpae.adapters.datadir import sqlite_file

    db = sqlite_file(settings.resolved_database_url())
    if db is None or db.exists():
        return None
    demo = settings.data_dir / "demo"
    if (demo / db.name).exists():
        return (
            f"no database at {db}; the demo's is in {demo}: pass --data-dir {demo} "
            "(bangpae demo starts it afresh each time)"
        )
    return (
        f"no database at {db}: check --data-dir / BANGPAE_DATA_DIR, "
        "or pass --init to make a new installation there"
    )


def _open_store(settings: Settings, create: bool = False, check_audit_key: bool = True) -> Any:
    """The migrated store these settings name, with its data keys (``create``: make the
    data dir, and the key file when there are no keys, first)."""
    from bangpae.app import open_store

    if create:
        make_private_dir(settings.data_dir)
    elif settings.database_url is None and not settings.data_dir.is_dir():
        raise SystemExit(f"no data directory at {settings.data_dir}: no database to work on")
    return open_store(settings, create=create, check_audit_key=check_audit_key)


def _audit_verify(args: argparse.Namespace) -> int:
    from bangpae.adapters.anchors import AnchorError, anchor_marks
    from bangpae.adapters.clock import SystemClock

    settings = _settings(args)
    path = settings.resolved_anchor_path()
    witness = args.witness
    if witness is None and settings.audit_witness not in ("", "syslog"):
        witness = Path(settings.audit_witness)
    days = args.audit_retention_days or settings.retention_audit_days
    store = _open_store(settings, check_audit_key=False)
    try:
        marks = anchor_marks(path, store.audit_key)
        if witness is not None:
            marks = sorted([*marks, *anchor_marks(witness, store.audit_key)], key=lambda m: m.id)
    except (AnchorError, OSError) as exc:
        store.close()
        print(f"audit anchors unreadable: {exc}", file=sys.stderr)
        return 1
    report = store.audit_verify(anchors=marks, audit_days=days, now=SystemClock().now())
    store.close()
    where = f" (checked against {report.anchors} anchors in {path}" + (
        f" and {witness})" if witness is not None else ")"
    )
    if report.ok:
        notes = []
        if report.base is not None:
            notes.append(f"records up to {report.base} purged by retention")
        if report.legacy:
            notes.append(f"the first {report.legacy} written before the audit key (unkeyed)")
        since = "".join(f", {x}" for x in notes)
        print(f"audit chain intact: {report.records} records{since}{where}")
        if not marks:
            print(
                f"no anchor in {path}: a chain cut short at its end cannot be told", file=sys.stderr
            )
        return 0
    print(
        f"audit chain BROKEN at record {report.first_bad_id}: {report.reason}{where}",
        file=sys.stderr,
    )
    return 1


def _audit_anchor(args: argparse.Namespace) -> int:
    from bangpae.adapters.anchors import AnchorError, anchor_head
    from bangpae.adapters.clock import SystemClock

    settings = _settings(args)
    path = settings.resolved_anchor_path()
    store = _open_store(settings)
    try:
        head = anchor_head(store, path, SystemClock().now(), witness=settings.audit_witness)
    except AnchorError as exc:
        print(f"not anchored: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if head is None:
        print("audit chain is empty: nothing to anchor", file=sys.stderr)
        return 0
    print(json.dumps({"anchored": {"id": head[0], "hash": head[1]}, "path": str(path)}))
    return 0


def _audit_range(args: argparse.Namespace) -> tuple[float | None, float | None]:
    start, end = _when(args.since), _when(args.until)
    if start is not None and end is not None and end <= start:
        raise ValueError("--until must come after --since")
    return start, end


def _audit_review(args: argparse.Namespace) -> int:
    from bangpae.adapters.clock import SystemClock
    from bangpae.services.access import access_review

    try:
        start, end = _audit_range(args)
    except ValueError as exc:
        print(f"audit review: {exc}", file=sys.stderr)
        return 2
    store = _open_store(_settings(args))
    try:
        report = access_review(store, start, end)
        store.audit_append(
            AuditEntry(
                actor="cli",
                role="auditor",
                action="access_review",
                subject="audit",
                purpose="audit",
                fields=[f"since={report['since'] or ''}", f"until={report['until'] or ''}"],
                at=SystemClock().now(),
            )
        )
    finally:
        store.close()
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0
    t = report["totals"]
    print(
        f"access review {report['since'] or 'start'} .. {report['until'] or 'now'}: "
        f"{t['reads']} reads by {t['readers']} readers, {t['break_glass']} break-glass, "
        f"{t['approvals']} approvals of {t['requests']} requests"
    )
    for g in report["break_glass"]:
        print(
            f"BREAK-GLASS {g['at']} {g['actor']} ({g['role']}) {g['subject']} "
            f"{g['purpose']}: {g['reason']}"
        )
    for a in report["approvals"]:
        print(
            f"APPROVED #{a['request_id']} {a['requested_by']} by {a['approved_by']} "
            f"person:{a['subject'].partition(':')[2]} {a['purpose']} until {a['until']}, "
            f"{a['reads']} reads: {a['reason']}"
        )
    for r in report["readers"]:
        bases = ", ".join(f"{k} x{n}" for k, n in r["bases"].items())
        people = ", ".join(f"{k} x{n}" for k, n in r["people"].items())
        print(f"{r['actor']} ({r['role']}): {r['reads']} reads of {people}; {bases}")
    return 0


def _audit_subject_report(args: argparse.Namespace) -> int:
    from bangpae.adapters.clock import SystemClock
    from bangpae.services.access import subject_report

    try:
        start, end = _audit_range(args)
    except ValueError as exc:
        print(f"audit subject-report: {exc}", file=sys.stderr)
        return 2
    store = _open_store(_settings(args))
    try:
        now = SystemClock().now()
        report = subject_report(store, args.person, start, end, now)
        if report is None:
            print(f"audit subject-report: person {args.person} does not exist", file=sys.stderr)
            return 1
        _write_private(args.out, json.dumps(report, ensure_ascii=False, indent=2) + "\n")
        store.audit_append(
            AuditEntry(
                actor="cli",
                role="clerk",
                action="subject_report",
                subject=f"person:{args.person}",
                purpose="subject_access",
                fields=[f"reads={report['total']}"],
                at=now,
            )
        )
    finally:
        store.close()
    print(json.dumps({"out": str(args.out), "person_id": args.person, "reads": report["total"]}))
    return 0


def _purge(args: argparse.Namespace) -> int:
    from bangpae.adapters.anchors import AnchorError
    from bangpae.adapters.clock import SystemClock
    from bangpae.adapters.housekeeping import run_purge

    settings = _settings(args)
    if args.retention_days is not None:
        settings = settings.model_copy(update={"retention_days": args.retention_days})
    try:
        policy = settings.retention_policy()
    except ValueError as exc:
        print(f"purge: {exc}", file=sys.stderr)
        return 2
    store = _open_store(settings)
    try:
        report = run_purge(
            store,
            policy,
            SystemClock().now(),
            dry_run=args.dry_run,
            anchor_path=settings.resolved_anchor_path(),
            witness=settings.audit_witness,
            actor="cli",
            role="admin",
        )
    except AnchorError as exc:
        print(f"purge refused: the audit chain does not match its anchor: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(json.dumps(report.as_dict()))
    return 0


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by this user alone (an existing file too)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file that was there keeps its mode otherwise: not this one
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _when(value: str | None) -> float | None:
    """A time given as ISO 8601 with a zone (or Z), or as POSIX seconds."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    from datetime import datetime

    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 time or POSIX seconds") from None
    if t.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone (add Z or +09:00)")
    return t.timestamp()


def _set_contact(args: argparse.Namespace) -> int:
    from bangpae.adapters.clock import SystemClock
    from bangpae.api.notices import e164
    from bangpae.domain.errors import Invalid, NotFound
    from bangpae.domain.notices import sms_prefs

    try:
        phone = None if args.phone.strip().lower() in ("", "none") else e164(args.phone)
    except ValueError as exc:
        print(f"set-contact: {exc}", file=sys.stderr)
        return 2
    store = _open_store(_settings(args))
    try:
        now = SystemClock().now()
        contact = store.contact(args.person)
        if contact is None:
            raise NotFound(f"person {args.person} not found")
        orders = [o for o in store.orders_for_person(args.person) if o.victim_id == args.person]
        prefs = sms_prefs(contact.sms_prefs, orders[0].profile if orders else "kr").as_dict()
        if args.sms is not None:
            prefs["enabled"] = args.sms == "on"
        if args.lang is not None:
            prefs["lang"] = args.lang
        changed = store.set_contact(args.person, phone, prefs)
        store.audit_append(
            AuditEntry(  # who and when; never the number itself
                actor="cli",
                role="admin",
                action="contact.set",
                subject=f"person:{args.person}",
                purpose="administration",
                fields=(["phone"] if changed else []) + ["sms", "lang"],
                at=now,
            )
        )
    except (Invalid, NotFound) as exc:
        print(f"set-contact: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(json.dumps({"person": args.person, "phone_set": phone is not None, "sms": prefs}))
    return 0


def _hold_add(args: argparse.Namespace) -> int:
    from bangpae.adapters.clock import SystemClock
    from bangpae.domain.errors import Invalid, NotFound

    scope, target = next(
        (k, v) for k in ("order", "person", "incident") if (v := getattr(args, k)) is not None
    )
    try:
        start, end = _when(args.start), _when(args.until)
    except ValueError as exc:
        print(f"hold: {exc}", file=sys.stderr)
        return 2
    store = _open_store(_settings(args))
    try:
        hold = store.place_hold(
            scope,
            target,
            start,
            end,
            args.reason,
            actor="cli",
            role="admin",
            at=SystemClock().now(),
        )
    except (Invalid, NotFound) as exc:
        print(f"hold: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(json.dumps(_hold_json(hold)))
    return 0


def _hold_json(hold: Any) -> dict[str, Any]:
    from bangpae.domain.disclosure import iso

    return {
        "id": hold.id,
        "scope": hold.scope,
        "target": hold.target,
        "from": None if hold.start is None else iso(hold.start),
        "until": None if hold.end is None else iso(hold.end),
        "reason": hold.reason,
        "placed_at": iso(hold.placed_at),
    }


def _hold_list(args: argparse.Namespace) -> int:
    store = _open_store(_settings(args))
    holds = store.legal_holds()
    store.close()
    for hold in holds:
        print(json.dumps(_hold_json(hold)))
    return 0


def _hold_release(args: argparse.Namespace) -> int:
    from bangpae.adapters.clock import SystemClock
    from bangpae.domain.errors import Invalid, NotFound

    store = _open_store(_settings(args))
    try:
        store.release_hold(
            args.hold_id, args.reason, actor="cli", role="admin", at=SystemClock().now()
        )
    except (Invalid, NotFound) as exc:
        print(f"hold: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(json.dumps({"released": args.hold_id}))
    return 0


def _export(args: argparse.Namespace) -> int:
    from bangpae.adapters.casefile import CaseFileError, export_case
    from bangpae.adapters.clock import SystemClock
    from bangpae.domain.errors import NotFound

    store = _open_store(_settings(args))
    try:
        manifest = export_case(
            store,
            args.order,
            args.out,
            now=SystemClock().now(),
            purpose=args.purpose,
            progress=sys.stderr,
        )
    except (CaseFileError, NotFound) as exc:
        print(f"export: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(json.dumps({"out": str(args.out), "order_id": args.order, "counts": manifest["counts"]}))
    return 0


def _import(args: argparse.Namespace) -> int:
    from bangpae.adapters.casefile import CaseFileError, import_case, verify_case
    from bangpae.adapters.clock import SystemClock

    try:
        verify_case(args.directory)  # every checksum before the database is even opened
    except CaseFileError as exc:
        print(f"import refused: {exc}", file=sys.stderr)
        return 1
    store = _open_store(_settings(args), create=True)
    try:
        counts = import_case(store, args.directory, now=SystemClock().now(), progress=sys.stderr)
    except CaseFileError as exc:
        print(f"import refused: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(json.dumps({"imported": counts}))
    return 0


REFUGE_FILE_MAX = 20_000_000  # bytes: a national list of police boxes and stations fits


def _import_refuges(args: argparse.Namespace) -> int:
    from bangpae.adapters.clock import SystemClock
    from bangpae.domain.errors import Invalid
    from bangpae.domain.refuge import RefugeDataError, parse_collection

    try:
        if args.file.stat().st_size > REFUGE_FILE_MAX:
            print(f"import-refuges: the file is over {REFUGE_FILE_MAX} bytes", file=sys.stderr)
            return 1
        data = json.loads(args.file.read_text(encoding="utf-8"))
        refuges = parse_collection(data)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        print(f"import-refuges: {exc}", file=sys.stderr)
        return 1
    except RefugeDataError as exc:
        print(f"import-refuges: {exc}", file=sys.stderr)
        for loc, msg in exc.errors:
            print(f"  {'/'.join(str(x) for x in loc)}: {msg}", file=sys.stderr)
        return 1
    store = _open_store(_settings(args), create=True)
    try:
        counts = store.import_refuges(
            refuges, args.mode, actor="cli", role="admin", at=SystemClock().now()
        )
    except Invalid as exc:
        print(f"import-refuges: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(json.dumps({"mode": args.mode, **counts.as_dict()}))
    return 0


def _keys_rotate(args: argparse.Namespace) -> int:
    from bangpae.adapters.clock import SystemClock
    from bangpae.adapters.crypto import DataKeyError, add_key, fingerprint
    from bangpae.app import data_cipher

    settings = _settings(args)
    store = _open_store(settings)  # refuses keys that do not open what is sealed already
    try:
        cipher, new_key = store.cipher, not args.no_new_key
        if cipher is None:  # an instance from before encryption: it gets its first key
            cipher, new_key = data_cipher(settings, create=True), True
        elif new_key:
            cipher = add_key(cipher)  # written before anything is sealed with it
        store.cipher = cipher
        counts = store.reseal_fields()
    except DataKeyError as exc:
        print(f"keys: {exc}", file=sys.stderr)
        store.close()
        return 1
    assert cipher is not None
    newest = fingerprint(cipher.keys[0])
    store.audit_append(
        AuditEntry(
            actor="cli",
            role="admin",
            action="keys_rotate",
            subject="data-keys",
            purpose="data key rotation" if new_key else "re-encryption with the newest data key",
            fields=[f"newest={newest}"]
            + [
                f"{name}: resealed={n['resealed']} sealed={n['sealed']}"
                for name, n in counts.items()
            ],
            at=SystemClock().now(),
        )
    )
    store.close()
    out = {"new_key": new_key, "newest": newest, "keys": len(cipher.keys), "fields": counts}
    print(json.dumps(out))
    return 0


def _keys_generate(args: argparse.Namespace) -> int:
    from bangpae.adapters.crypto import new_key

    print(new_key())
    return 0


def _bench(args: argparse.Namespace) -> int:
    if args.workload == "flood":
        from bangpae.benchmarks.flood import run_flood

        summary = run_flood(
            phase_s=args.phase_seconds,
            clients=args.clients,
            half_open=4000 if args.half_open is None else args.half_open,
            sources=args.sources,
            devices=args.devices,
            interval_s=args.interval,
            settle_s=args.settle_seconds,
            tcp_workers=args.tcp_workers,
        )
        return 0 if summary["acked_lost"] == 0 and not summary["key_accepted"] else 1
    if args.workload == "soak":
        from bangpae.benchmarks.soak import run_soak

        summary = run_soak(
            minutes=args.minutes,
            devices=args.devices,
            interval_s=args.interval,
            bad_key_rate=args.bad_key_rate,
            garbage_rate=args.garbage_rate,
            half_open=300 if args.half_open is None else args.half_open,
            sources=args.sources,
            tcp_workers=args.tcp_workers,
        )
        return 0 if summary["acked_lost"] == 0 and not summary["key_accepted"] else 1
    if args.workload == "w2":
        from bangpae.benchmarks.w2 import bench_w2

        for line in bench_w2(
            args.pairs,
            runs=args.runs,
            rate=args.rate,
            transport=args.transport,
            tcp_workers=args.tcp_workers,
        ):
            print(json.dumps(line), flush=True)
        return 0
    if args.workload != "w1":
        print(f"bench {args.workload}: not part of this version yet", file=sys.stderr)
        return 2
    from bangpae.benchmarks.w1 import bench_w1

    ok = True
    for line in bench_w1(args.pairs, args.store, runs=args.runs):
        print(json.dumps(line), flush=True)
        ok = ok and line.get("correct", True) is not False
    return 0 if ok else 1


def _simulate(args: argparse.Namespace) -> int:
    from bangpae.simulate import run_devices, seoul_scenario

    devices, notes = seoul_scenario()
    print("\n".join(notes))
    sent = asyncio.run(run_devices(args.url, list(devices.values()), args.interval, args.duration))
    print(json.dumps({"fixes_acknowledged": sent}))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from bangpae.demo import run_demo

    settings = _settings(args)
    demo_dir = settings.data_dir / "demo"
    if demo_dir.exists():
        shutil.rmtree(demo_dir)  # the demo always starts from a fresh, seeded case
    settings = settings.model_copy(update={"data_dir": demo_dir, "database_url": None})
    return asyncio.run(run_demo(settings, args.duration))


COMMANDS: dict[str, Any] = {
    "serve": _serve,
    "demo": _demo,
    "simulate": _simulate,
    "admin.create-user": _create_user,
    "admin.clear-pins": _clear_pins,
    "audit.verify": _audit_verify,
    "audit.anchor": _audit_anchor,
    "audit.review": _audit_review,
    "audit.subject-report": _audit_subject_report,
    "purge": _purge,
    "hold.add": _hold_add,
    "hold.list": _hold_list,
    "hold.release": _hold_release,
    "set-contact": _set_contact,
    "export": _export,
    "import": _import,
    "import-refuges": _import_refuges,
    "keys.rotate": _keys_rotate,
    "keys.generate": _keys_generate,
    "bench": _bench,
}


def new_password() -> str:
    """A random password for seeded demo accounts."""
    return secrets.token_urlsafe(12)


if __name__ == "__main__":
    raise SystemExit(main())
