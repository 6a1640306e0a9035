"""Running bangpae: ``serve``, ``demo`` (a seeded case) and ``simulate`` (devices)."""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import sys

from bangpae.cli.options import Subcommands, add_data_options, add_listener_options, settings_from


def add_serve(sub: Subcommands) -> None:
    """``serve``: the API and the device listeners."""
    s = sub.add_parser("serve", help="run the API and the device listeners")
    add_data_options(s)
    add_listener_options(s)
    s.set_defaults(handler=_serve)


def add_demo(sub: Subcommands) -> None:
    """``demo``: a seeded Seoul case served with simulated devices."""
    d = sub.add_parser("demo", help="serve a seeded Seoul case with simulated devices")
    add_data_options(d)
    add_listener_options(d)
    d.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    d.set_defaults(handler=_demo)


def add_simulate(sub: Subcommands) -> None:
    """``simulate``: simulated devices reporting over OsmAnd HTTP."""
    sim = sub.add_parser("simulate", help="drive simulated devices over OsmAnd HTTP")
    sim.add_argument("--url", default="http://127.0.0.1:5055/", help="OsmAnd listener URL")
    sim.add_argument("--interval", type=float, default=2.0)
    sim.add_argument("--duration", type=float, default=None)
    sim.set_defaults(handler=_simulate)


def _serve(args: argparse.Namespace) -> int:
    from bangpae.adapters.datadir import loose_modes, refusal, sqlite_files
    from bangpae.app import build, run_serve

    settings = settings_from(args)
    # Refused, not quietly tightened: the operator learns the data was exposed.
    loose = loose_modes(settings.data_dir, sqlite_files(settings.resolved_database_url()))
    if loose:
        print(f"bangpae serve: {refusal(settings.data_dir, loose)}", file=sys.stderr)
        return 1
    ctx = build(settings)
    run_serve(ctx)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from bangpae.demo import run_demo

    settings = settings_from(args)
    demo_dir = settings.data_dir / "demo"
    if demo_dir.exists():
        shutil.rmtree(demo_dir)  # the demo always starts from a fresh, seeded case
    settings = settings.model_copy(update={"data_dir": demo_dir, "database_url": None})
    return asyncio.run(run_demo(settings, args.duration))


def _simulate(args: argparse.Namespace) -> int:
    from bangpae.simulate import run_devices, seoul_scenario

    devices, notes = seoul_scenario()
    print("\n".join(notes))
    sent = asyncio.run(run_devices(args.url, list(devices.values()), args.interval, args.duration))
    print(json.dumps({"fixes_acknowledged": sent}))
    return 0


def new_password() -> str:
    """A random password for seeded demo accounts."""
    return secrets.token_urlsafe(12)
