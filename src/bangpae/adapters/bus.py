"""The in-process event bus: subscribers get every published event, in order.

Two kinds of subscriber (docs/architecture.md, "Reactions"): the reactions (notices,
pursuit) subscribe without a bound and lose nothing; a screen (the control centre's
stream, a test watching) gets a bounded queue that drops its oldest events when full
and counts what it dropped, so that the screen can say so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from bangpae.domain.model import Event

SCREEN_QUEUE = 10_000  # events a screen may fall behind by before it loses the oldest


class Subscription(asyncio.Queue[Event]):
    """A subscriber's queue; ``dropped`` counts the events it lost for being full."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self.dropped = 0

    def offer(self, event: Event) -> None:
        """Enqueue without waiting: a full queue loses its oldest event, and counts it."""
        if self.maxsize and self.full():
            self.get_nowait()
            self.dropped += 1
        self.put_nowait(event)


class InProcessBus:
    """Fan-out of events to the subscribers' queues."""

    def __init__(self, maxsize: int = SCREEN_QUEUE) -> None:
        self._subscribers: set[Subscription] = set()
        self._maxsize = maxsize

    def subscribe(self, lossless: bool = False) -> Subscription:
        """A new queue that receives every event published from now on: bounded (a
        screen) unless ``lossless`` (a reaction, which must never lose an event)."""
        q = Subscription(0 if lossless else self._maxsize)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: object) -> None:
        """Stop delivering to a queue."""
        if isinstance(q, Subscription):
            self._subscribers.discard(q)

    async def publish(self, events: Sequence[Event]) -> None:
        """Deliver events to every subscriber."""
        for q in list(self._subscribers):
            for e in events:
                q.offer(e)
