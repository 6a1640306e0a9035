"""A tracker client for tests: GT06 and H02 frames as a device writes them, over real sockets."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

from geographiclib.geodesic import Geodesic

from bangpae.adapters.listeners.intake_pool import WorkerPool
from bangpae.adapters.listeners.tcp import start_tcp
from bangpae.protocols.gt06 import crc_itu
from bangpae.protocols.h02 import TCP as H02
from tests.scenario import HOME

IMEI = {"gt06": "864717003283581", "h02": "4209951296"}


def at(d: float, bearing: float = 90.0) -> tuple[float, float]:
    """The point ``d`` metres from HOME."""
    g = Geodesic.WGS84.Direct(HOME[0], HOME[1], bearing, d)
    return g["lat2"], g["lon2"]


def gt06_frame(proto: int, content: bytes, serial: int) -> bytes:
    body = bytes([len(content) + 5, proto]) + content + (serial & 0xFFFF).to_bytes(2, "big")
    return b"\x78\x78" + body + crc_itu(body).to_bytes(2, "big") + b"\r\n"


def gt06_login(imei: str, serial: int = 1) -> bytes:
    return gt06_frame(0x01, bytes.fromhex("0" + imei), serial)


def gt06_position(lat: float, lon: float, t: float, serial: int) -> bytes:
    g = time.gmtime(t)
    gps = bytes([g.tm_year - 2000, g.tm_mon, g.tm_mday, g.tm_hour, g.tm_min, g.tm_sec, 0xC8])
    gps += round(lat * 1_800_000).to_bytes(4, "big") + round(lon * 1_800_000).to_bytes(4, "big")
    gps += bytes([0]) + (0x1400 | 90).to_bytes(2, "big")  # positioned, north, east
    return gt06_frame(0x12, gps + bytes.fromhex("01cc00287d001fb8"), serial)


def h02_position(ident: str, lat: float, lon: float, t: float) -> bytes:
    g = time.gmtime(t)
    lat_s = f"{int(lat)}{(lat % 1) * 60:07.4f}"
    lon_s = f"{int(lon):03d}{(lon % 1) * 60:07.4f}"
    return (
        f"*HQ,{ident},V1,{time.strftime('%H%M%S', g)},A,{lat_s},N,{lon_s},E,0.00,0,"
        f"{time.strftime('%d%m%y', g)},FFFFFBFF#"
    ).encode()


# The server's clock in H02 replies (V4's stamp, S71's time): the time of day, not about her.
_H02_CLOCK = re.compile(rb"(?<=,V4,V1,)\d{14}(?=#)|(?<=,S71,)\d{6}(?=,)")


def without_server_clock(data: bytes) -> bytes:
    """H02 replies carry the server's clock; what else they carry is compared."""
    return _H02_CLOCK.sub(b"CLOCK", data)


@dataclass
class Client:
    """One tracker connection that keeps every byte the server sends it, with its time."""

    protocol: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    received: list[tuple[float, bytes]] = field(default_factory=list)
    serial: int = 1
    _task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, protocol: str, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        c = cls(protocol, reader, writer)
        c._task = asyncio.create_task(c._read())
        return c

    async def _read(self) -> None:
        while data := await self.reader.read(4096):
            self.received.append((time.monotonic(), data))

    @property
    def data(self) -> bytes:
        return b"".join(d for _, d in self.received)

    def since(self, t: float) -> bytes:
        return b"".join(d for when, d in self.received if when >= t)

    @property
    def closed(self) -> bool:
        return self._task is not None and self._task.done()

    async def send(self, frame: bytes) -> None:
        self.writer.write(frame)
        await self.writer.drain()

    async def login(self, ident: str, lat: float, lon: float, t: float) -> None:
        """GT06: the login frame; H02: its first position names it."""
        if self.protocol == "gt06":
            await self.send(gt06_login(ident, self.serial))
            self.serial += 1
        else:
            await self.send(h02_position(ident, lat, lon, t))

    async def position(self, ident: str, lat: float, lon: float, t: float) -> None:
        if self.protocol == "gt06":
            await self.send(gt06_position(lat, lon, t, self.serial))
            self.serial += 1
        else:
            await self.send(h02_position(ident, lat, lon, t))

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()
        if self._task is not None:
            await self._task


async def until(condition: object, within_s: float = 5.0) -> None:
    """Wait for an effect of another task or process."""
    async with asyncio.timeout(within_s):
        while not condition():  # type: ignore[operator]  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.01)


async def serve(
    ctx: object, protocol: str, workers: int
) -> tuple[int, WorkerPool | asyncio.Server]:
    """The protocol's listener in this process (workers 0) or in intake worker processes."""
    from bangpae.protocols.gt06 import TCP as GT06

    if workers:
        pool = WorkerPool(ctx, workers, [(protocol, "127.0.0.1", 0)])
        await pool.start()
        return pool.ports[protocol], pool
    server = await start_tcp(ctx, GT06 if protocol == "gt06" else H02, "127.0.0.1", 0)
    return server.sockets[0].getsockname()[1], server


async def stop(server: WorkerPool | asyncio.Server) -> None:
    if isinstance(server, WorkerPool):
        await server.stop()
    else:
        server.close()
