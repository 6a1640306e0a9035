"""TCP listeners for tracker protocols: frame, decode, bind, store, then acknowledge.

One connection speaks for one device. The first frame that names a device binds
the connection to it; a frame naming another device, an unknown device, or a
malformed frame is counted, logged and closes that connection only. A position
is acknowledged only after its fix is durably stored.

A tracker connection is sent the acknowledgements of its own frames and, once
logged in, the one fixed reporting-interval command the tracker sessions
(:mod:`bangpae.services.trackers`) decide on: nothing that depends on anyone else
(docs/devices-and-commands.md).

What is particular to a protocol (framing, decoding, replies, its command) is its
:class:`~bangpae.protocols.codec.TcpProtocol`, named in
:data:`bangpae.protocols.registry.TCP_PROTOCOLS`; who a tracker is, the device gate
(:mod:`bangpae.services.devices`) says.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from bangpae.adapters.listeners.budget import IdleWatch, budget_for
from bangpae.adapters.listeners.metrics import counter
from bangpae.domain.model import Fix
from bangpae.domain.retention import fix_time_refusal
from bangpae.protocols.codec import Decoded, TcpProtocol
from bangpae.protocols.errors import FrameError
from bangpae.services.devicekeys import AuthGuard, Known
from bangpae.services.devices import LIMITED, DeviceGate, Refused
from bangpae.services.ratelimit import source_allowed
from bangpae.services.trackers import Link

log = logging.getLogger(__name__)
BUFFER_LIMIT = 64 * 1024  # unread bytes held per connection before it is paused
IDLE_TIMEOUT_S = 600.0  # a tracker that says nothing for ten minutes is dropped
# A connection that has not named a registered tracker this soon is dropped: trackers send
# their login (GT06) or a position (H02) on connecting. Settings.tracker_login_timeout_s.
LOGIN_TIMEOUT_S = 60.0
BACKLOG = 4096  # connections waiting to be accepted: a fleet reconnects at once after an outage
# A stored fix is acknowledged no sooner than this after its frames were taken up: what the
# transaction held (events, audited reads of the other party's screen) must not show in when
# the acknowledgement comes (docs/devices-and-commands.md). Settings.tracker_ack_delay_s.
ACK_DELAY_S = 0.1


@dataclass(frozen=True, slots=True)
class Bound:
    """The device a connection speaks for, from its first frame on."""

    identifier: str
    device_id: int
    lenient: bool  # its firmware is known to send wrong CRCs
    registered_at: float | None = None  # its fixes from before then are dropped


class Gateway(Protocol):
    """What a listener needs of the rest of bangpae: here, or in another process.

    Its ``find`` and ``registered`` are the device gate's directory.
    """

    async def find(self, identifier: str) -> Known | None:
        """The registered device (None: unknown), from memory or by a lookup."""
        ...

    async def registered(self, identifier: str) -> Known | None:
        """The registered device from the registry in memory, never by a lookup of this
        identifier (the source is being refused for failures)."""
        ...

    def enqueue(self, fixes: list[Fix]) -> asyncio.Future[Any]:
        """Submit fixes; the future is done once they are durably stored (failed: not stored)."""
        ...

    def register(self, device_id: int, link: Link) -> None:
        """A connection logged in as the device (its login acknowledged)."""
        ...

    def unregister(self, device_id: int, link: Link) -> None:
        """That connection is gone."""
        ...

    def heard(self, device_id: int, link: Link) -> None:
        """A frame arrived on a connection the tracker sessions asked to watch."""
        ...


class LocalGateway:
    """The gateway of a listener that runs in the main process: the store and ingest there."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    async def find(self, identifier: str) -> Known | None:
        """From the registry in memory (the store only for a device registered elsewhere)."""
        return await self.ctx.device_keys.find(identifier)  # type: ignore[no-any-return]

    async def registered(self, identifier: str) -> Known | None:
        """From the registry in memory alone."""
        return await self.ctx.device_keys.registered(identifier)  # type: ignore[no-any-return]

    def enqueue(self, fixes: list[Fix]) -> asyncio.Future[Any]:
        """Into the one writer's queue."""
        return self.ctx.ingest.enqueue(fixes)  # type: ignore[no-any-return]

    def register(self, device_id: int, link: Link) -> None:
        """With the process's tracker sessions."""
        self.ctx.trackers.bind(device_id, link)

    def unregister(self, device_id: int, link: Link) -> None:
        """From the tracker sessions."""
        self.ctx.trackers.unbind(device_id, link)

    def heard(self, device_id: int, link: Link) -> None:
        """To the tracker sessions."""
        self.ctx.trackers.heard(device_id, link)


