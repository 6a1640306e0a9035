"""The in-process event bus: subscribers get every published event, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from bangpae.domain.model import Event


class InProcessBus:
    """Fan-out of events to asyncio queues; a slow subscriber loses its oldest events."""

    def __init__(self, maxsize: int = 10_000) -> None:
        self._subscribers: set[asyncio.Queue[Event]] = set()
        self._maxsize = maxsize

    def subscribe(self) -> asyncio.Queue[Event]:
        """A new queue that receives every event published from now on."""
        q: asyncio.Queue[Event] = asyncio.Queue(self._maxsize)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[Event]) -> None:
        """Stop delivering to a queue."""
        self._subscribers.discard(q)

    async def publish(self, events: Sequence[Event]) -> None:
        """Deliver events to every subscriber."""
        for q in list(self._subscribers):
            for e in events:
                if q.full():
                    q.get_nowait()
                q.put_nowait(e)
