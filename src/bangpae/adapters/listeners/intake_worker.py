"""Intake workers: processes that serve the TCP trackers and hand their fixes to the core.

``bangpae serve --tcp-workers N`` runs the GT06 and H02 listeners in N worker
processes. Each reads, frames, decodes and acknowledges on a core of its own;
the main process keeps the one engine and the one writer, so every fix is still
decided and stored in one place, and a device is still acknowledged only once
its fix is on disk: the worker waits for the main process to say so.

A worker holds no database, no keys and no secrets. It learns whether a device is
registered by asking the main process, which accepts fixes from a worker only for
devices it confirmed to that worker, and checks every field again. A worker that
dies takes only its own connections with it; the main process starts another.

The channel between them is a socketpair carrying messages of a 5-byte header
(payload length, kind) and a payload:

    worker -> main   F  fixes     u32 request id, then fix records (FIX_RECORD)
                     D  device    u32 request id, identifier (UTF-8)
                     K  known     as D, answered from the registry in memory only
                     B  bound     u32 connection token, i64 device id, peer address (UTF-8)
                     U  unbound   u32 connection token
                     H  heard     u32 connection token: a frame arrived on a watched one
                     M  metrics   JSON: the worker's counters, whole
                     N  budgets   JSON: per listener, the connections it holds, refused
                                  and timed out (docs/robustness.md)
    main -> worker   A  stored    u32 request id, u8 1 (stored) or 0 (not stored)
                     R  device    u32 request id, i64 device id (-1: unknown), u8 lenient
                     C  command   u32 connection token, u32 reporting interval (s)
                     W  watch     u32 connection token: report its next frame (H)
                     X  drop      u32 connection token: close it

The tracker sessions (:mod:`bangpae.services.trackers`) live in the main process
alone, so connections of one tracker are seen together whichever worker holds
each; a worker only carries out C, W and X for the connections it holds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import socket
import struct
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import count
from typing import Any

from prometheus_client import CollectorRegistry

from bangpae.adapters.clock import SystemClock
from bangpae.adapters.listeners.budget import REFUSED, TIMED_OUT, ConnectionBudget, Snapshot
from bangpae.adapters.listeners.tcp import ACK_DELAY_S, BACKLOG, LOGIN_TIMEOUT_S, TcpListener
from bangpae.adapters.logsafe import install as redact_logs
from bangpae.adapters.loop import run as run_loop
from bangpae.domain.batch import ALARM_SETS, RECORD, PackedFixes, alarm_mask
from bangpae.domain.model import Fix
from bangpae.protocols.registry import TCP_PROTOCOLS
from bangpae.services.devicekeys import Known
from bangpae.services.trackers import Link

log = logging.getLogger(__name__)

HEADER = struct.Struct("<IB")
MAX_MESSAGE = 16 * 1024 * 1024
U32 = struct.Struct("<I")
ACK = struct.Struct("<IB")
DEVICE_REPLY = struct.Struct("<IqBd")  # request, device (-1: none), lenient, registered (NaN)
BOUND = struct.Struct("<Iq")
COMMAND = struct.Struct("<II")
# device id, fix time, lat, lon, accuracy, speed, heading, battery, valid, alarms, received
# (the domain's batch.RECORD: an absent optional value travels as NaN, alarms as a bit set)
FIX_RECORD = struct.Struct("<qdddddddBHd")
assert RECORD.itemsize == FIX_RECORD.size  # the records the main process reads as columns
METRICS_EVERY_S = 0.25
NAN = math.nan
# A device as the main process confirms it: its id, CRC leniency, when it was registered.
Found = tuple[int, bool, float | None]


def message(kind: bytes, payload: bytes) -> bytes:
    """One message on the channel."""
    return HEADER.pack(len(payload), kind[0]) + payload


def pack_fix(f: Fix) -> bytes:
    """A fix as its record; ValueError for an alarm the channel does not know."""
    return FIX_RECORD.pack(
        f.device_id,
        f.fix_time,
        f.lat,
        f.lon,
        NAN if f.accuracy_m is None else f.accuracy_m,
        NAN if f.speed_mps is None else f.speed_mps,
        NAN if f.heading_deg is None else f.heading_deg,
        NAN if f.battery_pct is None else f.battery_pct,
        1 if f.valid else 0,
        alarm_mask(f.alarms),
        NAN if f.received_at is None else f.received_at,
    )


class ChannelError(Exception):
    """A message that breaks the channel's rules: the sender is not to be trusted."""


