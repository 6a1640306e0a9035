"""The soak benchmark: hours of ordinary load with a steady trickle of attacks, watching
for what grows (memory, file descriptors, latency) and for acknowledged fixes lost.

The same server, good devices and victim as the flood benchmark
(:mod:`bangpae.benchmarks.flood`), with, all the while, wrong keys at a steady rate,
garbage frames on the TCP tracker ports and a number of half-open connections. Every
10 s a JSON line: the server's memory and descriptors, the good devices' and the
victim's latency in those 10 s. At the end the server is stopped with SIGTERM and every
fix it acknowledged is looked up in its store, by (device, fix time).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

from bangpae.benchmarks.attack import Attack
from bangpae.benchmarks.flood import (
    AttackProcess,
    Emit,
    attack_for,
    begin,
    finish,
    loads,
    print_json,
    run_on_server,
)
from bangpae.benchmarks.harness import Server

KEY_CLIENTS = 8  # sharing the wrong-key rate


async def _soak(
    server: Server,
    emit: Emit,
    attacker: AttackProcess,
    attack: Attack,
    seconds: float,
    sample_s: float,
    devices: int,
    interval_s: float,
) -> dict[str, Any]:
    sampler, good, victim, load0 = await begin(server, attacker, devices, interval_s)
    t0 = time.monotonic()
    start_use = server.use()
    await attacker.start(attack)
    n = 0
    while (now := time.monotonic()) < t0 + seconds:
        n += 1
        await asyncio.sleep(min(t0 + n * sample_s, t0 + seconds) - now)
        t1 = time.monotonic()
        w0 = max(t0, t1 - sample_s)
        line: dict[str, Any] = {"workload": "soak", "t_s": round(t1 - t0, 1)}
        line |= server.use()
        line |= good.window(w0, t1)
        line |= victim.window(w0, t1)
        for proto in ("osmand", "gt06", "h02"):
            del line[f"good_{proto}"]  # the summary has them
        emit(line)
    t1 = time.monotonic()
    report = await attacker.stop()
    whole = sampler.window(t0, t1)
    summary: dict[str, Any] = {"workload": "soak", "phase": "summary", "seconds": round(t1 - t0)}
    for key in ("rss_mb", "fds", "threads"):
        summary |= {
            f"{key}_start": start_use[key],
            f"{key}_max": max(whole[f"{key}_max"], start_use[key]),
            f"{key}_end": whole[f"{key}_end"],
        }
    summary |= good.window(t0, t1) | victim.window(t0, t1) | report
    summary["key_accepted"] = report.get("attack", {}).get("key_accepted")
    summary["loadavg_1m"] = loads(load0)
    summary |= await finish(server, good, victim, sampler)
    return summary


def run_soak(
    minutes: float = 30.0,
    devices: int = 300,
    interval_s: float = 1.0,
    bad_key_rate: float = 2.0,
    garbage_rate: float = 2.0,
    half_open: int = 300,
    sources: int = 1024,
    tcp_workers: int = 0,
    sample_s: float = 10.0,
    emit: Emit = print_json,
) -> dict[str, Any]:
    """The whole soak run; a line every ``sample_s`` to ``emit``; the summary is returned
    (and emitted)."""
    server = Server((devices + 1) // 2, tcp_workers, prefix="bangpae-soak-")
    kinds = {
        "key_clients": KEY_CLIENTS if bad_key_rate > 0 else 0,
        "key_rate": bad_key_rate,
        "garbage_rate": garbage_rate,
        "half_open": half_open,
        "sources": sources,
    }

    def run(attacker: AttackProcess) -> Coroutine[Any, Any, dict[str, Any]]:
        attack = attack_for(server, **kinds)  # the ports are known once it started
        devices = 2 * server.pairs
        return _soak(server, emit, attacker, attack, 60 * minutes, sample_s, devices, interval_s)

    summary, limit = run_on_server(server, run)
    summary |= {
        "server_fd_limit": limit,
        "config": {
            "minutes": minutes,
            "devices": 2 * server.pairs,
            "interval_s": interval_s,
            "bad_key_rate": bad_key_rate,
            "garbage_rate": garbage_rate,
            "half_open": half_open,
            "sources": sources,
            "tcp_workers": tcp_workers,
        },
    }
    emit(summary)
    return summary
