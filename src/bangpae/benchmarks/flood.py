"""The flood benchmark: the victim's status read and the good devices' acknowledgements
while anyone, without signing in, floods the server.

A real ``bangpae serve`` on loopback (:class:`~bangpae.benchmarks.harness.Server`), good
devices reporting about once a second each, the victim reading her status about every
100 ms; then three phases of equal length, a few seconds of rest between them:

1. **baseline**: nothing else;
2. **key_flood**: ``clients`` concurrent clients sending fixes with wrong keys, for real
   and for unknown device identifiers, over OsmAnd, ``POST /api/v1/fixes`` and
   ``POST /owntracks`` (each wrong key for a real device may cost an argon2 check);
3. **half_open**: ``half_open`` connections to the API, OsmAnd, GT06 and H02 ports sending
   a partial request line or nothing, held open.

One JSON line per phase (victim latency, good-device acknowledgements, errors, the
server's memory and descriptors, what the attack got), then a summary with every
acknowledged fix checked against the store once the server has stopped.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import queue
import time
from collections.abc import Callable, Coroutine
from typing import Any

from bangpae.benchmarks.attack import Attack
from bangpae.benchmarks.fleet import GoodDevices
from bangpae.benchmarks.harness import (
    Server,
    UseSampler,
    Victim,
    fd_limit,
    log,
    raise_fd_limit,
    warm_up_s,
)
from bangpae.benchmarks.w2 import _new_loop

Emit = Callable[[dict[str, Any]], None]


def print_json(line: dict[str, Any]) -> None:
    """One JSON line on standard output, at once."""
    print(json.dumps(line), flush=True)


class AttackProcess:
    """A spawned process running one :class:`Attack` after another, each from ``start``
    to ``stop``; made ready well ahead of the first (a process takes a second or two to
    start, which would otherwise fall in a phase)."""

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self.commands: Any = ctx.Queue()
        self.out: Any = ctx.Queue()
        from bangpae.benchmarks import attack as module

        self.proc = ctx.Process(target=module.run, args=(self.commands, self.out), daemon=True)
        self.proc.start()

    def _get(self, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return dict(self.out.get(True, 0.5))
            except queue.Empty:
                if not self.proc.is_alive():
                    raise RuntimeError(f"attack process exited ({self.proc.exitcode})") from None
                if time.monotonic() > deadline:
                    raise

    async def ready(self) -> None:
        """Wait until the process is up."""
        await asyncio.to_thread(self._get, 120)

    async def start(self, attack: Attack) -> dict[str, Any]:
        """Start an attack; the first report (once it is attacking)."""
        self.commands.put(attack)
        return await asyncio.to_thread(self._get, 60)

    async def stop(self) -> dict[str, Any]:
        """Stop the attack; what came of it."""
        self.commands.put("stop")
        try:
            return await asyncio.to_thread(self._get, 90)
        except (queue.Empty, RuntimeError) as exc:
            return {"attack": {"lost": repr(exc)}}

    def close(self) -> None:
        """End the process (at once if it does not end by itself)."""
        if self.proc.is_alive():
            self.commands.put(None)
            self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


def attack_for(server: Server, **kinds: Any) -> Attack:
    """An attack on this server's ports and its real device identifiers."""
    ids = tuple(server.identifier(j) for j in range(1, 2 * server.pairs + 1))
    return Attack(
        api_port=server.api_port,
        osmand_port=server.osmand_port,
        gt06_port=server.gt06_port,
        h02_port=server.h02_port,
        identifiers=ids,
        **kinds,
    )