def budgets_payload(budgets: dict[str, ConnectionBudget]) -> bytes:
    """The N message's payload: each listener's connections held, refused and timed out."""
    return json.dumps(
        {
            name: {"open": b.open, "refused": b.refused, "timed_out": b.timed_out}
            for name, b in budgets.items()
        },
        sort_keys=True,
    ).encode()


def unpack_budgets(payload: bytes, listeners: Iterable[str]) -> dict[str, Snapshot]:
    """An N message of a worker serving ``listeners`` (its caps are not its to say: 0);
    ChannelError for anything else."""
    data = json.loads(payload)
    if not isinstance(data, dict):
        raise ChannelError("budgets are not an object")
    out = {}
    known = set(listeners)
    for name, b in data.items():
        if name not in known or not isinstance(b, dict):
            raise ChannelError(f"a budget of a listener the worker does not serve: {name!r}")
        held, refused, timed_out = b.get("open"), b.get("refused"), b.get("timed_out")
        if not (_count(held) and _counts(refused, REFUSED) and _counts(timed_out, TIMED_OUT)):
            raise ChannelError(f"a malformed budget of {name}")
        out[name] = Snapshot(held, 0, 0, refused, timed_out)  # type: ignore[arg-type]
    return out


def _count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**53


def _counts(v: object, reasons: tuple[str, ...]) -> bool:
    return isinstance(v, dict) and all(k in reasons and _count(n) for k, n in v.items())


def unpack_fixes(payload: bytes | memoryview, allowed: Callable[[int], bool]) -> PackedFixes:
    """Fix records, each checked again; ChannelError on the first bad one.

    They stay packed: the batch they join is turned into columns at once.
    """
    if len(payload) % FIX_RECORD.size:
        raise ChannelError("fix records of a wrong size")
    sets = len(ALARM_SETS)
    for dev, t, lat, lon, _, _, _, _, valid, mask, _ in FIX_RECORD.iter_unpack(payload):
        # NaN fails every comparison: a missing time or position is refused here too
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0 and 0.0 <= t < 1e11):
            raise ChannelError(f"fix of device {dev} out of range")
        if mask >= sets or valid > 1 or not allowed(dev):
            raise ChannelError(f"fix of device {dev} not confirmed to this worker")
    return PackedFixes(bytes(payload))


