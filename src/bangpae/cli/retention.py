"""Retention: ``purge`` of data past its time, and the legal ``hold``s that keep it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bangpae.cli.options import Subcommands, add_data_options, parse_when, settings_from, store_for


def add_purge(sub: Subcommands) -> None:
    """``purge``: delete what is past retention, legal holds kept."""
    pu = sub.add_parser("purge", help="delete data past retention (legal holds kept), audited")
    add_data_options(pu)
    pu.add_argument("--retention-days", type=int, help="override BANGPAE_RETENTION_DAYS")
    pu.add_argument("--dry-run", action="store_true", help="only count what is due, per class")
    pu.add_argument("--anchor-path", type=Path, help="anchor file (BANGPAE_AUDIT_ANCHOR_PATH)")
    pu.set_defaults(handler=_purge)


def add_hold(sub: Subcommands) -> None:
    """``hold``: place, list and release legal holds."""
    ho = sub.add_parser("hold", help="legal holds: data kept whatever its retention")
    hosub = ho.add_subparsers(dest="hold_command", required=True)
    ha = hosub.add_parser("add", help="place a hold on an order, a person or an incident")
    add_data_options(ha)
    target = ha.add_mutually_exclusive_group(required=True)
    target.add_argument("--order", type=int)
    target.add_argument("--person", type=int)
    target.add_argument("--incident", type=int)
    ha.add_argument("--from", dest="start", help="held from (ISO 8601 with zone; default: ever)")
    ha.add_argument("--until", help="held until (ISO 8601 with zone; default: ever)")
    ha.add_argument("--reason", required=True, help="the court's request, e.g. its case number")
    ha.set_defaults(handler=_hold_add)
    hl = hosub.add_parser("list", help="the holds in force, as JSON lines")
    add_data_options(hl)
    hl.set_defaults(handler=_hold_list)
    hr = hosub.add_parser("release", help="release a hold")
    add_data_options(hr)
    hr.add_argument("hold_id", type=int)
    hr.add_argument("--reason", required=True)
    hr.set_defaults(handler=_hold_release)


def _purge(args: argparse.Namespace) -> int:
    from bangpae.adapters.anchors import AnchorError
    from bangpae.adapters.clock import SystemClock
    from bangpae.adapters.housekeeping import run_purge

    settings = settings_from(args)
    if args.retention_days is not None:
        settings = settings.model_copy(update={"retention_days": args.retention_days})
    try:
        policy = settings.retention_policy()
    except ValueError as exc:
        print(f"purge: {exc}", file=sys.stderr)
        return 2
    store = store_for(settings)
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


def _hold_add(args: argparse.Namespace) -> int:
    from bangpae.adapters.clock import SystemClock
    from bangpae.domain.errors import Invalid, NotFound

    scope, target = next(
        (k, v) for k in ("order", "person", "incident") if (v := getattr(args, k)) is not None
    )
    try:
        start, end = parse_when(args.start), parse_when(args.until)
    except ValueError as exc:
        print(f"hold: {exc}", file=sys.stderr)
        return 2
    store = store_for(settings_from(args))
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
    store = store_for(settings_from(args))
    holds = store.legal_holds()
    store.close()
    for hold in holds:
        print(json.dumps(_hold_json(hold)))
    return 0


def _hold_release(args: argparse.Namespace) -> int:
    from bangpae.adapters.clock import SystemClock
    from bangpae.domain.errors import Invalid, NotFound

    store = store_for(settings_from(args))
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