async def warm_up(server: Server, devices: int, interval_s: float) -> tuple[GoodDevices, Victim]:
    """Good devices started and each acknowledged once (its key checked and cached by the
    server), the victim signed in and reading."""
    good = GoodDevices(server, devices, interval_s)
    t0 = time.monotonic()
    good.start()
    try:
        await asyncio.wait_for(good.first_acked.wait(), warm_up_s(devices))
    except TimeoutError:
        await good.stop()
        raise RuntimeError(
            f"good devices not all acknowledged within {warm_up_s(devices):.0f} s: "
            f"{dict(good.errors)}\n{server.log_tail()}"
        ) from None
    log.info("good devices: %d acknowledged once each", devices)
    # what the first checks of every key cost is reported apart from what follows
    good.warm_up = {
        "warm_up_s": round(time.monotonic() - t0, 1),
        "warm_up_good_errors_by_kind": dict(good.errors),
    }
    good.errors.clear()
    tokens = await asyncio.to_thread(server.login)
    victim = Victim(server, tokens)
    victim.start()
    return good, victim


async def begin(
    server: Server, attacker: AttackProcess, devices: int, interval_s: float
) -> tuple[UseSampler, GoodDevices, Victim, float]:
    """What every run does once the server is up: this process's descriptor limit raised
    (the server keeps the one it was given), the server's use sampled, the good devices
    and the victim warmed up, the attacker ready; with the load average at the start."""
    raise_fd_limit()
    sampler = UseSampler(server)
    sampler.start()
    good, victim = await warm_up(server, devices, interval_s)
    await attacker.ready()
    return sampler, good, victim, os.getloadavg()[0]


def loads(load0: float) -> list[float]:
    """The 1-minute load average at the start and now: the machine may be shared, and its
    load says how far a run's figures compare with another's."""
    return [round(load0, 2), round(os.getloadavg()[0], 2)]


def run_on_server(
    server: Server, run: Callable[[AttackProcess], Coroutine[Any, Any, dict[str, Any]]]
) -> tuple[dict[str, Any], int | None]:
    """Start the attacking process and the seeded server, then ``run`` on a fresh loop;
    both always stopped and the data removed. The summary, and the server's open-files
    limit."""
    attacker = None
    try:
        attacker = AttackProcess()  # starts up while the server does
        server.seed()
        server.start()
        assert server.proc is not None
        limit = fd_limit(server.proc.pid)
        with asyncio.Runner(loop_factory=_new_loop) as runner:
            summary = runner.run(run(attacker))
    finally:
        if attacker is not None:
            attacker.close()
        server.cleanup()
    return summary, limit


async def finish(
    server: Server, good: GoodDevices, victim: Victim, sampler: UseSampler
) -> dict[str, Any]:
    """Stop the load, then the server (SIGTERM); every acknowledged fix looked up in the
    store: ``acked_lost`` must be 0."""
    await victim.stop()
    await good.stop()
    await sampler.stop()
    log.info("stopping the server, then counting its stored fixes")
    out = await asyncio.to_thread(server.stop)
    acked = good.acked_set()
    stored = await asyncio.to_thread(server.stored)
    lost = acked - stored
    out |= {
        "acked": len(acked),
        "stored": len(stored),
        "acked_lost": len(lost),
        "acked_lost_examples": sorted(lost)[:5],
        "good_errors_by_kind": dict(good.errors),
        **good.warm_up,
        "victim_errors_by_kind": dict(victim.errors),
        "victim_refreshes": victim.refreshes,
    }
    return out


async def recovery(
    victim: Victim, base_p50: float | None, t1: float, limit_s: float
) -> float | None:
    """Seconds from ``t1`` (the attack stopped) until the victim's reads are back: three in
    a row within twice the baseline median plus 5 ms (None: not within ``limit_s``)."""
    bound = 2 * (base_p50 or 0.0) + 5.0
    while time.monotonic() - t1 < limit_s:
        recent = victim.reads.since(t1)
        for i in range(len(recent) - 2):
            if max(recent[i : i + 3]) <= bound:
                done_at = victim.reads.t[len(victim.reads.t) - len(recent) + i + 2]
                return round(max(done_at - t1, 0.0), 2)
        await asyncio.sleep(0.1)
    return None


