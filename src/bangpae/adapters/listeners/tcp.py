"""TCP listeners for tracker protocols: frame, decode, bind, store, then acknowledge.

One connection speaks for one device. The first frame that names a device binds
the connection to it; a frame naming another device, an unknown device, or a
malformed frame is counted, logged and closes that connection only. A position
is acknowledged only after its fix is durably stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bangpae.adapters.listeners.metrics import counter
from bangpae.domain.model import Fix
from bangpae.protocols import gt06, h02
from bangpae.protocols.errors import FrameError
from bangpae.services.ratelimit import FailureLimiter, source_allowed

log = logging.getLogger(__name__)
READ_SIZE = 4096
IDLE_TIMEOUT_S = 600.0  # a tracker that says nothing for ten minutes is dropped


@dataclass(frozen=True)
class Decoded:
    """What a listener needs from one frame, whatever the protocol."""

    identifier: str | None
    fix: Fix | None  # with device_id 0: filled in once the device is known
    reply: bytes | None


@dataclass(frozen=True)
class Codec:
    """A protocol's pure parts: framing and decoding."""

    name: str
    split: Callable[[bytes], tuple[list[bytes], bytes]]
    decode: Callable[[bytes, float, bool], Decoded]  # (frame, now, lenient CRC)
    # The command setting the reporting interval: (identifier, seconds, now) -> bytes.
    interval: Callable[[str, int, float], bytes] | None = None


def _h02_decode(frame: bytes, now: float, lenient: bool = False) -> Decoded:
    msg = h02.decode(frame)
    fix = None
    if msg.has_position:
        t = msg.fix_time if msg.fix_time is not None else now
        if t > now + 300:
            raise FrameError("fix time more than 5 minutes in the future")
        fix = Fix(
            0,
            t,
            msg.lat,
            msg.lon,
            None,
            msg.speed_mps,
            msg.heading_deg,
            None,
            msg.valid,
            msg.alarms,
            now,
        )
    return Decoded(msg.identifier or None, fix, h02.ack(msg, now))


H02 = Codec("h02", h02.split_frames, _h02_decode, h02.interval_command)


def _gt06_decode(frame: bytes, now: float, lenient: bool = False) -> Decoded:
    # CRC errors are refused: firmware known to send them needs a per-device lenient mode.
    msg = gt06.decode(frame, strict_crc=not lenient)
    fix = None
    if msg.has_position:
        if msg.fix_time > now + 300:
            raise FrameError("fix time more than 5 minutes in the future")
        fix = Fix(
            0,
            msg.fix_time,
            msg.lat,
            msg.lon,
            None,
            msg.speed_mps,
            msg.heading_deg,
            msg.battery_pct,
            msg.valid,
            msg.alarms,
            now,
        )
    elif msg.alarms:
        # A status packet reporting an alarm (strap cut, SOS) must not be lost for want of a
        # position: it goes on as a message without a GPS fix.
        fix = Fix(0, now, 0.0, 0.0, None, None, None, msg.battery_pct, False, msg.alarms, now)
    return Decoded(msg.imei, fix, gt06.ack(msg))


GT06 = Codec(
    "gt06",
    gt06.split_frames,
    _gt06_decode,
    lambda _ident, seconds, _now: gt06.interval_command(seconds),
)
CODECS: dict[str, Codec] = {"h02": H02, "gt06": GT06}


