"""The ``bangpae`` command: serve, demo, simulate, admin, audit, purge, bench."""

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

from bangpae.config import Settings
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
            "database_url",
            "bus_url",
            "mqtt_url",
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

    au = sub.add_parser("audit", help="the audit trail")
    ausub = au.add_subparsers(dest="audit_command", required=True)
    av = ausub.add_parser("verify", help="check the hash chain (exit 0 only when intact)")
    _common(av)

    pu = sub.add_parser("purge", help="delete fixes past retention (legal holds kept)")
    _common(pu)
    pu.add_argument("--retention-days", type=int, help="override BANGPAE_RETENTION_DAYS")

    b = sub.add_parser("bench", help="run a standard workload, printing JSON lines")
    b.add_argument("workload", choices=("w1", "w2", "w3", "w4"))
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
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bangpae`` command."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("BANGPAE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("alembic", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    handler = COMMANDS[
        args.command
        if args.command not in ("admin", "audit")
        else f"{args.command}.{getattr(args, args.command + '_command')}"
    ]
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


def _serve(args: argparse.Namespace) -> int:
    from bangpae.app import build, serve

    ctx = build(_settings(args))
    asyncio.run(serve(ctx))
    return 0


def _create_user(args: argparse.Namespace) -> int:
    from bangpae.adapters.store import Store
    from bangpae.adapters.store.errors import Conflict
    from bangpae.services.auth import hash_password

    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.resolved_database_url())
    store.migrate()
    if len(args.password) < 12:
        print("password: use at least 12 characters", file=sys.stderr)
        return 2
    try:
        uid = store.add_user(args.username, hash_password(args.password), args.role, args.person_id)
    except Conflict:
        print(f"user {args.username!r} exists already", file=sys.stderr)
        return 1
    from bangpae.adapters.clock import SystemClock

    store.audit_append(
        actor="cli",
        role="admin",
        action="create_user",
        subject=f"user:{uid}",
        purpose="administration",
        fields=["username", "role"],
        at=SystemClock().now(),
    )
    print(json.dumps({"id": uid, "username": args.username, "role": args.role}))
    store.close()
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    from bangpae.adapters.store import Store

    store = Store(_settings(args).resolved_database_url())
    store.migrate()
    report = store.audit_verify()
    store.close()
    if report.ok:
        print(f"audit chain intact: {report.records} records")
        return 0
    print(f"audit chain BROKEN at record {report.first_bad_id}: {report.reason}", file=sys.stderr)
    return 1


def _purge(args: argparse.Namespace) -> int:
    from bangpae.adapters.clock import SystemClock
    from bangpae.adapters.store import Store

    settings = _settings(args)
    days = args.retention_days or settings.retention_days
    store = Store(settings.resolved_database_url())
    store.migrate()
    now = SystemClock().now()
    deleted = store.purge_fixes(now - days * 86400.0)
    store.audit_append(
        actor="cli",
        role="admin",
        action="purge",
        subject="fixes",
        purpose="retention",
        fields=[f"older_than_days={days}", f"deleted={deleted}"],
        at=now,
    )
    store.close()
    print(json.dumps({"purged_fixes": deleted, "retention_days": days}))
    return 0


def _bench(args: argparse.Namespace) -> int:
    if args.workload == "w2":
        from bangpae.benchmarks.w2 import bench_w2

        for line in bench_w2(args.pairs, runs=args.runs, rate=args.rate, transport=args.transport):
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
    "audit.verify": _audit_verify,
    "purge": _purge,
    "bench": _bench,
}


def new_password() -> str:
    """A random password for seeded demo accounts."""
    return secrets.token_urlsafe(12)


if __name__ == "__main__":
    raise SystemExit(main())
