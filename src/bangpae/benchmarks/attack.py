"""Attacks anyone can make without signing in, run in a process of their own.

- **Wrong device keys**: clients sending fixes with wrong keys, for real and for unknown
  device identifiers, over OsmAnd, ``POST /api/v1/fixes`` and ``POST /owntracks``.
- **Half-open connections**: connections to the API, OsmAnd, GT06 and H02 ports that send
  a partial request line or frame, or nothing, and are held open (reopened when the
  server closes them, as an attacker would).
- **Garbage frames**: connections to the TCP tracker ports that send bytes no tracker
  sends.

Each connection comes from its own loopback source address (127.64.0.0 and up, cycling
over ``sources`` of them): an attacker with many addresses, which limits per source do
not stop, and never the good devices' 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from bangpae.benchmarks.harness import exchange, raise_fd_limit

REQUESTS_PER_CONNECTION = 8  # per source address in a row: under a per-source limit of 20/min
FD_MARGIN = 200  # descriptors this process keeps for itself
CONNECTS_AT_ONCE = 256


@dataclass(frozen=True)
class Attack:
    """What to attack with; zero turns a kind off."""

    api_port: int
    osmand_port: int
    gt06_port: int | None
    h02_port: int | None
    identifiers: tuple[str, ...]  # real devices, tried with wrong keys
    key_clients: int = 0
    key_rate: float | None = None  # wrong-key requests per second in all; None: flat out
    half_open: int = 0
    garbage_rate: float = 0.0  # garbage connections per second to the TCP ports
    sources: int = 1024
    seed: int = 1


def source(i: int, sources: int) -> str:
    """The i-th source address of the pool (127.64.0.1 and up)."""
    n = 0x7F400001 + i % max(sources, 1)
    return f"{n >> 24}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


class _Hold(asyncio.Protocol):
    """A connection held open; notes whether the server closed it."""

    def __init__(self) -> None:
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        pass  # an error page, say: what matters is whether the connection stays

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class Attacker:
    """Runs an :class:`Attack` until stopped; counts what came of it."""

    def __init__(self, attack: Attack) -> None:
        self.a = attack
        self.rng = random.Random(attack.seed)
        self.stopping = asyncio.Event()
        self.next_source = 0
        self.next_slot = time.monotonic()
        self.fd_limit = raise_fd_limit()
        self.stats: dict[str, Any] = {
            "key_requests": Counter[str](),  # "endpoint:status"
            "key_accepted": 0,  # wrong keys the server took: must stay 0
            "key_unanswered_at_stop": 0,
            "key_errors": Counter[str](),
            "half_open_target": min(attack.half_open, max(self.fd_limit - FD_MARGIN, 0)),
            "half_open_held": 0,
            "half_open_held_max": 0,
            "half_open_opened": 0,
            "half_open_closed_by_server": 0,
            "half_open_connect_errors": Counter[str](),
            "half_open_ramp_s": None,
            "garbage_connections": 0,
            "garbage_closed_by_server": 0,
            "garbage_left_open": 0,
            "garbage_connect_errors": 0,
        }
        self.refusal_ms: list[float] = []
        self.in_flight = 0  # wrong-key requests sent and not yet answered
        self.started = time.monotonic()

    def _source(self) -> str:
        self.next_source += 1
        return source(self.next_source, self.a.sources)

    # -- wrong keys ----------------------------------------------------------------------

    def _request(self, endpoint: str) -> bytes:
        real = self.rng.random() < 0.75
        ident = (
            self.rng.choice(self.a.identifiers)
            if real and self.a.identifiers
            else f"9{self.rng.randrange(10**14):014d}"
        )
        key = secrets.token_urlsafe(12)
        lat, lon = 37.5 + self.rng.random() / 10, 127.0 + self.rng.random() / 10
        now = int(time.time())
        if endpoint == "osmand":
            return (
                f"GET /?id={ident}&lat={lat:.6f}&lon={lon:.6f}&timestamp={now}&key={key}"
                " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            ).encode()
        body: dict[str, Any]
        if endpoint == "fixes":
            path = "/api/v1/fixes"
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
            body = {"fixes": [{"fix_time": when, "lat": lat, "lon": lon}]}
        else:
            path = "/owntracks"
            body = {"_type": "location", "topic": ident, "lat": lat, "lon": lon, "tst": now}
        data = json.dumps(body).encode()
        auth = base64.b64encode(f"{ident}:{key}".encode()).decode()
        return (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        ).encode() + data

    async def _pace(self) -> None:
        if not self.a.key_rate:
            return
        now = time.monotonic()
        slot = max(now, self.next_slot)
        self.next_slot = slot + 1.0 / self.a.key_rate
        if slot > now:
            await asyncio.sleep(slot - now)

    async def _key_client(self, n: int) -> None:
        endpoints = ("osmand", "fixes", "owntracks")
        i = n
        while not self.stopping.is_set():
            endpoint = endpoints[i % 3]
            i += 1
            port = self.a.osmand_port if endpoint == "osmand" else self.a.api_port
            try:
                conn = await asyncio.open_connection(
                    "127.0.0.1", port, local_addr=(self._source(), 0)
                )
            except OSError as exc:
                self.stats["key_errors"][f"connect:{type(exc).__name__}"] += 1
                await asyncio.sleep(0.05)
                continue
            try:
                for _ in range(REQUESTS_PER_CONNECTION):
                    await self._pace()
                    if self.stopping.is_set():
                        break
                    t0 = time.monotonic()
                    self.in_flight += 1
                    try:
                        status, _, closing = await asyncio.wait_for(
                            exchange(conn[0], conn[1], self._request(endpoint)), 60
                        )
                    finally:
                        self.in_flight -= 1
                    self.refusal_ms.append(1000.0 * (time.monotonic() - t0))
                    self.stats["key_requests"][f"{endpoint}:{status}"] += 1
                    if 200 <= status < 300:
                        self.stats["key_accepted"] += 1
                    if closing:
                        break
            except (OSError, EOFError, TimeoutError, asyncio.IncompleteReadError) as exc:
                self.stats["key_errors"][f"{endpoint}:{type(exc).__name__}"] += 1
            finally:
                conn[1].close()

    # -- half-open connections -----------------------------------------------------------

    def _targets(self) -> list[tuple[int, bytes]]:
        """(port, partial bytes) to hold open with; b"" sends nothing."""
        out = [
            (self.a.api_port, b"GET /api/v1/victim/sta"),
            (self.a.api_port, b""),
            (self.a.osmand_port, b"GET /?id=0000000000"),
            (self.a.osmand_port, b""),
        ]
        if self.a.gt06_port:
            out += [(self.a.gt06_port, b"\x78\x78\x0d\x01"), (self.a.gt06_port, b"")]
        if self.a.h02_port:
            out += [(self.a.h02_port, b"*HQ,1234"), (self.a.h02_port, b"")]
        return out

    async def _hold(self, i: int, gate: asyncio.Semaphore, ready: asyncio.Event) -> None:
        port, partial = self._targets()[i % len(self._targets())]
        loop = asyncio.get_running_loop()
        s = self.stats
        first = True
        while not self.stopping.is_set():
            try:
                async with gate:
                    _, hold = await loop.create_connection(
                        _Hold, "127.0.0.1", port, local_addr=(self._source(), 0)
                    )
            except OSError as exc:
                s["half_open_connect_errors"][type(exc).__name__] += 1
                await self._sleep(1.0)
                continue
            if partial:
                hold.transport.write(partial)  # type: ignore[union-attr]
            s["half_open_opened"] += 1
            s["half_open_held"] += 1
            s["half_open_held_max"] = max(s["half_open_held_max"], s["half_open_held"])
            if first and s["half_open_held"] >= s["half_open_target"] and not ready.is_set():
                s["half_open_ramp_s"] = round(time.monotonic() - self.started, 2)
                ready.set()
            first = False
            stop: asyncio.Future[Any] = asyncio.ensure_future(self.stopping.wait())
            closed: asyncio.Future[Any] = hold.closed
            await asyncio.wait([closed, stop], return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            s["half_open_held"] -= 1
            if hold.closed.done():
                s["half_open_closed_by_server"] += 1
                await self._sleep(0.5)  # and again
            else:
                hold.transport.close()  # type: ignore[union-attr]

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except TimeoutError:
            pass

    # -- garbage -------------------------------------------------------------------------

    def _garbage(self) -> tuple[int, bytes]:
        ports = [p for p in (self.a.gt06_port, self.a.h02_port) if p]
        port = self.rng.choice(ports)
        kind = self.rng.randrange(3)
        if kind == 0:
            return port, self.rng.randbytes(self.rng.randrange(1, 200))
        if port == self.a.gt06_port:  # a login frame with a wrong checksum
            return port, b"\x78\x78\x0d\x01" + self.rng.randbytes(8) + b"\x00\x01\xde\xad\r\n"
        return port, f"*HQ,{self.rng.randrange(10**10)},V1,99,ZZ,garbage#".encode()

    async def _one_garbage(self) -> None:
        port, data = self._garbage()
        s = self.stats
        try:
            _, hold = await asyncio.get_running_loop().create_connection(
                _Hold, "127.0.0.1", port, local_addr=(self._source(), 0)
            )
        except OSError:
            s["garbage_connect_errors"] += 1
            return
        s["garbage_connections"] += 1
        hold.transport.write(data)  # type: ignore[union-attr]
        try:
            await asyncio.wait_for(asyncio.shield(hold.closed), 2.0)
            s["garbage_closed_by_server"] += 1
        except TimeoutError:
            s["garbage_left_open"] += 1
        hold.transport.close()  # type: ignore[union-attr]

    async def _garbage_stream(self) -> None:
        tasks: set[asyncio.Task[None]] = set()
        every = 1.0 / self.a.garbage_rate
        nxt = time.monotonic()
        while not self.stopping.is_set():
            task = asyncio.create_task(self._one_garbage())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            nxt += every
            await self._sleep(max(nxt - time.monotonic(), 0))
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the whole -----------------------------------------------------------------------

    async def run(self, commands: Any, out: Any) -> None:
        """Attack until the next command arrives on ``commands``; report on ``out``."""
        self.started = time.monotonic()
        ready = asyncio.Event()
        gate = asyncio.Semaphore(CONNECTS_AT_ONCE)
        keys = [asyncio.create_task(self._key_client(n)) for n in range(self.a.key_clients)]
        target = self.stats["half_open_target"]
        tasks = [asyncio.create_task(self._hold(i, gate, ready)) for i in range(target)]
        if self.a.garbage_rate and (self.a.gt06_port or self.a.h02_port):
            tasks.append(asyncio.create_task(self._garbage_stream()))
        out.put({"started": True, "fd_limit": self.fd_limit})
        await asyncio.to_thread(commands.get)  # "stop"
        self.stopping.set()
        # The attack ends now: requests still unanswered are dropped (what the server still
        # does for them is its own, and shows in the time it takes to recover).
        self.stats["key_unanswered_at_stop"] = self.in_flight
        for task in keys:
            task.cancel()
        await asyncio.gather(*keys, return_exceptions=True)
        done, pending = await asyncio.wait(tasks, timeout=30) if tasks else (set(), set())
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        out.put(self.report())

    def report(self) -> dict[str, Any]:
        """What came of the attack, as plain JSON."""
        from bangpae.benchmarks.harness import percentiles

        s = dict(self.stats)
        for key in ("key_requests", "key_errors", "half_open_connect_errors"):
            s[key] = dict(s[key])
        s["key_total"] = sum(s["key_requests"].values())
        p50, p99 = percentiles(self.refusal_ms, 50, 99)
        s["key_answer_p50_ms"], s["key_answer_p99_ms"] = p50, p99
        s["fd_limit"] = self.fd_limit
        del s["half_open_held"]
        return {"attack": s}


def run(commands: Any, out: Any) -> None:
    """The attacker process: each :class:`Attack` from ``commands`` until the next command,
    one after another, until None. Started ahead of time (a process takes a second or
    two to start), it reports ``ready`` at once."""
    from bangpae.benchmarks.w2 import _new_loop

    out.put({"ready": True})
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        while (attack := commands.get()) is not None:
            runner.run(Attacker(attack).run(commands, out))
