"""Two live connections with one tracker's identifier: a cloned device.

A clone logs in with his monitor's IMEI while the monitor itself is connected and
reporting: one critical incident with both peers' addresses and times, no command
to either connection, every fix of both stored. A monitor that reconnects while the
server still holds its dead connection is no incident: the dead one is closed.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from bangpae.adapters.clock import ManualClock
from bangpae.adapters.listeners.intake_pool import WorkerPool
from bangpae.app import build
from bangpae.config import Settings
from bangpae.domain.model import Fix, Order
from bangpae.protocols import gt06

from .trackers import HOME, IMEI, Client, at, gt06_login, serve, stop, until

LOGIN_ACK = gt06.ack(gt06.decode(gt06_login(IMEI["gt06"], 1)))
TIMER = gt06.interval_command(15)


def _frames(data: bytes) -> list[bytes]:
    frames, rest = gt06.split_frames(data)
    assert rest == b""
    return frames


def _worker_of(pool: WorkerPool, port: int) -> int | None:
    """The index of the worker holding the connection from this local port."""
    for w in pool.workers:
        for _, link in w.proxies.values():
            if link.address.endswith(f":{port}"):
                return w.index
    return None


async def _case(tmp_path: Path, database_url: str) -> tuple[Any, int, int, int]:
    now = time.time()
    ctx = build(Settings(data_dir=tmp_path, database_url=database_url), clock=ManualClock(now))
    s = ctx.store
    off, vic = s.add_person("offender", "O"), s.add_person("victim", "V")
    ankle = s.add_device(IMEI["gt06"], "ankle_monitor", "gt06", off)
    phone = s.add_device("PHONE", "phone", "osmand", vic)
    s.add_order(Order(0, off, vic))
    return ctx, off, ankle, phone


@pytest.mark.parametrize(
    "workers", [0, 1, 2], ids=["main-process", "one-worker", "two-workers-apart"]
)
async def test_a_clone_listening_beside_his_monitor_opens_one_critical_incident(
    tmp_path: Path, database_url: str, workers: int
) -> None:
    ctx, off, ankle, phone = await _case(tmp_path, database_url)
    ctx.trackers.grace_s = 0.3
    ctx.trackers.supersede_s = 60.0
    await ctx.start()
    ops = ctx.bus.subscribe()  # what the control centre's live stream is given
    port, server = await serve(ctx, "gt06", workers)
    t0 = time.time() - 120
    s = ctx.store
    try:
        monitor = await Client.open("gt06", port)
        await monitor.login(IMEI["gt06"], *HOME, t0)
        await until(lambda: monitor.data == LOGIN_ACK + TIMER)  # alone: told the interval
        await monitor.position(IMEI["gt06"], *HOME, t0 + 1)
        await until(lambda: s.count_fixes() == 1)

        while True:  # the clone; with two workers, until it lands on the other one
            clone = await Client.open("gt06", port)
            await clone.login(IMEI["gt06"], *HOME, t0)
            await until(lambda: clone.data == LOGIN_ACK)  # noqa: B023
            await until(lambda: ctx.trackers.connections(ankle) == 2)
            if workers < 2:
                break
            mine = clone.writer.get_extra_info("sockname")[1]
            theirs = monitor.writer.get_extra_info("sockname")[1]
            assert isinstance(server, WorkerPool)
            if _worker_of(server, mine) != _worker_of(server, theirs):
                break
            await clone.close()
            await until(lambda: ctx.trackers.connections(ankle) == 1)
        assert not s.incidents(status="open")  # a second login alone proves nothing yet

        await asyncio.sleep(0.4)  # past the grace for what was in flight
        await monitor.position(IMEI["gt06"], *HOME, t0 + 2)  # his monitor keeps reporting
        await clone.position(IMEI["gt06"], *at(3000), t0 + 3)  # and the clone may lie
        await until(lambda: any(i.kind == "device_cloned" for i in s.incidents(status="open")))
        for i in range(3):  # the episode goes on: still one incident, one event
            await monitor.position(IMEI["gt06"], *HOME, t0 + 4 + i)
            await asyncio.sleep(0.05)
        await until(lambda: s.count_fixes() == 1 + 2 + 3)  # both connections' fixes are kept

        # she comes near him and goes away: neither connection is told anything
        await ctx.ingest.submit([Fix(phone, t0 + 10, *at(1000, 0.0), 5.0)])
        await until(lambda: ctx.commands.desired.get(phone) == 15)  # her app still is
        await ctx.ingest.submit([Fix(phone, t0 + 100, *at(5000, 0.0), 5.0)])  # beyond any cell
        await until(lambda: ctx.commands.desired.get(phone) == 60)
        await asyncio.sleep(0.3)

        # (the clone's lie also shows as his position jumping: the engine's own incident)
        opened = [i for i in s.incidents(status="open") if i.kind != "position_jump"]
        assert [(i.kind, i.priority, i.person_id, i.order_id) for i in opened] == [
            ("device_cloned", "critical", off, None)
        ]
        timeline = s.get_incident(opened[0].id).timeline
        assert [e["note"] for e in timeline] == ["device_cloned"]
        evidence = timeline[0]["data"]["data"]
        peers = [c["peer"] for c in evidence["connections"]]
        ports = [c.writer.get_extra_info("sockname")[1] for c in (monitor, clone)]
        assert peers == [f"127.0.0.1:{p}" for p in ports]  # in the order they logged in
        first, second = evidence["connections"]
        assert first["logged_in_at"] <= second["logged_in_at"] == evidence["episode_started_at"]
        assert first["heard_at"] is not None and second["heard_at"] is None
        assert evidence["identifier"] == IMEI["gt06"]
        published = []
        while not ops.empty():
            published.append(ops.get_nowait())
        assert [e.id for e in published if e.kind == "device_cloned"] == [timeline[0]["event_id"]]

        # only acknowledgements of their own frames: the monitor's interval came before
        assert _frames(monitor.data)[:2] == [LOGIN_ACK, TIMER]
        assert TIMER not in _frames(monitor.data)[2:]
        assert len(_frames(monitor.data)) == 2 + 5  # its five positions, acknowledged
        assert _frames(clone.data)[0] == LOGIN_ACK and TIMER not in _frames(clone.data)
        assert len(_frames(clone.data)) == 2
        await monitor.close()
        await clone.close()
    finally:
        await stop(server)
        await ctx.stop()


@pytest.mark.parametrize("workers", [0, 1], ids=["main-process", "intake-worker"])
async def test_a_monitor_reconnecting_while_its_dead_connection_lingers_is_no_incident(
    tmp_path: Path, database_url: str, workers: int
) -> None:
    ctx, _, ankle, _ = await _case(tmp_path, database_url)
    ctx.trackers.grace_s = 0.3
    ctx.trackers.supersede_s = 1.0
    await ctx.start()
    port, server = await serve(ctx, "gt06", workers)
    t0 = time.time() - 120
    s = ctx.store
    try:
        dead = await Client.open("gt06", port)  # the network dropped it: it says no more
        await dead.login(IMEI["gt06"], *HOME, t0)
        await until(lambda: dead.data == LOGIN_ACK + TIMER)
        fresh = await Client.open("gt06", port)
        await fresh.login(IMEI["gt06"], *HOME, t0)
        await until(lambda: ctx.trackers.connections(ankle) == 2)
        for i in range(5):  # the monitor reports on its new connection, and is stored
            await fresh.position(IMEI["gt06"], *HOME, t0 + 1 + i)
            await asyncio.sleep(0.1)
        await until(lambda: dead.closed)  # the server closed the silent older one
        await until(lambda: ctx.trackers.connections(ankle) == 1)
        await until(lambda: TIMER in fresh.data)  # then told the interval it was owed
        assert s.count_fixes() == 5
        assert not s.incidents(status="open")
        frames = _frames(fresh.data)
        assert frames[0] == LOGIN_ACK and frames.count(TIMER) == 1 and len(frames) == 1 + 5 + 1
        await fresh.close()
    finally:
        await stop(server)
        await ctx.stop()


@pytest.mark.parametrize("workers", [0, 1], ids=["main-process", "intake-worker"])
async def test_a_clone_that_logged_in_first_is_found_when_it_speaks_after_his_monitor(
    tmp_path: Path, database_url: str, workers: int
) -> None:
    """The clone holds the older connection (his monitor was off) and keeps sending."""
    ctx, off, ankle, _ = await _case(tmp_path, database_url)
    ctx.trackers.grace_s = 0.3
    ctx.trackers.supersede_s = 60.0
    await ctx.start()
    port, server = await serve(ctx, "gt06", workers)
    t0 = time.time() - 120
    s = ctx.store
    try:
        clone = await Client.open("gt06", port)
        await clone.login(IMEI["gt06"], *HOME, t0)
        await until(lambda: clone.data == LOGIN_ACK + TIMER)  # alone: a login like any other
        monitor = await Client.open("gt06", port)
        await monitor.login(IMEI["gt06"], *HOME, t0)
        await until(lambda: ctx.trackers.connections(ankle) == 2)
        await monitor.position(IMEI["gt06"], *HOME, t0 + 1)
        await asyncio.sleep(0.4)
        await clone.position(IMEI["gt06"], *HOME, t0 + 2)
        await until(lambda: any(i.kind == "device_cloned" for i in s.incidents(status="open")))
        [incident] = s.incidents(status="open")
        assert (incident.priority, incident.person_id) == ("critical", off)
        await asyncio.sleep(0.2)
        frames = _frames(monitor.data)  # the login's and the position's acknowledgements
        assert frames[0] == LOGIN_ACK and [f[:6] for f in frames[1:]] == [b"xx\x05\x12\x00\x02"]
        await clone.close()
        await until(lambda: ctx.trackers.connections(ankle) == 1)
        await asyncio.sleep(0.2)
        # after a clone, the survivor is not commanded: it is told again at its next login
        assert TIMER not in monitor.data
        await monitor.close()
    finally:
        await stop(server)
        await ctx.stop()


@pytest.mark.parametrize("workers", [0, 1], ids=["main-process", "intake-worker"])
async def test_an_h02_clone_is_found_the_same_way(
    tmp_path: Path, database_url: str, workers: int
) -> None:
    """H02 has no login: a connection is bound by its first frame, then the same rules."""
    now = time.time()
    ctx = build(Settings(data_dir=tmp_path, database_url=database_url), clock=ManualClock(now))
    s = ctx.store
    off = s.add_person("offender", "O")
    watch = s.add_device(IMEI["h02"], "ankle_monitor", "h02", off)
    ctx.trackers.grace_s = 0.3
    await ctx.start()
    port, server = await serve(ctx, "h02", workers)
    t0 = now - 120
    try:
        monitor = await Client.open("h02", port)
        await monitor.login(IMEI["h02"], *HOME, t0)
        await until(lambda: b",22,15#" in monitor.data)
        clone = await Client.open("h02", port)
        await clone.login(IMEI["h02"], *HOME, t0 + 1)
        await until(lambda: ctx.trackers.connections(watch) == 2)
        await asyncio.sleep(0.4)
        await monitor.position(IMEI["h02"], *HOME, t0 + 2)
        await until(lambda: [i.kind for i in s.incidents(status="open")] == ["device_cloned"])
        await until(lambda: monitor.data.count(b",V4,V1,") == 2)
        assert b",S71," not in clone.data and clone.data.count(b",V4,V1,") == 1
        assert monitor.data.count(b",S71,") == 1
        await monitor.close()
        await clone.close()
    finally:
        await stop(server)
        await ctx.stop()
