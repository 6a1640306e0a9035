"""The ``bangpae`` command: serve, demo, simulate, admin, audit, purge, hold, set-contact,
export, import, import-refuges, keys, bench; one module per group of commands."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from bangpae.adapters.datadir import private_umask
from bangpae.adapters.logsafe import install as redact_logs
from bangpae.cli import admin, audit, bench, casefiles, keys, retention, run
from bangpae.cli.admin import add_login

__all__ = ["add_login", "main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bangpae", description="Real-time protection for protective orders."
    )
    sub = p.add_subparsers(dest="command", required=True)
    run.add_serve(sub)
    run.add_demo(sub)
    run.add_simulate(sub)
    admin.add_admin(sub)
    audit.add_audit(sub)
    retention.add_purge(sub)
    retention.add_hold(sub)
    admin.add_set_contact(sub)
    casefiles.add_export(sub)
    casefiles.add_import(sub)
    casefiles.add_import_refuges(sub)
    keys.add_keys(sub)
    bench.add_bench(sub)
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
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from bangpae.adapters.store import AuditKeyMissing

        if not isinstance(exc, AuditKeyMissing):
            raise
        print(f"audit key: {exc}", file=sys.stderr)
        return 1