class TcpListener:
    """Serves one protocol on one TCP port.

    ``ctx`` gives the clock, the metrics registry and the settings; ``gateway`` the
    store, ingest and commands (by default those of ``ctx``, in this process).
    """

    def __init__(self, ctx: Any, codec: TcpProtocol, gateway: Gateway | None = None) -> None:
        self.ctx = ctx
        self.codec = codec
        self.gateway: Gateway = gateway if gateway is not None else LocalGateway(ctx)
        # who a tracker is; failed identifications counted per listener, per source and
        # in all (docs/robustness.md)
        self.gate = DeviceGate(self.gateway, AuthGuard())
        self.rejected = counter(
            ctx, "bangpae_tcp_rejected", "TCP frames or connections refused", ["protocol", "reason"]
        )
        self.accepted = counter(
            ctx, "bangpae_tcp_fixes", "Fixes stored from TCP trackers", ["protocol"]
        )
        self._accepted = self.accepted.labels(codec.name)
        self.connections = 0
        # fixes older than the retention window or than the tracker are refused
        # (docs/robustness.md)
        self.retention_days = int(ctx.settings.retention_days)
        self.networks = ctx.settings.allowed_networks()
        self.ack_delay_s = float(getattr(ctx.settings, "tracker_ack_delay_s", ACK_DELAY_S))
        self.budget = budget_for(ctx, codec.name)  # connections held, in all and per address
        self.login_timeout_s = float(
            getattr(ctx.settings, "tracker_login_timeout_s", LOGIN_TIMEOUT_S)
        )
        self._tasks: set[asyncio.Task[None]] = set()  # lookups and submissions under way

    def connection(self) -> _Connection:
        """A protocol instance for one new connection."""
        return _Connection(self)

    async def _bind(
        self, frame: bytes, fixes: list[Fix], replies: list[bytes], source: str = "?"
    ) -> Bound | None:
        """The first frame: who the connection speaks for (None: refused)."""
        now = self.ctx.clock.now()
        bad_crc: FrameError | None = None
        try:
            d = self.codec.decode(frame, now, False, 0)
        except FrameError as exc:
            # Before login a wrong CRC may still come from firmware registered as lenient:
            # read who it claims to be, and accept it only for such a device.
            if exc.reason != "crc":
                raise
            bad_crc = exc
            d = self.codec.decode(frame, now, True, 0)
        if d.identifier is None:
            if bad_crc is not None:
                raise bad_crc
            self.rejected.labels(self.codec.name, "no_identity").inc()
            self.gate.failed(source, now)
            return None
        # From a source that failed too often, only registered devices are found (in the
        # registry in memory, no database lookup per identifier): devices behind the same
        # address (carrier-grade NAT) keep reporting (docs/robustness.md).
        found = await self.gate.admit(self.codec.name, d.identifier, None, source, now)
        if isinstance(found, Refused) and found.reason == LIMITED:
            self.rejected.labels(self.codec.name, LIMITED).inc()
            self.gate.failed(source, now)  # its attempts keep it refused while it goes on
            return None
        if bad_crc is not None and (isinstance(found, Refused) or not found.lenient_crc):
            raise bad_crc
        if isinstance(found, Refused):
            self.rejected.labels(self.codec.name, found.reason).inc()
            log.info("%s: unknown device %r refused", self.codec.name, d.identifier)
            return None
        bound = Bound(d.identifier, found.device_id, found.lenient_crc, found.registered_at)
        self._collect(d, bound, fixes, replies)
        return bound

    def _bound_frame(
        self, frame: bytes, bound: Bound, fixes: list[Fix], replies: list[bytes]
    ) -> bool:
        """A frame on a bound connection; False if it speaks for another device."""
        d = self.codec.decode(frame, self.ctx.clock.now(), bound.lenient, bound.device_id)
        if d.identifier is not None and d.identifier != bound.identifier:
            self.rejected.labels(self.codec.name, "identity_changed").inc()
            log.warning(
                "%s: connection bound to %s spoke as %s",
                self.codec.name,
                bound.identifier,
                d.identifier,
            )
            return False
        self._collect(d, bound, fixes, replies)
        return True

    def _collect(self, d: Decoded, bound: Bound, fixes: list[Fix], replies: list[bytes]) -> None:
        f = d.fix
        if f is not None:
            if f.device_id != bound.device_id:  # decoded before the connection was bound
                f = dataclasses.replace(f, device_id=bound.device_id)
            if f.received_at is not None and fix_time_refusal(
                f.fix_time, f.received_at, bound.registered_at, self.retention_days
            ):
                # a broken clock (1970, a GPS week rollover) or a fix from before the tracker
                # was registered: dropped, though its frame is acknowledged, or the tracker
                # would send it again for ever
                self.rejected.labels(self.codec.name, "fix_time").inc()
            else:
                fixes.append(f)
        if d.reply:
            replies.append(d.reply)