class MessageReader(asyncio.Protocol):
    """Cuts the channel's byte stream into messages for ``on_message(kind, payload)``."""

    def __init__(
        self, on_message: Callable[[int, bytes], None], on_lost: Callable[[], None]
    ) -> None:
        self.on_message = on_message
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._out: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport for writing."""
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        """Every whole message, in order."""
        buf = self._buffer
        buf += data
        i = 0
        n = len(buf)
        while n - i >= HEADER.size:
            length, kind = HEADER.unpack_from(buf, i)
            if length > MAX_MESSAGE:
                log.error("intake channel: a message of %d bytes, closing", length)
                assert self.transport is not None
                self.transport.close()
                return
            end = i + HEADER.size + length
            if end > n:
                break
            self.on_message(kind, bytes(buf[i + HEADER.size : end]))
            i = end
        del buf[:i]

    def connection_lost(self, exc: Exception | None) -> None:
        """The other side is gone."""
        self.on_lost()

    def send(self, data: bytes) -> None:
        """Write a message, if the channel is still open.

        The messages of one turn of the event loop go out in one write: a storm of
        acknowledgements or commands costs a system call per turn, not per message.
        """
        if self.transport is None or self.transport.is_closing():
            return
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(data)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))


# -- the worker process ------------------------------------------------------------------


@dataclass
class WorkerContext:
    """What a listener in a worker uses of a context: clock, metrics, settings, budgets."""

    settings: Any
    clock: SystemClock = field(default_factory=SystemClock)
    metrics: CollectorRegistry = field(default_factory=CollectorRegistry)
    budgets: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Networks:
    """Stands in for Settings: the worker is told only the device networks, the
    acknowledgement delay, how long a connection may take to log in and how old a fix
    may be."""

    device_networks: str
    tracker_ack_delay_s: float
    tracker_login_timeout_s: float = LOGIN_TIMEOUT_S
    retention_days: int = 90

    def allowed_networks(self) -> list[Any]:
        from bangpae.config import Settings

        return Settings.model_construct(device_networks=self.device_networks).allowed_networks()


class WorkerGateway:
    """A listener's gateway in a worker: the main process, over the channel.

    Fixes submitted while the loop handles one round of reads go to the main process
    as one message, and come back as one acknowledgement.
    """

    def __init__(self, channel: MessageReader) -> None:
        self.channel = channel
        self._ids = count(1)
        self._pending: list[tuple[list[Fix], asyncio.Future[Any]]] = []
        self._flush_scheduled = False
        self._stored: dict[int, list[asyncio.Future[Any]]] = {}
        self._devices: dict[int, asyncio.Future[Found | None]] = {}
        self._tokens: dict[Link, int] = {}
        self._links: dict[int, Link] = {}

    async def find(self, identifier: str) -> Known | None:
        """Asked of the main process (``D``)."""
        return await self._device(b"D", identifier)

    async def registered(self, identifier: str) -> Known | None:
        """Asked of the main process (``K``: from its registry in memory only)."""
        return await self._device(b"K", identifier)

    async def _device(self, kind: bytes, identifier: str) -> Known | None:
        req = next(self._ids)
        fut: asyncio.Future[Found | None] = asyncio.get_running_loop().create_future()
        self._devices[req] = fut
        self.channel.send(message(kind, U32.pack(req) + identifier.encode()))
        found = await fut
        if found is None:
            return None
        device_id, lenient, registered_at = found
        return Known(device_id, identifier, None, lenient, registered_at)

    def enqueue(self, fixes: list[Fix]) -> asyncio.Future[Any]:
        """Sent with whatever else this round of reads brought."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append((fixes, fut))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, []
        records = []
        futures = []
        for fixes, fut in pending:
            try:
                records.append(b"".join(pack_fix(f) for f in fixes))
            except (ValueError, struct.error) as exc:
                fut.set_exception(ValueError(f"a fix the channel cannot carry: {exc!r}"))
                continue
            futures.append(fut)
        if not futures:
            return
        req = next(self._ids)
        self._stored[req] = futures
        self.channel.send(message(b"F", U32.pack(req) + b"".join(records)))

    def register(self, device_id: int, link: Link) -> None:
        """The main process keeps the tracker sessions; it is told of the connection."""
        token = next(self._ids)
        self._tokens[link] = token
        self._links[token] = link
        self.channel.send(message(b"B", BOUND.pack(token, device_id) + link.address.encode()))

    def unregister(self, device_id: int, link: Link) -> None:
        """The connection closed."""
        token = self._tokens.pop(link, None)
        if token is not None:
            self._links.pop(token, None)
            self.channel.send(message(b"U", U32.pack(token)))

    def heard(self, device_id: int, link: Link) -> None:
        """A watched connection received a frame."""
        token = self._tokens.get(link)
        if token is not None:
            self.channel.send(message(b"H", U32.pack(token)))

    def on_message(self, kind: int, payload: bytes) -> None:
        """A reply or a command from the main process."""
        if kind == ord("A"):
            req, ok = ACK.unpack(payload)
            for fut in self._stored.pop(req, ()):
                if fut.done():
                    continue
                if ok:
                    fut.set_result(None)
                else:
                    fut.set_exception(RuntimeError("the main process did not store the fixes"))
        elif kind == ord("R"):
            req, device_id, lenient, registered = DEVICE_REPLY.unpack(payload)
            dfut = self._devices.pop(req, None)
            if dfut is not None and not dfut.done():
                at = None if math.isnan(registered) else registered
                dfut.set_result(None if device_id < 0 else (device_id, bool(lenient), at))
        elif kind == ord("C"):
            token, seconds = COMMAND.unpack(payload)
            link = self._links.get(token)
            if link is not None:
                link.command(seconds)
        elif kind in (ord("W"), ord("X")):
            (token,) = U32.unpack(payload)
            link = self._links.get(token)
            if link is not None:
                if kind == ord("W"):
                    link.watch()
                else:
                    link.drop()

    def fail_all(self) -> None:
        """The main process is gone: nothing waiting will be stored."""
        for futures in self._stored.values():
            for fut in futures:
                if not fut.done():
                    fut.set_exception(ConnectionError("the main process is gone"))
        self._stored.clear()
        for dfut in self._devices.values():
            if not dfut.done():
                dfut.set_exception(ConnectionError("the main process is gone"))
        self._devices.clear()


