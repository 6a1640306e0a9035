"""The audit trail: ``audit verify``, ``anchor``, ``review`` and ``subject-report``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from bangpae.cli.options import Subcommands, add_data_options, parse_when, settings_from, store_for
from bangpae.domain.audit import AuditEntry


def add_audit(sub: Subcommands) -> None:
    """``audit``: check and anchor the hash chain, and report who read whose positions."""
    au = sub.add_parser("audit", help="the audit trail")
    ausub = au.add_subparsers(dest="audit_command", required=True)
    av = ausub.add_parser("verify", help="check the hash chain (exit 0 only when intact)")
    add_data_options(av)
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
    av.set_defaults(handler=_audit_verify)
    aa = ausub.add_parser("anchor", help="append the chain's head to the anchor file")
    add_data_options(aa)
    aa.add_argument("--anchor-path", type=Path, help="anchor file (BANGPAE_AUDIT_ANCHOR_PATH)")
    aa.set_defaults(handler=_audit_anchor)

    ar = ausub.add_parser(
        "review", help="who read whose positions in a time range, for what, on which basis"
    )
    add_data_options(ar)
    ar.add_argument("--since", help="from (ISO 8601 with zone, or POSIX seconds)")
    ar.add_argument("--until", help="until, not included (ISO 8601 with zone, or POSIX seconds)")
    ar.add_argument("--json", action="store_true", help="the whole report as JSON")
    ar.set_defaults(handler=_audit_review)
    asr = ausub.add_parser(
        "subject-report",
        help="the reads of one person's positions, by role and purpose (for the court and "
        "the person's counsel)",
    )
    add_data_options(asr)
    asr.add_argument("--person", type=int, required=True)
    asr.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    asr.add_argument("--since", help="from (ISO 8601 with zone, or POSIX seconds)")
    asr.add_argument("--until", help="until, not included (ISO 8601 with zone, or POSIX seconds)")
    asr.set_defaults(handler=_audit_subject_report)


def _audit_verify(args: argparse.Namespace) -> int:
    from bangpae.adapters.anchors import AnchorError, anchor_marks
    from bangpae.adapters.clock import SystemClock

    settings = settings_from(args)
    path = settings.resolved_anchor_path()
    witness = args.witness
    if witness is None and settings.audit_witness not in ("", "syslog"):
        witness = Path(settings.audit_witness)
    days = args.audit_retention_days or settings.retention_audit_days
    store = store_for(settings, check_audit_key=False)
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

    settings = settings_from(args)
    path = settings.resolved_anchor_path()
    store = store_for(settings)
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
    start, end = parse_when(args.since), parse_when(args.until)
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
    store = store_for(settings_from(args))
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
    store = store_for(settings_from(args))
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


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by this user alone (an existing file too)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file that was there keeps its mode otherwise: not this one
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
