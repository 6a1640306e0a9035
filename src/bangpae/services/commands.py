"""Pursuit mode for the protected person's app: report faster while he is near.

Only her app's authenticated live stream registers here, for her devices: it is told
a reporting interval over its WebSocket. No tracker connection ever registers (GT06
and H02 trackers are told one fixed interval at login by
:mod:`bangpae.services.trackers`), and the intervals are computed for the victims
of orders only, from the orders protecting them: nothing that depends on her reaches
his devices, nor anyone who logs in as them (docs/devices-and-commands.md).
The desired interval per device is remembered, so her app is told at once when it
connects.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from bangpae.domain.model import Event, EventKind, Tier
from bangpae.domain.notices import victim_tier
from bangpae.domain.pursuit import NORMAL_INTERVAL_S, report_interval_s
from bangpae.engine.engine import Engine
from bangpae.services.ingest import Ingest

log = logging.getLogger(__name__)
Sender = Callable[[int], Awaitable[None]]
YIELD_EVERY = 100  # people set per turn of the event loop


class CommandHub:
    """Her app's streams, and what each of her devices should currently be told."""

    def __init__(self) -> None:
        self._senders: dict[int, set[Sender]] = {}
        self.desired: dict[int, int] = {}
        # (device id, seconds) of the latest commands sent, for tests and troubleshooting:
        # bounded, since a long-running server sends them for as long as it runs
        self.sent: deque[tuple[int, int]] = deque(maxlen=1000)

    async def register(self, device_id: int, send: Sender) -> None:
        """Her app's stream opened; tell it its interval if it should not use the default."""
        self._senders.setdefault(device_id, set()).add(send)
        wanted = self.desired.get(device_id)
        if wanted is not None and wanted != NORMAL_INTERVAL_S:
            await self._send(device_id, send, wanted)

    def unregister(self, device_id: int, send: Sender) -> None:
        """A device disconnected."""
        self._senders.get(device_id, set()).discard(send)

    async def set_interval(self, device_id: int, seconds: int) -> None:
        """Ask a device to report every ``seconds`` (now if connected, else when it connects)."""
        if self.desired.get(device_id, NORMAL_INTERVAL_S) == seconds:
            return
        self.desired[device_id] = seconds
        for send in list(self._senders.get(device_id, ())):
            await self._send(device_id, send, seconds)

    async def _send(self, device_id: int, send: Sender, seconds: int) -> None:
        try:
            await send(seconds)
            self.sent.append((device_id, seconds))
        except (ConnectionError, OSError, RuntimeError) as exc:
            log.info("command to device %d failed: %s", device_id, exc)


def victim_interval_s(engine: Engine, person: int, profile_of: Callable[[int], str]) -> int:
    """Her app's reporting interval, from what she is shown of the orders protecting her.

    Her profile's withheld tiers count as she is shown them (``fr``: clear), so that the
    interval tells her nothing her screen does not.
    """
    shown = [
        victim_tier(profile_of(oid), tier)
        for oid in engine.orders_of_person(person)
        if (p := engine.parties(oid)) is not None
        and p[1] == person
        and (tier := engine.shown_of(oid)) is not None
    ] or [Tier.CLEAR]
    return report_interval_s(shown)


class PursuitContext(Protocol):
    """What pursuit mode reads of the application: the live engine and the writer."""

    @property
    def engine(self) -> Engine:
        """The live engine (the writer may rebuild it)."""
        ...

    @property
    def ingest(self) -> Ingest:
        """The single writer, with each order's profile."""
        ...


def pursuit(ctx: PursuitContext, hub: CommandHub) -> Callable[[Sequence[Event]], Awaitable[None]]:
    """The reaction that sets victims' reporting intervals from what they are shown.

    Only the protected person of each changed order is considered, and her interval
    comes from the orders that protect her alone (a person protected by one order and
    restrained by another is told nothing about the other's victim). The offender's
    devices are never set: the hub has no way to reach them, and this leaves them out
    besides.

    Takes whatever tier changes have queued up as one round, and reads who the
    parties are and which devices they carry from the engine, not the store: a storm
    of tier changes must cost the process little.
    """

    async def react(events: Sequence[Event]) -> None:
        engine = ctx.engine
        victims: dict[int, None] = {}  # in order of the events
        for e in events:
            # what she is shown, not the exact tier: her app's interval reaches her, and
            # the exact tier's moments would trace the radii around him (docs/disclosure.md)
            if e.kind != EventKind.SHOWN_TIER_CHANGED or e.order_id is None or e.late:
                continue
            parties = engine.parties(e.order_id)
            if parties is not None:
                victims[parties[1]] = None
        for i, person in enumerate(victims):
            seconds = victim_interval_s(engine, person, ctx.ingest.profile_of)
            for device_id in engine.devices_of_person(person):
                await hub.set_interval(device_id, seconds)
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)  # a storm must not hold the loop: acks wait on it

    return react
