"""Workload W2 of docs/workloads.md over OsmAnd HTTP: durable fixes per second, and fix → screen.

A real ``bangpae serve`` process on the embedded store is fed W1's fixes by a
separate load process (HTTP keep-alive, many connections). Every 200 is a fix on
disk. Latency is measured from sending a fix of an offender in ``reveal`` to the
victim's WebSocket frame that shows it (matched by the fix time in the frame).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bangpae.benchmarks.w1 import generate

WATCHED = 20  # victims whose screens are timed
CONNECTIONS = 64


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _seed(db_url: str, pairs: int, watched: list[int], password_hash: str) -> None:
    """People, devices and orders straight into the store, before the server starts."""
    from bangpae.adapters.store import Store

    st = Store(db_url)
    st.migrate()
    n = 2 * pairs
    with st.engine.begin() as c:
        c.exec_driver_sql(
            "INSERT INTO people (id, kind, name, created_at) VALUES (?, ?, '', 0)",
            [(j, "offender" if j % 2 else "victim") for j in range(1, n + 1)],
        )
        c.exec_driver_sql(
            "INSERT INTO devices (id, identifier, kind, protocol, person_id, created_at)"
            " VALUES (?, ?, 'phone', 'osmand', ?, 0)",
            [(j, f"{j:015d}", j) for j in range(1, n + 1)],
        )
    with st.engine.begin() as c:
        c.exec_driver_sql(
            "INSERT INTO orders (id, offender_id, victim_id, notify_radius_m, reveal_radius_m,"
            " keep_away_m, hysteresis_m, zones, curfews, stale_after_s, offline_after_s,"
            " no_fix_after_s, valid_from, valid_until, profile, timezone, created_at)"
            " VALUES (?, ?, ?, 2000, 600, 100, 50, '[]', '[]', ?, 300, 300, NULL, NULL, 'kr',"
            " 'Asia/Seoul', 0)",
            [(i + 1, 2 * i + 1, 2 * i + 2, 1e9) for i in range(pairs)],
        )
    for i in watched:
        st.add_user(f"victim{i}", password_hash, "victim", 2 * i + 2)
    st.close()


def _load(osmand: str, lat: Any, lon: Any, rate: float | None, out: Any) -> None:
    """The load process: every fix in feed order over keep-alive HTTP/1.1; acks and send times.

    A small client on raw sockets: a general HTTP client spends more CPU per request
    than the server does, and would measure itself.
    """
    from urllib.parse import urlsplit

    u = urlsplit(osmand)
    host, port = u.hostname or "127.0.0.1", u.port or 80

    async def main() -> None:
        cpu0 = time.process_time()  # the load's own CPU: it shares the machine with the server
        ticks, n = lat.shape
        sent_at: dict[tuple[int, int], float] = {}
        ok = 0
        q: asyncio.Queue[tuple[int, int] | None] = asyncio.Queue(CONNECTIONS * 4)

        async def worker() -> None:
            nonlocal ok
            reader, writer = await asyncio.open_connection(host, port)
            while (item := await q.get()) is not None:
                t, k = item
                target = (
                    f"/?id={k + 1:015d}&lat={lat[t, k]:.6f}&lon={lon[t, k]:.6f}"
                    f"&timestamp={now0 + t:.3f}&accuracy=5"
                )
                if k % 2 == 0:
                    sent_at[(t, k)] = time.monotonic()
                writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if length:
                    await reader.readexactly(length)
                ok += head.startswith(b"HTTP/1.1 200")
            writer.close()

        workers = [asyncio.create_task(worker()) for _ in range(CONNECTIONS)]
        start = time.monotonic()
        for t in range(ticks):
            for k in range(n):
                if rate:
                    delay = start + (t * n + k) / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await q.put((t, k))
        for _ in workers:
            await q.put(None)
        await asyncio.gather(*workers)
        out.put(
            {
                "ok": ok,
                "seconds": time.monotonic() - start,
                "sent_at": sent_at,
                "cpu_s": time.process_time() - cpu0,
            }
        )

    now0 = time.time() - lat.shape[0] - 5
    asyncio.run(main())
    out.put({"now0": now0})


def _gt06_frame(proto: int, content: bytes, serial: int) -> bytes:
    from bangpae.protocols.gt06 import crc_itu

    body = bytes([len(content) + 5, proto]) + content + (serial & 0xFFFF).to_bytes(2, "big")
    return b"\x78\x78" + body + crc_itu(body).to_bytes(2, "big") + b"\r\n"


def _gt06_positions(lat: Any, lon: Any, now0: float) -> list[list[bytes]]:
    """Every fix as its GT06 position frame (0x12), by tick then device, built before timing."""
    from datetime import UTC, datetime

    ticks, n = lat.shape
    lbs = bytes.fromhex("01cc00287d001fb8")
    out = []
    for t in range(ticks):
        when = datetime.fromtimestamp(now0 + t, UTC)
        date = bytes(
            [when.year - 2000, when.month, when.day, when.hour, when.minute, when.second, 0xC8]
        )
        # big-endian bytes of whole rows (a numpy scalar's own bytes are native-endian)
        la = np.round(np.abs(lat[t]) * 1_800_000).astype(">u4").tobytes()
        lo = np.round(np.abs(lon[t]) * 1_800_000).astype(">u4").tobytes()
        flags = (
            (0x1000 | np.where(lat[t] >= 0, 0x0400, 0) | np.where(lon[t] < 0, 0x0800, 0))
            .astype(">u2")
            .tobytes()
        )
        out.append(
            [
                _gt06_frame(
                    0x12,
                    date
                    + la[4 * k : 4 * k + 4]
                    + lo[4 * k : 4 * k + 4]
                    + b"\0"
                    + flags[2 * k : 2 * k + 2]
                    + lbs,
                    t + 2,
                )
                for k in range(n)
            ]
        )
    return out


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class _Tracker(asyncio.Protocol):
    """One device's connection in the load process: reads whole frames, counts position acks."""

    def __init__(self, on_ack: Any) -> None:
        self.on_ack = on_ack
        self.acked_at: list[float] = []  # when each position was acknowledged, in order
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.logged_in: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data
        i = 0
        # the server may also send commands (pursuit mode): read whole frames, count acks
        while len(buf) - i >= 5 and len(buf) - i >= buf[i + 2] + 5:
            proto = buf[i + 3]
            i += buf[i + 2] + 5
            if proto == 0x12:
                self.acked_at.append(time.monotonic())
                self.on_ack()
            elif proto == 0x01 and not self.logged_in.done():
                self.logged_in.set_result(None)
        self.buffer = buf[i:]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.logged_in.done():
            self.logged_in.set_exception(exc or ConnectionError("closed before login"))