class _Connection(asyncio.Protocol):
    """One device connection, until it closes, misbehaves or idles out (a :class:`Link`).

    A protocol rather than a stream task: a position costs one callback to read, one
    submission and one write, with no task switch. Frames are handled in order: while
    what one read brought is being stored, later bytes wait in the buffer, so a
    device's fixes are stored and acknowledged in the order it sent them.
    """

    def __init__(self, listener: TcpListener) -> None:
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.peer: Any = None
        self.source = "?"
        self.address = "?"
        self.buffer = b""
        self.bound: Bound | None = None
        self.registered = False
        self.watching = False  # report the next frame to the tracker sessions
        self.busy = False  # a submission or a lookup is under way
        self.read_paused = False
        self.write_paused = False
        self.eof = False
        self.idle: IdleWatch | None = None
        self.budget_key: str | None = None  # its place in the listener's budget, if admitted

    # -- transport callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Check the source and the budget; start the idle watch."""
        lst = self.listener
        lst.connections += 1
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self.peer = transport.get_extra_info("peername")
        self.source = str(self.peer[0]) if self.peer else "?"
        if self.peer:
            host = f"[{self.source}]" if ":" in self.source else self.source
            self.address = f"{host}:{self.peer[1]}"
        if not source_allowed(self.source, lst.networks):
            lst.rejected.labels(lst.codec.name, "source_not_allowed").inc()
            transport.close()
            return
        loop = asyncio.get_running_loop()
        self.budget_key = lst.budget.admit(self.source, loop.time())
        if self.budget_key is None:  # over a cap: counted by the budget
            transport.close()
            return
        self.idle = IdleWatch(
            transport,
            IDLE_TIMEOUT_S,
            login_timeout_s=lst.login_timeout_s,
            logged_in=lambda: self.bound is not None,
            expired=lst.budget.expired,
        )

    def data_received(self, data: bytes) -> None:
        """Buffer what came; handle it now unless earlier frames are still being stored."""
        if self.idle is not None:
            self.idle.touch()
        self.buffer += data
        if not self.busy:
            self._handle()
        elif len(self.buffer) > BUFFER_LIMIT:
            self._pause_reading()  # resumed once the earlier frames are stored

    def eof_received(self) -> bool | None:
        """The device closed its side: finish what it sent, then close."""
        if self.busy:
            self.eof = True
            return True  # keep the transport open for the acknowledgement still due
        return None

    def pause_writing(self) -> None:
        """The device reads its acknowledgements slower than it sends: stop reading it."""
        self.write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        """The device caught up."""
        self.write_paused = False
        if not self.busy:
            self._resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection."""
        lst = self.listener
        lst.connections -= 1
        if self.idle is not None:
            self.idle.cancel()
        if self.budget_key is not None:
            lst.budget.release(self.budget_key)
            self.budget_key = None
        if self.registered and self.bound is not None:
            self.registered = False
            lst.gateway.unregister(self.bound.device_id, self)

    # -- the tracker sessions' handle ----------------------------------------------------

    def command(self, seconds: int) -> None:
        """Write the protocol's reporting-interval command."""
        if self.bound is not None and self._open():
            assert self.transport is not None
            now = self.listener.ctx.clock.now()
            self.transport.write(self.listener.codec.interval(self.bound.identifier, seconds, now))

    def watch(self) -> None:
        """Report the next frame that arrives."""
        self.watching = True

    def drop(self) -> None:
        """Close the connection (superseded by a newer login of its device)."""
        self._close()

    # -- frames --------------------------------------------------------------------------

    def _open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _pause_reading(self) -> None:
        if not self.read_paused and self._open():
            assert self.transport is not None
            self.read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.read_paused and self._open():
            assert self.transport is not None
            self.read_paused = False
            self.transport.resume_reading()

    def _malformed(self, exc: FrameError) -> None:
        lst = self.listener
        lst.rejected.labels(lst.codec.name, "malformed").inc()
        log.info("%s %s: malformed frame, closing: %s", lst.codec.name, self.peer, exc.reason)

    def _refused(self) -> None:
        self.listener.gate.failed(self.source, self.listener.ctx.clock.now())

    def _handle(self) -> None:
        """Handle every whole frame in the buffer; a bound connection needs no task."""
        if not self._open():
            return
        lst = self.listener
        try:
            frames, self.buffer = lst.codec.split(self.buffer)
        except FrameError as exc:
            self._malformed(exc)
            self._close()
            return
        if not frames:
            return
        if self.bound is None:  # the first frame needs the store: finish in a task
            self.busy = True
            task = asyncio.get_running_loop().create_task(self._bind_then_handle(frames))
            lst._tasks.add(task)
            task.add_done_callback(self._bound_done)
            return
        if self.watching:
            self.watching = False
            lst.gateway.heard(self.bound.device_id, self)
        fixes: list[Fix] = []
        replies: list[bytes] = []
        end = self._bound_frames(frames, self.bound, fixes, replies)
        # what came before a bad frame is still stored and acknowledged
        if not fixes:
            self._reply(replies, end)
            return
        self.busy = True
        due = asyncio.get_running_loop().time() + lst.ack_delay_s
        stored = lst.gateway.enqueue(fixes)  # durable before the replies
        stored.add_done_callback(functools.partial(self._stored, len(fixes), replies, end, due))

    def _stored(
        self, n: int, replies: list[bytes], end: bool, due: float, stored: asyncio.Future[Any]
    ) -> None:
        if stored.cancelled() or stored.exception() is not None:
            log.warning("%s %s: fixes not stored, closing", self.listener.codec.name, self.peer)
            self.busy = False
            self._close()
            return
        self.listener._accepted.inc(n)
        loop = asyncio.get_running_loop()
        if loop.time() < due:  # stored: acknowledged at the due time, however long it took
            loop.call_at(due, self._release, replies, end)
        else:
            self._release(replies, end)

    def _release(self, replies: list[bytes], end: bool) -> None:
        self._reply(replies, end)
        self._next()

    def _bound_done(self, task: asyncio.Task[None]) -> None:
        self.listener._tasks.discard(task)
        if task.cancelled() or task.exception() is not None:
            if not task.cancelled():
                exc = task.exception()
                log.warning("%s %s: closing: %r", self.listener.codec.name, self.peer, exc)
            self.busy = False
            self._close()
            return
        self._next()

    def _next(self) -> None:
        """The frames under way are done: go on with what arrived meanwhile."""
        self.busy = False
        if not self._open():
            return
        if self.buffer:
            self._handle()
        if not self.busy:
            if self.eof:
                self._close()
            elif not self.write_paused:
                self._resume_reading()

    def _reply(self, replies: list[bytes], end: bool) -> None:
        if replies and self._open():
            assert self.transport is not None
            self.transport.write(b"".join(replies))
        if end:
            self._close()

    def _bound_frames(
        self, frames: list[bytes], bound: Bound, fixes: list[Fix], replies: list[bytes]
    ) -> bool:
        """Decode frames of a bound connection into ``fixes`` and ``replies`` until one is
        malformed or speaks for another device; whether the connection must end."""
        try:
            for frame in frames:
                if not self.listener._bound_frame(frame, bound, fixes, replies):
                    self._refused()
                    return True
        except FrameError as exc:
            self._malformed(exc)
            return True
        return False

    async def _bind_then_handle(self, frames: list[bytes]) -> None:
        lst = self.listener
        loop = asyncio.get_running_loop()
        due = loop.time() + lst.ack_delay_s
        fixes: list[Fix] = []
        replies: list[bytes] = []
        end = False
        try:
            self.bound = await lst._bind(frames[0], fixes, replies, self.source)
        except FrameError as exc:
            self._malformed(exc)
            end = True
        else:
            if self.bound is None:  # refused, and counted, by _bind
                end = True
            else:
                end = self._bound_frames(frames[1:], self.bound, fixes, replies)
        if fixes:
            await lst.gateway.enqueue(fixes)  # durable before the replies
            lst._accepted.inc(len(fixes))
            if loop.time() < due:
                await asyncio.sleep(due - loop.time())
        self._reply(replies, end)
        if not end and self.bound is not None and self._open():
            # after the login is acknowledged: registering may send the command at once
            self.registered = True
            lst.gateway.register(self.bound.device_id, self)


async def start_tcp(ctx: Any, codec: TcpProtocol, host: str, port: int) -> asyncio.Server:
    """Start serving a protocol; the caller owns the returned server."""
    listener = TcpListener(ctx, codec)
    return await asyncio.get_running_loop().create_server(
        listener.connection, host, port, backlog=BACKLOG
    )
