"""A tracker connection hears nothing that depends on the protected person.

GT06 and H02 trackers prove who they are by an identifier printed on the device:
anyone who read his monitor's IMEI can log in as it and listen. Two offenders
wear such trackers on one real server; one's victim walks from 5 km to 1 km and
back, the other's stays 5 km away. What their connections receive (content,
count of frames, and when) is compared.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from bangpae.adapters.clock import ManualClock
from bangpae.app import build
from bangpae.config import Settings
from bangpae.domain.audit import AuditEntry
from bangpae.domain.model import Fix, Order, Tier
from bangpae.protocols import gt06, h02
from bangpae.services import queries
from bangpae.services.auth import Principal

from .trackers import HOME, Client, at, serve, stop, until, without_server_clock

# Two devices of one protocol whose identifiers differ only in their last digit.
IDENTS = {"gt06": ("864717003283581", "864717003283582"), "h02": ("4209951296", "4209951297")}


def frames(protocol: str, data: bytes, ident: str) -> list[bytes]:
    """The frames a connection received, its own identifier and the server's clock masked."""
    data = without_server_clock(data).replace(ident.encode(), b"ID")
    split = gt06.split_frames if protocol == "gt06" else h02.split_frames
    out, rest = split(data)
    assert rest == b""
    return out


@pytest.mark.parametrize("workers", [0, 1], ids=["main-process", "intake-worker"])
@pytest.mark.parametrize("protocol", ["gt06", "h02"])
async def test_his_trackers_connection_hears_the_same_bytes_whether_she_is_near_or_far(
    tmp_path: Path, database_url: str, protocol: str, workers: int
) -> None:
    now = time.time()
    ctx = build(Settings(data_dir=tmp_path, database_url=database_url), clock=ManualClock(now))
    s = ctx.store
    cases = []
    for ident in IDENTS[protocol]:
        off, vic = s.add_person("offender", "O"), s.add_person("victim", "V")
        s.add_device(ident, "ankle_monitor", protocol, off)
        phone = s.add_device(f"PHONE-{ident}", "phone", "osmand", vic)
        cases.append((ident, phone, s.add_order(Order(0, off, vic))))
    await ctx.start()
    port, server = await serve(ctx, protocol, workers)
    t0 = now - 60
    try:
        clients = []
        for ident, _, _ in cases:
            c = await Client.open(protocol, port)
            await c.login(ident, *HOME, t0)
            if protocol == "gt06":
                await c.position(ident, *HOME, t0)
            clients.append(c)
        await until(lambda: s.count_fixes() == 2)
        await asyncio.sleep(0.5)  # whatever the server says after a login has arrived

        # She walks from 5 km to 1 km and back; the other victim stays 5 km away (beyond
        # any cell of his within 2 km: her app is told what she is shown, docs/disclosure.md)
        walks = [(5000.0, 5000.0), (1000.0, 5000.0), (5000.0, 5000.0)]
        her_phone = cases[0][1]
        quiet_from = time.monotonic()
        # 4 km a minute: as fast as her trusted track lets a person travel
        times = (now - 115.0, now - 55.0, now + 5.0)
        for i, (near, far) in enumerate(walks):
            if times[i] > ctx.clock.now():
                ctx.clock.advance(times[i] - ctx.clock.now())
            fixes = [
                Fix(cases[0][1], times[i], *at(near, 0.0), 5.0),
                Fix(cases[1][1], times[i], *at(far, 0.0), 5.0),
            ]
            await ctx.ingest.submit(fixes)
            expected = Tier.NOTIFY if near < 2000 else Tier.CLEAR
            assert ctx.engine.tier_of(cases[0][2]) == expected
            assert ctx.engine.tier_of(cases[1][2]) == Tier.CLEAR
            # her own app is still told to report faster while he is near (pursuit mode)
            interval = 15 if expected == Tier.NOTIFY else 60
            await until(lambda: ctx.commands.desired.get(her_phone, 60) == interval)  # noqa: B023
            await asyncio.sleep(0.5)  # a command, if any, crosses the worker's channel
        # Nothing reaches his device while it says nothing, whatever her distance does.
        assert [c.since(quiet_from) for c in clients] == [b"", b""]

        for c, (ident, _, _) in zip(clients, cases, strict=True):
            await c.position(ident, *HOME, t0 + 10)
        await until(lambda: s.count_fixes() == 2 + 6 + 2)
        await asyncio.sleep(0.3)
        heard = [
            frames(protocol, c.data, ident) for c, (ident, _, _) in zip(clients, cases, strict=True)
        ]
        # content and count alike: the connection of the man she approached learns nothing
        assert heard[0] == heard[1]
        # told one fixed interval, once: after the replies to what came with the login,
        # before those to what he sent later
        commands = [f for f in heard[0] if b"TIMER," in f or b",S71," in f]
        assert len(commands) == 1 and (b"TIMER,15#" in commands[0] or b",22,15#" in commands[0])
        assert 1 <= heard[0].index(commands[0]) < len(heard[0]) - 1
        assert len(heard[0]) >= (3 if protocol == "gt06" else 2)  # every frame acknowledged
        for c in clients:
            await c.close()
    finally:
        await stop(server)
        await ctx.stop()