def _load_gt06(host: str, port: int, lat: Any, lon: Any, rate: float | None, out: Any) -> None:
    """The load process for GT06: one connection per device, login, then every tick's fixes.

    Frames are encoded before timing starts and acks are counted in a protocol callback,
    so that the load spends little of the CPU it shares with the server.
    """

    async def main() -> None:
        cpu0 = time.process_time()  # the load's own CPU: it shares the machine with the server
        loop = asyncio.get_running_loop()
        ticks, n = lat.shape
        frames = _gt06_positions(lat, lon, now0)
        sem = asyncio.Semaphore(500)
        ok = 0
        waiting = 0
        tick_done: asyncio.Future[None] = loop.create_future()

        def acked() -> None:
            nonlocal ok, waiting
            ok += 1
            waiting -= 1
            if waiting == 0 and not tick_done.done():
                tick_done.set_result(None)

        async def connect(k: int) -> _Tracker:
            async with sem:
                _, proto = await loop.create_connection(lambda: _Tracker(acked), host, port)
                assert proto.transport is not None
                proto.transport.write(_gt06_frame(0x01, bytes.fromhex(f"0{k + 1:015d}"), 1))
                await proto.logged_in
                return proto

        trackers = await asyncio.gather(*(connect(k) for k in range(n)))
        conns = [c.transport for c in trackers]
        out.put({"connected": True})  # the server's CPU for the fixes is counted from here
        sent_at: dict[tuple[int, int], float] = {}
        start = time.monotonic()
        for t in range(ticks):
            tick_done = loop.create_future()
            waiting += n
            for k in range(n):
                if rate:  # an offered load is spread evenly, fix by fix, not tick by tick
                    delay = start + (t * n + k) / rate - time.monotonic()
                    if delay > 0.001:
                        await asyncio.sleep(delay)
                if k % 2 == 0:
                    sent_at[(t, k)] = time.monotonic()
                conns[k].write(frames[t][k])  # type: ignore[union-attr]
            if waiting:
                await tick_done  # tick by tick: the next tick starts once this one is acked
        elapsed = time.monotonic() - start
        for w in conns:
            w.close()  # type: ignore[union-attr]
        # fix -> durable acknowledgement, for the offenders' fixes (the ones screens show)
        ack_ms: list[list[float]] = [[] for _ in range(ticks)]
        for (t, k), sent in sent_at.items():
            times = trackers[k].acked_at
            if t < len(times):
                ack_ms[t].append(1000.0 * (times[t] - sent))
        every = [x for tick in ack_ms for x in tick]
        out.put(
            {
                "ack_p50_ms": round(float(np.percentile(every, 50)), 1) if every else None,
                "ack_p99_ms": round(float(np.percentile(every, 99)), 1) if every else None,
                "tick_ack_p50_ms": [round(float(np.median(x))) if x else None for x in ack_ms],
                "ok": ok,
                "seconds": elapsed,
                "sent_at": sent_at,
                "connections": n,
                "cpu_s": time.process_time() - cpu0,
            }
        )

    # A whole second: GT06 carries whole seconds, and a fix time matched back to its tick
    # by rounding must not land on the tick before (it did whenever now0 ended past .5).
    now0 = float(int(time.time()) - lat.shape[0] - 5)
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        runner.run(main())
    out.put({"now0": now0})


