"""The good devices of the flood and soak benchmarks: each reports about once a second
over OsmAnd (keep-alive HTTP, with its key), GT06 or H02 (one TCP connection each), one
fix at a time, and every fix acknowledged is remembered as (device, fix time).

Positions walk back and forth along W1's walk (no jumps); fix times are whole seconds,
unique per device, close to the wall clock. TCP acknowledgements are held back by the
server by design (``tracker_ack_delay_s``, 100 ms), so TCP latencies start there.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np

from bangpae.benchmarks.harness import (
    GOOD_KEY,
    TIMEOUT_S,
    Samples,
    Server,
    close,
    exchange,
    percentiles,
)
from bangpae.benchmarks.w2 import _gt06_frame, _gt06_positions
from bangpae.protocols import gt06, h02

PROTOCOLS = ("osmand", "gt06", "h02")  # device j reports over PROTOCOLS[(j - 1) % 3]


class _Link(asyncio.Protocol):
    """A tracker's TCP connection: one frame out, wait for its acknowledgement."""

    def __init__(self, split: Callable[[bytes], Any], is_ack: Callable[[bytes], bool]) -> None:
        self.split, self.is_ack = split, is_ack
        self.buffer = b""
        self.waiter: asyncio.Future[float] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        frames, self.buffer = self.split(self.buffer + data)
        for frame in frames:  # the server may send commands too: only acks count
            if self.is_ack(frame) and self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(time.monotonic())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed by the server"))

    async def send(self, frame: bytes) -> float:
        """Write a frame; when its acknowledgement came."""
        assert self.transport is not None
        if self.transport.is_closing():
            raise ConnectionError("closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(frame)
        return await asyncio.wait_for(self.waiter, TIMEOUT_S)

    def close(self) -> None:
        """Close the connection."""
        if self.transport is not None:
            self.transport.close()


def _gt06_ack(frame: bytes) -> bool:
    return frame[:2] == b"\x78\x78" and len(frame) > 3 and frame[3] in (0x01, 0x12)


def _h02_ack(frame: bytes) -> bool:
    return b",V4," in frame


def _h02_position(identifier: str, lat: float, lon: float, t: int) -> bytes:
    def coord(x: float, width: int) -> str:
        deg = int(abs(x))
        return f"{deg:0{width}d}{(abs(x) - deg) * 60:07.4f}"

    when = datetime.fromtimestamp(t, UTC)
    return (
        f"*HQ,{identifier},V1,{when:%H%M%S},A,{coord(lat, 2)},{'N' if lat >= 0 else 'S'},"
        f"{coord(lon, 3)},{'E' if lon >= 0 else 'W'},000.00,000,{when:%d%m%y},FFFFFBFF#"
    ).encode()


class GoodDevices:
    """``n`` seeded devices reporting every ``interval_s`` over OsmAnd, GT06 and H02, one
    fix at a time each, remembering every acknowledged (device, fix time)."""

    def __init__(self, server: Server, n: int, interval_s: float) -> None:
        if interval_s < 1.0:
            raise ValueError("fix times are whole seconds: report at most once a second")
        self.server, self.n, self.interval_s = server, n, interval_s
        self.acks = Samples()  # ack latency in ms, tagged by protocol index
        self.acked: dict[int, array[int]] = {j: array("q") for j in range(1, n + 1)}
        self.errors = Counter[str]()  # "protocol:reason"
        self.warm_up: dict[str, Any] = {}  # until each device was first acknowledged
        self.error_times = Samples()
        self.late = Samples()  # reports skipped because the previous one took a whole interval
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.first_acked: asyncio.Event = asyncio.Event()
        self._unconfirmed = set(range(1, n + 1))

    def _position(self, j: int, tick: int) -> tuple[float, float]:
        w = self.server.walk
        span = w.lat.shape[0] - 1
        i = tick % (2 * span)  # back and forth along W1's walk: no jumps
        i = i if i <= span else 2 * span - i
        return float(w.lat[i, j - 1]), float(w.lon[i, j - 1])

    def start(self) -> None:
        """Start every device, spread evenly over one interval."""
        for j in range(1, self.n + 1):
            self._tasks.append(asyncio.create_task(self._device(j)))

    async def stop(self) -> None:
        """Stop reporting; a report under way is finished (or times out) first."""
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def _acked(self, j: int, proto: int, t: int, sent: float, at: float) -> None:
        self.acked[j].append(t)
        self.acks.add(at, 1000.0 * (at - sent), proto)
        self._unconfirmed.discard(j)
        if not self._unconfirmed:
            self.first_acked.set()

    def _failed(self, proto: str, reason: str) -> None:
        self.errors[f"{proto}:{reason}"] += 1
        self.error_times.add(time.monotonic(), 1.0, PROTOCOLS.index(proto))

    async def _device(self, j: int) -> None:
        proto = PROTOCOLS[(j - 1) % len(PROTOCOLS)]
        ident = self.server.identifier(j)
        start = time.monotonic() + self.interval_s * (j - 1) / self.n
        tick, last_t = 0, 0
        conn: Any = None
        while not self._stop.is_set():
            due = start + tick * self.interval_s
            now = time.monotonic()
            if now < due:
                try:
                    await asyncio.wait_for(self._stop.wait(), due - now)
                    break
                except TimeoutError:
                    pass
            elif now - due >= self.interval_s:
                skip = int((now - due) / self.interval_s)
                self.late.add(now, skip)
                tick += skip
            t = max(int(time.time()), last_t + 1)  # unique per device: (device, time) names it
            lat, lon = self._position(j, tick)
            tick += 1
            try:
                conn, sent, acked = await getattr(self, f"_{proto}")(conn, ident, lat, lon, t)
            except (OSError, EOFError, TimeoutError, asyncio.IncompleteReadError) as exc:
                self._failed(proto, type(exc).__name__)
                self._close(conn)
                conn = None
                continue
            except _Refused as exc:
                self._failed(proto, str(exc))
                continue
            last_t = t
            self._acked(j, PROTOCOLS.index(proto), t, sent, acked)
        self._close(conn)

    @staticmethod
    def _close(conn: Any) -> None:
        if isinstance(conn, _Link):
            conn.close()
        else:
            close(conn)

    async def _osmand(
        self, conn: Any, ident: str, lat: float, lon: float, t: int
    ) -> tuple[Any, float, float]:
        request = (
            f"GET /?id={ident}&lat={lat:.6f}&lon={lon:.6f}&timestamp={t}&accuracy=5"
            f"&key={GOOD_KEY} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        ).encode()
        for attempt in (0, 1):
            fresh = conn is None
            if fresh:
                conn = await asyncio.open_connection("127.0.0.1", self.server.osmand_port)
            sent = time.monotonic()
            try:
                status, _, closing = await asyncio.wait_for(
                    exchange(conn[0], conn[1], request), TIMEOUT_S
                )
            except (ConnectionError, asyncio.IncompleteReadError):
                self._close(conn)
                conn = None
                if fresh or attempt:  # a kept-alive connection may have been closed: once more
                    raise
                continue
            acked = time.monotonic()
            if closing:
                self._close(conn)
                conn = None
            if status != 200:
                raise _Refused(f"http_{status}")
            return conn, sent, acked
        raise AssertionError("unreachable")

    async def _tcp(
        self, conn: _Link | None, port: int, split: Any, is_ack: Any, login: bytes | None
    ) -> _Link:
        if conn is not None and conn.transport is not None and not conn.transport.is_closing():
            return conn
        loop = asyncio.get_running_loop()
        _, link = await loop.create_connection(lambda: _Link(split, is_ack), "127.0.0.1", port)
        if login is not None:
            try:
                await link.send(login)
            except BaseException:
                link.close()
                raise
        return link

    async def _gt06(
        self, conn: Any, ident: str, lat: float, lon: float, t: int
    ) -> tuple[Any, float, float]:
        login = _gt06_frame(0x01, bytes.fromhex(f"0{ident}"), 1)
        conn = await self._tcp(conn, self.server.gt06_port, gt06.split_frames, _gt06_ack, login)
        frame = _gt06_positions(np.array([[lat]]), np.array([[lon]]), float(t))[0][0]
        sent = time.monotonic()
        return conn, sent, await conn.send(frame)

    async def _h02(
        self, conn: Any, ident: str, lat: float, lon: float, t: int
    ) -> tuple[Any, float, float]:
        conn = await self._tcp(conn, self.server.h02_port, h02.split_frames, _h02_ack, None)
        sent = time.monotonic()
        return conn, sent, await conn.send(_h02_position(ident, lat, lon, t))

    def acked_set(self) -> set[tuple[int, int]]:
        """Every acknowledged fix as (device id, fix time)."""
        return {(j, t) for j, times in self.acked.items() for t in times}

    def window(self, t0: float, t1: float = float("inf")) -> dict[str, Any]:
        """Acknowledgements and errors in [t0, t1): counts and ack latency, also by protocol."""
        every = self.acks.since(t0, t1)
        p50, p99 = percentiles(every, 50, 99)
        out: dict[str, Any] = {
            "good_acked": len(every),
            "good_errors": len(self.error_times.since(t0, t1)),
            "good_late_ticks": int(self.late.since(t0, t1).sum()),
            "good_ack_p50_ms": p50,
            "good_ack_p99_ms": p99,
        }
        for i, proto in enumerate(PROTOCOLS):
            ms = self.acks.since(t0, t1, i)
            p50, p99 = percentiles(ms, 50, 99)
            out[f"good_{proto}"] = {
                "acked": len(ms),
                "errors": len(self.error_times.since(t0, t1, i)),
                "p50_ms": p50,
                "p99_ms": p99,
            }
        return out


class _Refused(Exception):
    """The server answered a good device with something else than an acknowledgement."""
