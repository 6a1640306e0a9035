"""Pursuit mode: within the notify radius both parties are asked to report every 15 s."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from geographiclib.geodesic import Geodesic

from bangpae.adapters.clock import ManualClock
from bangpae.adapters.listeners.tcp import H02, start_tcp
from bangpae.adapters.listeners.workers import WorkerPool
from bangpae.app import build
from bangpae.config import Settings
from bangpae.domain.model import Fix, Order, Tier
from bangpae.domain.pursuit import report_interval_s

HOME = (37.5663, 126.9779)


def at(d: float) -> tuple[float, float]:
    g = Geodesic.WGS84.Direct(HOME[0], HOME[1], 90.0, d)
    return g["lat2"], g["lon2"]


async def _until(condition: Callable[[], bool], within_s: float = 5.0) -> None:
    """Wait for an effect of another task (the hub commands one device after another)."""
    async with asyncio.timeout(within_s):
        while not condition():  # noqa: ASYNC110 - the effect has no event to wait on
            await asyncio.sleep(0.01)


def test_the_interval_is_fast_whenever_any_order_is_near() -> None:
    assert report_interval_s([Tier.CLEAR]) == 60
    assert report_interval_s([Tier.CLEAR, Tier.NOTIFY]) == 15
    assert report_interval_s([Tier.UNCERTAIN]) == 15


@pytest.mark.parametrize("workers", [0, 1], ids=["main-process", "intake-worker"])
async def test_an_h02_tracker_is_told_to_report_every_15_s_while_he_is_near(
    tmp_path: Path, workers: int
) -> None:
    """Commands reach the device from the main process, or through the worker holding it."""
    now = time.time()
    ctx = build(Settings(data_dir=tmp_path), clock=ManualClock(now))
    s = ctx.store
    off, vic = s.add_person("offender", "O"), s.add_person("victim", "V")
    s.add_device("4209951296", "ankle_monitor", "h02", off)
    phone = s.add_device("PHONE", "phone", "osmand", vic)
    s.add_order(Order(0, off, vic))
    await ctx.start()
    server: asyncio.Server | WorkerPool
    if workers:
        server = WorkerPool(ctx, workers, [("h02", "127.0.0.1", 0)])
        await server.start()
        port = server.ports["h02"]
    else:
        server = await start_tcp(ctx, H02, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def report(d: float, t: float) -> None:
            lat, lon = at(d)
            hhmmss = time.strftime("%H%M%S", time.gmtime(t))
            ddmmyy = time.strftime("%d%m%y", time.gmtime(t))
            lat_s = f"{int(lat)}{(lat % 1) * 60:07.4f}"
            lon_s = f"{int(lon):03d}{(lon % 1) * 60:07.4f}"
            writer.write(
                f"*HQ,4209951296,V1,{hhmmss},A,{lat_s},N,{lon_s},E,0.00,0,"
                f"{ddmmyy},FFFFFBFF#".encode()
            )
            await writer.drain()
            reply = await asyncio.wait_for(reader.readuntil(b"#"), 5)
            assert b",V4,V1," in reply

        await ctx.ingest.submit([Fix(phone, now - 10, *HOME, 5.0)])
        await report(5000, now - 9)
        await report(1500, now - 8)  # notify: both parties go fast
        command = await asyncio.wait_for(reader.readuntil(b"#"), 5)
        assert command.startswith(b"*HQ,4209951296,S71,") and command.endswith(b",22,15#")
        await _until(lambda: ctx.commands.desired.get(phone) == 15)  # her app, when it connects
        await report(4000, now - 7)  # clear again: back to normal
        await asyncio.sleep(0.2)
        command = await asyncio.wait_for(reader.readuntil(b"#"), 5)
        assert command.endswith(b",22,60#")
        await _until(lambda: ctx.commands.desired.get(phone) == 60)
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(0.05)
    finally:
        if isinstance(server, WorkerPool):
            await server.stop()
        else:
            server.close()
        await ctx.stop()