def phase_line(
    name: str,
    t0: float,
    t1: float,
    good: GoodDevices,
    victim: Victim,
    sampler: UseSampler,
    report: dict[str, Any] | None,
) -> dict[str, Any]:
    """One phase's JSON line."""
    line: dict[str, Any] = {"workload": "flood", "phase": name, "seconds": round(t1 - t0, 1)}
    line |= victim.window(t0, t1)
    line |= good.window(t0, t1)
    line |= sampler.window(t0, t1)
    if report is not None:
        line |= report
    return line


async def _flood(
    server: Server,
    emit: Emit,
    attacker: AttackProcess,
    phases: list[tuple[str, Attack | None]],
    phase_s: float,
    settle_s: float,
    devices: int,
    interval_s: float,
) -> dict[str, Any]:
    sampler, good, victim, load0 = await begin(server, attacker, devices, interval_s)
    lines = []
    base_p50 = None
    for name, attack in phases:
        log.info("flood: phase %s, %.0f s", name, phase_s)
        if attack is not None:
            await attacker.start(attack)
        t0 = time.monotonic()
        await asyncio.sleep(phase_s)
        t1 = time.monotonic()
        report = await attacker.stop() if attack is not None else None
        line = phase_line(name, t0, t1, good, victim, sampler, report)
        if attack is None:
            base_p50 = line["victim_p50_ms"]
        else:  # what the attack left queued drains here, before the next phase
            line["recovery_s"] = await recovery(victim, base_p50, t1, max(settle_s, 60.0))
        rest = settle_s - (time.monotonic() - t1)
        if rest > 0 and name != phases[-1][0]:
            await asyncio.sleep(rest)
        emit(line)
        lines.append(line)
    end = await finish(server, good, victim, sampler)
    summary: dict[str, Any] = {"workload": "flood", "phase": "summary"}
    for line in lines:
        for key in ("victim_p50_ms", "victim_p99_ms", "victim_max_ms", "good_ack_p99_ms"):
            summary[f"{line['phase']}_{key}"] = line[key]
        summary[f"{line['phase']}_fds_max"] = line["fds_max"]
        summary[f"{line['phase']}_rss_mb_max"] = line["rss_mb_max"]
        if "recovery_s" in line:
            summary[f"{line['phase']}_recovery_s"] = line["recovery_s"]
    base = lines[0]["victim_p50_ms"]
    for line in lines[1:]:
        p50 = line["victim_p50_ms"]
        summary[f"{line['phase']}_victim_p50_x"] = round(p50 / base, 1) if base and p50 else None
    summary["key_accepted"] = lines[1].get("attack", {}).get("key_accepted")
    summary["loadavg_1m"] = loads(load0)
    summary |= end
    return summary


def run_flood(
    phase_s: float = 60.0,
    clients: int = 32,
    half_open: int = 4000,
    sources: int = 1024,
    devices: int = 300,
    interval_s: float = 1.0,
    settle_s: float = 5.0,
    tcp_workers: int = 0,
    emit: Emit = print_json,
) -> dict[str, Any]:
    """The whole flood run; each phase's line goes to ``emit`` as it ends; the summary is
    returned (and emitted)."""
    server = Server((devices + 1) // 2, tcp_workers)

    def run(attacker: AttackProcess) -> Coroutine[Any, Any, dict[str, Any]]:
        phases: list[tuple[str, Attack | None]] = [  # the ports are known once it started
            ("baseline", None),
            ("key_flood", attack_for(server, key_clients=clients, sources=sources)),
            ("half_open", attack_for(server, half_open=half_open, sources=sources)),
        ]
        devices = 2 * server.pairs
        return _flood(server, emit, attacker, phases, phase_s, settle_s, devices, interval_s)

    summary, limit = run_on_server(server, run)
    summary |= {
        "server_fd_limit": limit,
        "config": {
            "phase_s": phase_s,
            "settle_s": settle_s,
            "clients": clients,
            "half_open": half_open,
            "sources": sources,
            "devices": 2 * server.pairs,
            "interval_s": interval_s,
            "tcp_workers": tcp_workers,
        },
    }
    emit(summary)
    return summary