class TcpListener:
    """Serves one protocol on one TCP port."""

    def __init__(self, ctx: Any, codec: Codec) -> None:
        self.ctx = ctx
        self.codec = codec
        self.rejected = counter(
            ctx, "bangpae_tcp_rejected", "TCP frames or connections refused", ["protocol", "reason"]
        )
        self.accepted = counter(
            ctx, "bangpae_tcp_fixes", "Fixes stored from TCP trackers", ["protocol"]
        )
        self.connections = 0
        self.limiter = FailureLimiter()
        self.networks = ctx.settings.allowed_networks()
        self._lenient: dict[int, bool] = {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One device connection, until it closes, misbehaves or idles out."""
        self.connections += 1
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if peer else "?"
        bound: tuple[str, int] | None = None
        buffer = b""
        sender = None
        try:
            if not source_allowed(source, self.networks):
                self.rejected.labels(self.codec.name, "source_not_allowed").inc()
                return
            if self.limiter.blocked(source, self.ctx.clock.now()):
                self.rejected.labels(self.codec.name, "rate_limited").inc()
                return
            while True:
                data = await asyncio.wait_for(reader.read(READ_SIZE), IDLE_TIMEOUT_S)
                if not data:
                    return
                frames, buffer = self.codec.split(buffer + data)
                for frame in frames:
                    was_bound = bound is not None
                    bound = await self._frame(frame, bound, writer)
                    if bound is None:
                        self.limiter.failed(source, self.ctx.clock.now())
                        return
                    if not was_bound and self.codec.interval is not None:
                        sender = self._sender(bound[0], writer)
                        await self.ctx.commands.register(bound[1], sender)
        except FrameError as exc:
            self.rejected.labels(self.codec.name, "malformed").inc()
            log.info("%s %s: malformed frame, closing: %s", self.codec.name, peer, exc.reason)
        except (TimeoutError, ConnectionError):
            pass
        finally:
            if sender is not None and bound is not None:
                self.ctx.commands.unregister(bound[1], sender)
            self.connections -= 1
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    def _sender(self, identifier: str, writer: asyncio.StreamWriter) -> Any:
        interval = self.codec.interval
        assert interval is not None

        async def send(seconds: int) -> None:
            writer.write(interval(identifier, seconds, self.ctx.clock.now()))
            await writer.drain()

        return send

    async def _is_lenient(self, device_id: int) -> bool:
        if device_id not in self._lenient:
            self._lenient[device_id] = await asyncio.to_thread(
                self.ctx.store.device_lenient_crc, device_id
            )
        return self._lenient[device_id]

    async def _frame(
        self, frame: bytes, bound: tuple[str, int] | None, writer: asyncio.StreamWriter
    ) -> tuple[str, int] | None:
        now = self.ctx.clock.now()
        lenient = bound is not None and self._lenient.get(bound[1], False)
        try:
            d = self.codec.decode(frame, now, lenient)
        except FrameError as exc:
            # Before login a wrong CRC may still come from firmware registered as lenient:
            # read who it claims to be, and accept it only for such a device.
            if exc.reason != "crc" or bound is not None:
                raise
            d = self.codec.decode(frame, now, True)
            device = await asyncio.to_thread(self.ctx.store.get_device, d.identifier or "")
            if device is None or not await self._is_lenient(device.id):
                raise
        ident = d.identifier or (bound[0] if bound else None)
        if ident is None:
            self.rejected.labels(self.codec.name, "no_identity").inc()
            return None
        if bound is None:
            device = await asyncio.to_thread(self.ctx.store.get_device, ident)
            if device is None or device.identifier != ident:
                self.rejected.labels(self.codec.name, "unknown_device").inc()
                log.info("%s: unknown device %r refused", self.codec.name, ident)
                return None
            bound = (ident, device.id)
            await self._is_lenient(device.id)
        elif ident != bound[0]:
            self.rejected.labels(self.codec.name, "identity_changed").inc()
            log.warning("%s: connection bound to %s spoke as %s", self.codec.name, bound[0], ident)
            return None
        if d.fix is not None:
            f = d.fix
            fix = Fix(
                bound[1],
                f.fix_time,
                f.lat,
                f.lon,
                f.accuracy_m,
                f.speed_mps,
                f.heading_deg,
                f.battery_pct,
                f.valid,
                f.alarms,
                f.received_at,
            )
            await self.ctx.ingest.submit([fix])  # durable before the reply below
            self.accepted.labels(self.codec.name).inc()
        if d.reply:
            writer.write(d.reply)
            await writer.drain()
        return bound


async def start_tcp(ctx: Any, codec: Codec, host: str, port: int) -> asyncio.Server:
    """Start serving a protocol; the caller owns the returned server."""
    listener = TcpListener(ctx, codec)
    return await asyncio.start_server(
        listener.handle, host, port, limit=READ_SIZE * 16, backlog=4096
    )