async def _watch(
    api: str, tokens: dict[int, str], frames: list[tuple[int, str, float]], stop: asyncio.Event
) -> None:
    import websockets

    async def one(pair: int, token: str) -> None:
        async with websockets.connect(f"{api.replace('http', 'ws')}/api/v1/victim/stream") as ws:
            await ws.send(json.dumps({"token": token}))
            while not stop.is_set():
                try:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                except TimeoutError:
                    continue
                arrived = time.monotonic()
                for o in msg.get("orders", []):
                    if o.get("offender"):
                        frames.append((pair, o["offender"]["fix_time"], arrived))

    await asyncio.gather(*(one(p, t) for p, t in tokens.items()))


def run_w2(
    pairs: int, rate: float | None, transport: str = "osmand", tcp_workers: int = 0
) -> dict[str, Any]:
    """One W2 run: start a server, seed, watch victims, load, measure."""
    from bangpae.services.auth import hash_password

    f = generate(pairs)
    ticks = min(f.ticks, 20)
    lat, lon = f.lat[:ticks], f.lon[:ticks]
    # watch pairs that start within the reveal radius, whose every fix changes the screen
    from bangpae.domain.geodesy import fast_distances_m

    d0 = fast_distances_m(lat[0, 0::2], lon[0, 0::2], lat[0, 1::2], lon[0, 1::2])
    watched = [int(i) for i in np.argsort(d0)[:WATCHED]]
    tmp = tempfile.TemporaryDirectory(prefix="bangpae-w2-")
    data = Path(tmp.name)
    password = "w2-bench-password"
    _seed(f"sqlite:///{data / 'bangpae.sqlite'}", pairs, watched, hash_password(password))
    http_port, osm_port, gt06_port = _free_port(), _free_port(), _free_port()
    gt06_cap = 2 * pairs + 100 if tcp_workers == 0 else 4 * pairs
    env = {
        **os.environ,
        "BANGPAE_DATA_DIR": str(data),
        "BANGPAE_LOG_LEVEL": "WARNING",
        # the seeded trackers have no keys: the load measures the gateway, not key checks
        "BANGPAE_ALLOW_KEYLESS_DEVICES": "true",
        # the whole fleet connects from one loopback address (docs/robustness.md); with
        # workers each holds half the caps, and the kernel's split is only nearly even
        "BANGPAE_GT06_MAX_CONNECTIONS": str(gt06_cap),
        "BANGPAE_GT06_MAX_PER_ADDRESS": str(gt06_cap),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bangpae.cli",
            "serve",
            "--http",
            f"127.0.0.1:{http_port}",
            "--osmand",
            f"127.0.0.1:{osm_port}",
            "--gt06",
            f"127.0.0.1:{gt06_port}",
            "--h02",
            "off",
            "--tcp-workers",
            str(tcp_workers),
        ],
        env=env,
        # in the data dir, whose files serve wants its user's alone
        stderr=open(data / "serve.log", "ab", opener=lambda p, f: os.open(p, f, 0o600)),
        stdout=subprocess.DEVNULL,
    )
    api, osmand = f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{osm_port}/"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{api}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        tokens = {
            i: httpx.post(
                f"{api}/api/v1/auth/login", json={"username": f"victim{i}", "password": password}
            ).json()["access_token"]
            for i in watched
        }
        cpu0 = _cpu_tree(proc.pid)
        cpu_at: dict[str, float] = {}
        frames: list[tuple[int, str, float]] = []
        q: Any = mp.get_context("spawn").Queue()
        if transport == "gt06":
            loader = mp.get_context("spawn").Process(
                target=_load_gt06, args=("127.0.0.1", gt06_port, lat, lon, rate, q)
            )
        else:
            loader = mp.get_context("spawn").Process(target=_load, args=(osmand, lat, lon, rate, q))

        async def measure() -> dict[str, Any]:
            stop = asyncio.Event()
            watcher = asyncio.create_task(_watch(api, tokens, frames, stop))
            await asyncio.sleep(1.0)
            loader.start()
            result = await asyncio.to_thread(q.get)
            if result.get("connected"):  # GT06: logins done, the fixes start now
                cpu_at["fixes"] = _cpu_tree(proc.pid)
                cpu_at["main"] = _cpu(proc.pid)
                result = await asyncio.to_thread(q.get)
            now0 = (await asyncio.to_thread(q.get))["now0"]
            await asyncio.sleep(1.0)
            stop.set()
            await watcher
            result["now0"] = now0
            return result

        result = asyncio.run(measure())
        loader.join()
        cpu_end = _cpu_tree(proc.pid)
        main_cpu = _cpu(proc.pid) - cpu_at.get("main", 0.0)
        cpu = cpu_end - cpu0
        # with GT06, the logins of every connection come first: their CPU is not the fixes'
        fix_cpu = cpu_end - cpu_at.get("fixes", cpu0)
        metrics = httpx.get(f"{api}/metrics").text
        batches = next(
            (
                float(x.split()[-1])
                for x in metrics.splitlines()
                if x.startswith("bangpae_ingest_batches_total")
            ),
            0.0,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        tmp.cleanup()
    from datetime import datetime

    lat_ms = []
    # The frame that reflects a fix is the first to show it: later frames showing the same
    # fix (sent because the victim moved) are not its latency.
    first: dict[tuple[int, str], float] = {}
    for pair, fix_time, arrived in frames:
        first.setdefault((pair, fix_time), arrived)
    by_tick: dict[int, list[float]] = {}
    for (pair, fix_time), arrived in first.items():
        t = round(
            datetime.fromisoformat(fix_time.replace("Z", "+00:00")).timestamp() - result["now0"]
        )
        sent = result["sent_at"].get((t, 2 * pair))
        if sent is not None:
            lat_ms.append(1000.0 * (arrived - sent))
            by_tick.setdefault(t, []).append(lat_ms[-1])
    total = ticks * 2 * pairs
    return {
        "workload": "w2",
        "transport": "gt06_tcp" if transport == "gt06" else "osmand_http",
        "store": "sqlite",
        "pairs": pairs,
        "fixes": total,
        "accepted": result["ok"],
        "seconds": round(result["seconds"], 3),
        "fixes_per_s": round(result["ok"] / result["seconds"]),
        "offered_per_s": rate,
        "connections": result.get("connections", CONNECTIONS),
        "tcp_workers": tcp_workers,
        "latency_samples": len(lat_ms),
        "p50_ms": round(float(np.percentile(lat_ms, 50)), 1) if lat_ms else None,
        "p99_ms": round(float(np.percentile(lat_ms, 99)), 1) if lat_ms else None,
        "max_ms": round(max(lat_ms), 1) if lat_ms else None,
        "ack_p50_ms": result.get("ack_p50_ms"),
        "ack_p99_ms": result.get("ack_p99_ms"),
        # the slowest screen of each tick: a stall shows as one tick, a backlog as many
        "tick_max_ms": [round(max(by_tick[t])) for t in sorted(by_tick)],
        "tick_p50_ms": [round(float(np.median(by_tick[t]))) for t in sorted(by_tick)],
        "tick_ack_p50_ms": result.get("tick_ack_p50_ms"),
        "server_cpu_s": round(cpu, 2),
        "server_cpu_ms_per_fix": round(1000 * fix_cpu / max(result["ok"], 1), 3),
        # the main process alone (engine, writer, streams); the rest is the intake workers'
        "main_cpu_ms_per_fix": round(1000 * main_cpu / max(result["ok"], 1), 3)
        if "main" in cpu_at
        else None,
        "load_cpu_s": round(result["cpu_s"], 2),
        "fixes_per_commit": round(result["ok"] / batches, 1) if batches else None,
        "ticks": ticks,
    }


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        parts = fh.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_tree(pid: int) -> float:
    """CPU seconds of the server and its intake workers (the children it started)."""
    total = _cpu(pid)
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            children = [int(c) for c in fh.read().split()]
    except OSError:
        children = []
    for child in children:
        try:
            total += _cpu(child)
        except OSError:  # exited meanwhile
            pass
    return total


def bench_w2(
    pairs: int,
    runs: int = 1,
    rate: float | None = None,
    transport: str = "osmand",
    tcp_workers: int = 0,
) -> list[dict[str, Any]]:
    """W2 at saturation (rate None) or at a fixed offered load; medians over runs."""
    results = [run_w2(pairs, rate, transport, tcp_workers) for _ in range(runs)]
    best = sorted(results, key=lambda r: r["fixes_per_s"])[len(results) // 2]
    best["fixes_per_s_min"] = min(r["fixes_per_s"] for r in results)
    best["fixes_per_s_max"] = max(r["fixes_per_s"] for r in results)
    best["runs"] = runs
    best["fixes_per_s_median"] = statistics.median(r["fixes_per_s"] for r in results)
    # the run above is the median by throughput; the latencies of every run, in order
    best["p50_ms_runs"] = [r["p50_ms"] for r in results]
    best["p99_ms_runs"] = [r["p99_ms"] for r in results]
    return [best]