def counters(registry: CollectorRegistry) -> list[dict[str, Any]]:
    """Every counter of a registry, whole, as the M message carries it."""
    out = []
    for metric in registry.collect():
        if metric.type != "counter":
            continue
        samples = [[s.labels, s.value] for s in metric.samples if s.name == f"{metric.name}_total"]
        out.append({"name": metric.name, "doc": metric.documentation, "samples": samples})
    return out


async def _report_metrics(ctx: WorkerContext, channel: MessageReader) -> None:
    last = None
    last_budgets = None
    while True:
        now = json.dumps(counters(ctx.metrics), sort_keys=True)
        if now != last:
            channel.send(message(b"M", now.encode()))
            last = now
        budgets = budgets_payload(ctx.budgets)
        if budgets != last_budgets:
            channel.send(message(b"N", budgets))
            last_budgets = budgets
        await asyncio.sleep(METRICS_EVERY_S)


async def run_worker(
    channel_fd: int,
    listeners: Iterable[tuple[str, int]],
    device_networks: str,
    ack_delay_s: float,
    budgets: dict[str, tuple[int, int]] | None = None,
    login_timeout_s: float = LOGIN_TIMEOUT_S,
    retention_days: int = 90,
) -> None:
    """Serve the listeners on the inherited sockets until the main process goes away.

    ``budgets``: this worker's share of each listener's caps, (in all, per address).
    """
    loop = asyncio.get_running_loop()
    lost = asyncio.Event()
    gateway: WorkerGateway | None = None

    def on_message(kind: int, payload: bytes) -> None:
        assert gateway is not None
        gateway.on_message(kind, payload)

    chan_sock = socket.socket(fileno=channel_fd)
    _, channel = await loop.connect_accepted_socket(
        lambda: MessageReader(on_message, lost.set), sock=chan_sock
    )
    gateway = WorkerGateway(channel)
    ctx = WorkerContext(_Networks(device_networks, ack_delay_s, login_timeout_s, retention_days))
    for name, (total, per_address) in (budgets or {}).items():
        ctx.budgets[name] = ConnectionBudget(name, total, per_address)
    servers = []
    for name, fd in listeners:
        listener = TcpListener(ctx, TCP_PROTOCOLS[name], gateway)
        sock = socket.socket(fileno=fd)
        servers.append(await loop.create_server(listener.connection, sock=sock, backlog=BACKLOG))
    reporter = asyncio.create_task(_report_metrics(ctx, channel))
    try:
        await lost.wait()
    finally:
        reporter.cancel()
        gateway.fail_all()
        for srv in servers:
            srv.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point of a worker process (started by the main process, not by people)."""
    p = argparse.ArgumentParser(prog="bangpae-intake")
    p.add_argument("--channel", type=int, required=True, help="fd of the channel to the core")
    p.add_argument("--listen", action="append", default=[], help="PROTOCOL=FD, a listening socket")
    p.add_argument("--device-networks", default="")
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--ack-delay", type=float, default=ACK_DELAY_S, help="seconds, at least")
    p.add_argument(
        "--budget",
        action="append",
        default=[],
        help="PROTOCOL=TOTAL,PER_ADDRESS: this worker's share of a listener's caps",
    )
    p.add_argument("--login-timeout", type=float, default=LOGIN_TIMEOUT_S, help="seconds")
    p.add_argument("--retention-days", type=int, default=90, help="older fixes are refused")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("BANGPAE_LOG_LEVEL", "INFO"),
        format=f"%(asctime)s %(levelname)s intake[{args.index}] %(name)s: %(message)s",
    )
    redact_logs()
    listeners = []
    for item in args.listen:
        name, _, fd = item.partition("=")
        if name not in TCP_PROTOCOLS or not fd.isdigit():
            p.error(f"--listen {item!r}: expected one of {sorted(TCP_PROTOCOLS)}=FD")
        listeners.append((name, int(fd)))
    budgets = {}
    for item in args.budget:
        name, _, value = item.partition("=")
        total, _, per_address = value.partition(",")
        if name not in TCP_PROTOCOLS or not total.isdigit() or not per_address.isdigit():
            p.error(f"--budget {item!r}: expected PROTOCOL=TOTAL,PER_ADDRESS")
        budgets[name] = (max(1, int(total)), max(1, int(per_address)))
    run_loop(
        run_worker(
            args.channel,
            listeners,
            args.device_networks,
            args.ack_delay,
            budgets,
            args.login_timeout,
            args.retention_days,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
