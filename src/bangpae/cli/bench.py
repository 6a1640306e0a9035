"""``bench``: the standard workloads of BENCHMARK.md, as JSON lines."""

from __future__ import annotations

import argparse
import json
import sys

from bangpae.cli.options import Subcommands


def add_bench(sub: Subcommands) -> None:
    """``bench``: a workload, its options, and the attacks of ``flood`` and ``soak``."""
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
    b.set_defaults(handler=_bench)


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
