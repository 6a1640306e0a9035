"""What the service does about stored events: a table of reactions per event kind.

A reaction (her notices, her app's pursuit interval, the supervisor's page) runs after
the event is committed and is never dropped: it follows the bus without a bound, in
its own lane so that a slow one (a push service, an SMS gateway) never holds up
another, and an event's due row in the store (``reactions_due``) is deleted only
when every reaction of its kind has run. At start, what a crash interrupted is read
back from those rows and run first (those older than ``RESUME_FRESH_S`` as late data,
which tells her nothing on her lock screen). Screens are not reactions: they keep bounded
queues and say when they drop (``adapters/bus.py``). See docs/architecture.md,
"Reactions".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from bangpae.domain.model import Event, EventKind
from bangpae.services.ports import Bus, Clock

log = logging.getLogger(__name__)

Handler = Callable[[Sequence[Event]], Awaitable[object]]
RESUME_PAGE = 10_000  # due events read back at a time at start
# A resumed event older than this is run as late data, like a store-and-forward upload:
# after a long stop, "he is 40 m from you" would be news of a moment long gone (the
# restored state and the next fixes say what is true now; the console has the rest).
RESUME_FRESH_S = 300.0
FLUSH_EVERY_S = 1.0  # done rows wait at most this long for the writer's next batch


class DueReactions(Protocol):
    """What the reactions need of the store."""

    def react_to(self, kinds: Iterable[EventKind]) -> None:
        """Keep a due row for each new event of these kinds."""
        ...

    def reactions_due(self, limit: int = RESUME_PAGE) -> list[Event]:
        """The oldest events still waiting for their reactions."""
        ...

    def reactions_done(self, event_ids: Sequence[str]) -> None:
        """These events' reactions have run: forget their due rows with the next write."""
        ...

    def flush_reactions_done(self) -> int:
        """Forget the due rows of events whose reactions have run, now."""
        ...


@dataclass
class ReactionStats:
    """What the reactions have done since start."""

    seen: int = 0  # events taken from the bus or read back at start
    resumed: int = 0  # of those, read back: committed before a stop, not yet reacted to
    failed: int = 0  # handler calls that raised (their events stay due until a restart)


@dataclass
class _Lane:
    name: str
    handler: Handler
    queue: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)  # never bounded
    busy: bool = False


class Reactions:
    """The handler table; ``run()`` follows the bus until cancelled."""

    def __init__(self, store: DueReactions, bus: Bus, clock: Clock) -> None:
        self.store = store
        self.bus = bus
        self.clock = clock
        self.stats = ReactionStats()
        self._lanes: dict[str, _Lane] = {}
        self._table: dict[EventKind, list[_Lane]] = {}
        self._remaining: dict[str, int] = {}  # event id -> lanes still to run it
        self._failed: set[str] = set()  # some reaction raised: left due for the next start

    def on(self, kinds: Iterable[EventKind], name: str, handler: Handler) -> None:
        """Run ``handler`` on every stored event of these kinds (batches, in order)."""
        lane = self._lanes.setdefault(name, _Lane(name, handler))
        for kind in kinds:
            self._table.setdefault(kind, []).append(lane)
        self.store.react_to(self._table)

    @property
    def idle(self) -> bool:
        """Nothing taken from the bus is waiting for a reaction."""
        return not any(lane.busy or not lane.queue.empty() for lane in self._lanes.values())

    def caught_up(self, published: int) -> bool:
        """Whether ``published`` events have been taken from the bus and reacted to."""
        return self.stats.seen >= published and self.idle

    async def run(self) -> None:
        """Resume what a stop interrupted, then follow the bus, until cancelled."""
        q = self.bus.subscribe(lossless=True)  # first: nothing committed from now is missed
        lanes = [
            asyncio.create_task(self._run_lane(lane), name=f"reactions-{lane.name}")
            for lane in self._lanes.values()
        ]
        lanes.append(asyncio.create_task(self._flush_done(), name="reactions-done"))
        try:
            resumed = await self._resume()
            while True:
                events = [await q.get()]
                while not q.empty():
                    events.append(q.get_nowait())
                if resumed:  # read back at start and published too: run once
                    again = resumed.intersection(e.id for e in events)
                    resumed -= again
                    events = [e for e in events if e.id not in again]
                self._fan_out(events)
        finally:
            for task in lanes:
                task.cancel()
            self.bus.unsubscribe(q)

    async def _flush_done(self) -> None:
        """When no batch has carried them for a while, delete the done rows on their own."""
        while True:
            await asyncio.sleep(FLUSH_EVERY_S)
            try:
                await asyncio.to_thread(self.store.flush_reactions_done)
            except Exception:  # they ran; at worst a restart runs them again
                log.exception("the done reactions could not be forgotten")

    async def _resume(self) -> set[str]:
        ids: set[str] = set()
        while True:
            due = await asyncio.to_thread(self.store.reactions_due, RESUME_PAGE)
            due = [e for e in due if e.id not in ids]
            if not due:
                break
            log.warning("resuming the reactions of %d stored events", len(due))
            ids.update(e.id for e in due)
            now = self.clock.now()
            due = [e if now - e.at <= RESUME_FRESH_S else replace(e, late=True) for e in due]
            self.stats.resumed += len(due)
            self._fan_out(due)
            await self._settle()
            await asyncio.to_thread(self.store.flush_reactions_done)  # before the next page
        return ids

    async def _settle(self) -> None:
        while not self.idle:  # noqa: ASYNC110 - the lanes are this object's own tasks
            await asyncio.sleep(0.01)

    def _fan_out(self, events: Sequence[Event]) -> None:
        self.stats.seen += len(events)
        for e in events:
            lanes = self._table.get(e.kind, ())
            if not lanes or e.id in self._remaining:
                continue
            self._remaining[e.id] = len(lanes)
            for lane in lanes:
                lane.queue.put_nowait(e)

    async def _run_lane(self, lane: _Lane) -> None:
        while True:
            batch = [await lane.queue.get()]
            lane.busy = True
            try:
                while not lane.queue.empty():
                    batch.append(lane.queue.get_nowait())
                try:
                    await lane.handler(batch)
                except Exception:  # due rows stay: the next start runs them again
                    log.exception("reaction %s failed for %d events", lane.name, len(batch))
                    self.stats.failed += 1
                    self._failed.update(e.id for e in batch)
                    continue
                done = []
                for e in batch:
                    left = self._remaining.get(e.id, 1) - 1
                    if left > 0:
                        self._remaining[e.id] = left
                    else:
                        self._remaining.pop(e.id, None)
                        if e.id not in self._failed:
                            done.append(e.id)
                if done:
                    self.store.reactions_done(done)  # deleted with the writer's next batch
            finally:
                lane.busy = False
