"""Case files and refuges in and out: ``export``, ``import`` and ``import-refuges``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bangpae.cli.options import Subcommands, add_data_options, settings_from, store_for


def add_export(sub: Subcommands) -> None:
    """``export``: one order's case to a directory, checksummed."""
    ex = sub.add_parser("export", help="write one order's case to a directory, checksummed")
    add_data_options(ex)
    ex.add_argument("--order", type=int, required=True)
    ex.add_argument("--out", type=Path, required=True, help="a new or empty directory")
    ex.add_argument("--purpose", default="case export", help="why (kept in the audit record)")
    ex.set_defaults(handler=_export)


def add_import(sub: Subcommands) -> None:
    """``import``: a case directory, verified before anything is written."""
    im = sub.add_parser("import", help="verify a case directory, then import it")
    add_data_options(im)
    im.add_argument("directory", type=Path)
    im.set_defaults(handler=_import)


def add_import_refuges(sub: Subcommands) -> None:
    """``import-refuges``: places of refuge from a GeoJSON file, all or none."""
    ir = sub.add_parser(
        "import-refuges",
        help="import places of refuge from a GeoJSON FeatureCollection, all or none, audited",
    )
    add_data_options(ir)
    ir.add_argument("file", type=Path, help="GeoJSON FeatureCollection of Points")
    ir.add_argument(
        "--mode",
        choices=("merge", "replace"),
        default="merge",
        help="merge: update and add; replace: also remove those not in the file",
    )
    ir.set_defaults(handler=_import_refuges)


def _export(args: argparse.Namespace) -> int:
    from bangpae.adapters.casefile import CaseFileError, export_case
    from bangpae.adapters.clock import SystemClock
    from bangpae.domain.errors import NotFound

    store = store_for(settings_from(args))
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
    store = store_for(settings_from(args), create=True)
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
    store = store_for(settings_from(args), create=True)
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