def _quantile(values: list[float], q: float) -> float:
    return sorted(values)[int(q * (len(values) - 1))]


@pytest.mark.parametrize("workers", [0, 1], ids=["main-process", "intake-worker"])
async def test_his_fixes_are_acknowledged_as_fast_whether_she_watches_him_or_not(
    tmp_path: Path, workers: int
) -> None:
    """When she is within 600 m with her app open, each of his fixes is shown to her and
    her read is audited in the fix's own transaction: more to commit before his
    acknowledgement. The acknowledgement comes no sooner than a fixed delay after the
    frame, so how long storing took does not show."""
    delay = 0.1
    now = time.time()
    ctx = build(Settings(data_dir=tmp_path, tracker_ack_delay_s=delay))
    s = ctx.store
    cases = []
    for ident in IDENTS["gt06"]:
        off, vic = s.add_person("offender", "O"), s.add_person("victim", "V")
        s.add_device(ident, "ankle_monitor", "gt06", off)
        phone = s.add_device(f"PHONE-{ident}", "phone", "osmand", vic)
        cases.append((ident, phone, s.add_order(Order(0, off, vic)), vic))
    await ctx.start()
    # her app's live stream, as api.streams opens it: each batch touching her order
    # computes what she is shown and audits her reads in that batch's transaction
    ident, phone, oid, vic = cases[0]
    who = Principal(1, "v", "victim", vic)
    orders = [s.get_order(oid)]

    def view(at_: float) -> tuple[dict[str, Any], list[AuditEntry]]:
        status, reads = queries.victim_view(ctx.engine, who, at_, orders)
        return status, queries.victim_reads(who, reads, at_)

    stream = ctx.ingest.live.watch({oid}, view)
    port, server = await serve(ctx, "gt06", workers)
    n = 40
    t0 = now - n - 10
    try:
        for t in (t0 - 6, t0):  # two agreeing reports of hers: her track is confirmed
            await ctx.ingest.submit(
                [Fix(cases[0][1], t, *HOME, 5.0), Fix(cases[1][1], t, *HOME, 5.0)]
            )
        clients = []
        for ident, _, _, _ in cases:
            c = await Client.open("gt06", port)
            await c.login(ident, *HOME, t0)
            clients.append(c)
        await until(lambda: all(len(c.data) == 10 + 24 for c in clients))
        audited = s.audit_head()
        latency: list[list[float]] = [[], []]
        for i in range(n):
            for k, (c, (ident, _, _, _)) in enumerate(zip(clients, cases, strict=True)):
                # his fix: 300-320 m from her (she sees him), or 5 km from the other victim
                d = (300.0 if k == 0 else 5000.0) + 20.0 * (i % 2)
                before = len(c.data)
                sent = time.monotonic()
                await c.position(ident, *at(d), t0 + 1 + i)
                await until(lambda c=c, before=before: len(c.data) == before + 10)  # type: ignore[misc]
                latency[k].append(c.received[-1][0] - sent)
                while not stream.empty():
                    stream.get_nowait()
        assert ctx.engine.tier_of(cases[0][2]) == Tier.REVEAL
        assert ctx.engine.tier_of(cases[1][2]) == Tier.CLEAR
        head = s.audit_head()
        assert head is not None and head[0] >= (audited[0] if audited else 0) + n  # her reads
        # never sooner than the delay, and as soon whether or not her read was committed
        assert min(latency[0] + latency[1]) >= delay - 0.001  # the loop's clock resolution
        watched, unwatched = latency
        for q in (0.1, 0.25, 0.5):
            difference = _quantile(watched, q) - _quantile(unwatched, q)
            assert abs(difference) < 0.001, (q, difference)
        for c in clients:
            await c.close()
    finally:
        ctx.ingest.live.unwatch(stream)
        await stop(server)
        await ctx.stop()
