"""Commands back to devices; pursuit mode drives them from tier changes.

Each connected device registers how it can be told a reporting interval (a TCP
tracker writes its protocol's command, the victim app gets a WebSocket message).
The desired interval per device is remembered, so a device that connects later
is told at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from bangpae.domain.model import Event, EventKind, Tier
from bangpae.domain.pursuit import NORMAL_INTERVAL_S, report_interval_s

log = logging.getLogger(__name__)
Sender = Callable[[int], Awaitable[None]]
YIELD_EVERY = 100  # people set per turn of the event loop


class CommandHub:
    """Who can be told what, and what each device should currently be told."""

    def __init__(self) -> None:
        self._senders: dict[int, set[Sender]] = {}
        self.desired: dict[int, int] = {}
        # (device id, seconds) of the latest commands sent, for tests and troubleshooting:
        # bounded, since a long-running server sends them for as long as it runs
        self.sent: deque[tuple[int, int]] = deque(maxlen=1000)

    async def register(self, device_id: int, send: Sender) -> None:
        """A device connected; tell it its interval if it should not use the default."""
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


async def run_pursuit(ctx: Any, hub: CommandHub) -> None:
    """Follow tier changes on the bus; set both parties' reporting interval accordingly.

    Takes whatever tier changes have queued up as one round, and reads who the
    parties are and which devices they carry from the engine, not the store: a storm
    of tier changes must cost the process little.
    """
    q = ctx.bus.subscribe()
    try:
        while True:
            events: list[Event] = [await q.get()]
            while not q.empty():
                events.append(q.get_nowait())
            engine = ctx.engine
            people: dict[int, None] = {}  # in order of the events
            for e in events:
                if e.kind != EventKind.TIER_CHANGED or e.order_id is None or e.late:
                    continue
                parties = engine.parties(e.order_id)
                if parties is not None:
                    people.update(dict.fromkeys(parties))
            for i, person in enumerate(people):
                tiers = [
                    tier
                    for oid in engine.orders_of_person(person)
                    if (tier := engine.tier_of(oid)) is not None
                ] or [Tier.CLEAR]
                seconds = report_interval_s(tiers)
                for device_id in engine.devices_of_person(person):
                    await hub.set_interval(device_id, seconds)
                if i % YIELD_EVERY == YIELD_EVERY - 1:
                    await asyncio.sleep(0)  # a storm must not hold the loop: acks wait on it
    finally:
        ctx.bus.unsubscribe(q)
