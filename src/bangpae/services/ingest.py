"""Ingest: decide, store durably in one transaction, then acknowledge and publish.

Fixes submitted by every listener meet in one queue. A single worker takes
whatever is waiting (group commit), lets the engine decide on the whole batch,
writes fixes, events and incidents in one transaction, and only then resolves
each submitter's future: a device is acknowledged only for what is on disk.
If the transaction fails, nobody is acknowledged and the engine is rebuilt from
the store, so its state never runs ahead of what was kept.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from bangpae.domain import incidents, playbooks, retro
from bangpae.domain.audit import AuditEntry
from bangpae.domain.batch import FixBatch, PackedFixes
from bangpae.domain.model import Device, Event, EventKind, Fix, Order, Person, Tier, make_event
from bangpae.engine.engine import Engine
from bangpae.services.live import LiveViews
from bangpae.services.ports import Bus, Clock, Registry

log = logging.getLogger(__name__)

# How far back the partner's stored fix may be for a late fix to be judged against it.
RETRO_WINDOW_S = 120.0


@dataclass
class IngestStats:
    """Counters for /metrics."""

    fixes: int = 0
    batches: int = 0
    late: int = 0
    events: int = 0
    failures: int = 0
    refused: int = 0  # fixes of a submission that failed on its own (isolated)
    last_failure_at: float | None = None  # a batch or a timer tick that failed, on the app clock


@dataclass
class _Pending:
    fixes: FixBatch | PackedFixes
    future: asyncio.Future[list[int]]


class FixLog(Registry, Protocol):
    """What the single writer reads and writes of the store: fixes with the events,
    incidents and audit records they cause, in one transaction."""

    def load_all(self) -> tuple[list[Person], list[Device], list[Order]]:
        """Everyone, every device and every order: what the engine needs to start."""
        ...

    def latest_fixes(self) -> dict[int, Fix]:
        """The newest live (not late) fix of every device, for rebuilding the engine."""
        ...

    def latest_tiers(self) -> dict[int, tuple[Tier, Tier, float]]:
        """Each order's live tier from its last live tier change: (tier, base tier, since)."""
        ...

    def latest_shown(self) -> dict[int, Tier]:
        """What each order's protected person was last shown, from its last live change."""
        ...

    def disclosure_pauses(self) -> dict[int, bool]:
        """Each order's disclosure pause, from its last guard detection or operator decision."""
        ...

    def fix_at_or_before(self, device_ids: Sequence[int], t: float, window_s: float) -> Fix | None:
        """The newest valid fix of these devices at or before ``t``, no older than the window."""
        ...

    def check_audit(self, entry: AuditEntry) -> None:
        """Invalid unless :meth:`audit_append` would take this record (a column too short
        for it); TypeError if it is not an :class:`AuditEntry`."""
        ...

    def record_batch(
        self,
        fixes: Sequence[Fix] | FixBatch,
        late: Sequence[bool] | npt.NDArray[np.bool_],
        plans: Sequence[tuple[Event, str | None, str | None]],
        audits: Sequence[AuditEntry] = (),
    ) -> tuple[list[int], list[Event]]:
        """One transaction: fixes, new events, the incidents they open or join, and the
        audit records of the reads the batch's news will be shown in (live streams)."""
        ...


class Ingest:
    """The single writer: group commit of fixes with the events they cause."""

    def __init__(
        self, store: FixLog, engine: Engine, clock: Clock, bus: Bus, max_batch: int = 5000
    ) -> None:
        self.store = store
        self.engine = engine
        self.clock = clock
        self.bus = bus
        self.max_batch = max_batch
        self.stats = IngestStats()
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        # live streams, by the orders each follows: a batch wakes only those it touched
        # the open live streams and what each follows (docs/architecture.md)
        self.live = LiveViews(self.store.check_audit)
        self._stale_engine = False
        # orders whose profile changes which incidents events open (kr, the default, does not)
        self._profiles: dict[int, str] = {}
        # The one writer thread: commits never wait behind readers in the shared pool.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-writer")

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self, tick_s: float = 1.0) -> None:
        """Rebuild the engine from the store and start the writer and the timers."""
        await self.reload_registry(restore=True)
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run(), name="ingest-writer")
        self._ticker = asyncio.create_task(self._tick_loop(tick_s), name="ingest-timers")

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        if self._queue is not None:
            await self._queue.join()
        for task in (self._worker, self._ticker):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass

    async def reload_registry(self, restore: bool = False) -> None:
        """Load people, devices and orders (after a change); on start also live state.

        An order new to the engine is decided at once from both parties' latest positions
        (what that decides is stored before this returns), and every live stream is told
        to read its orders again: an order entered while her link is open reaches her
        within a moment, not at his next fix.
        """
        people, devices, orders = await asyncio.to_thread(self.store.load_all)
        self._profiles = {o.id: o.profile for o in orders if o.profile != "kr"}
        events: list[Event] = []
        async with self._lock:
            if restore:
                self.engine = Engine(self.engine.grid_key)
            new = [o.id for o in orders if self.engine.tier_of(o.id) is None]
            self.engine.load(people, devices, orders)
            if not restore and new:
                events = self.engine.evaluate_orders(new, self.clock.now())
            if restore:
                latest = await asyncio.to_thread(self.store.latest_fixes)
                tiers = await asyncio.to_thread(self.store.latest_tiers)
                shown = await asyncio.to_thread(self.store.latest_shown)
                self.engine.restore(latest, tiers, shown)
                pauses = await asyncio.to_thread(self.store.disclosure_pauses)
                for order_id, paused in pauses.items():
                    self.engine.set_misuse_pause(order_id, paused)
        if events:
            await self.record(*events)
        self.live.registry_changed()

    def profile_of(self, order_id: int) -> str:
        """An order's response profile (``kr`` unless the registry says otherwise)."""
        return self._profiles.get(order_id, "kr")

    def degraded(self, now: float, window_s: float = 60.0) -> str | None:
        """Why the service cannot be trusted right now (None: it can).

        Degraded while the writer or the timers have stopped, and for ``window_s``
        after a batch or a timer tick failed.
        """
        for name, task in (("writer", self._worker), ("timers", self._ticker)):
            if task is None or task.done():
                return f"ingest {name} stopped"
        last = self.stats.last_failure_at
        if last is not None and now - last < window_s:
            return "storing fixes failed"
        return None

    # -- intake -------------------------------------------------------------------------

    async def submit(self, fixes: Sequence[Fix] | FixBatch | PackedFixes) -> list[int]:
        """Queue fixes; return their stored ids once durably committed and evaluated."""
        if not len(fixes):
            return []
        return await self.enqueue(fixes)

    def enqueue(self, fixes: Sequence[Fix] | FixBatch | PackedFixes) -> asyncio.Future[list[int]]:
        """Queue fixes; the future gets their stored ids once durably committed and evaluated.

        For callers that wait by callback rather than by ``await`` (a protocol's
        ``data_received``); ``submit`` is the same for coroutines.
        """
        if self._queue is None:
            raise RuntimeError("ingest is not started")
        fut: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        batch = fixes if isinstance(fixes, FixBatch | PackedFixes) else FixBatch.of(fixes)
        if not len(batch):
            fut.set_result([])
        else:
            self._queue.put_nowait(_Pending(batch, fut))  # unbounded: never waits
        return fut

    async def _run(self) -> None:
        assert self._queue is not None
        q = self._queue
        while True:
            first = await q.get()
            batch = [first]
            size = len(first.fixes)
            while size < self.max_batch and not q.empty():
                item = q.get_nowait()
                batch.append(item)
                size += len(item.fixes)
            try:
                if self._stale_engine:  # the last rebuild failed: the engine may be ahead
                    await self.reload_registry(restore=True)
                    self._stale_engine = False
                await self._process(batch)
            except Exception as exc:  # a failed batch must not stop the writer
                log.exception("ingest batch of %d fixes failed", size)
                if not await self._rebuild() or len(batch) == 1:
                    self._failed(batch, exc)
                else:
                    await self._isolate(batch)
            finally:
                for _ in batch:
                    q.task_done()

    async def _rebuild(self) -> bool:
        """Rebuild the engine from the store (it must not run ahead of what was kept)."""
        try:
            await self.reload_registry(restore=True)
            self._stale_engine = False
            return True
        except Exception:  # the store is still failing: rebuild before the next batch
            log.exception("rebuilding the engine from the store failed")
            self._stale_engine = True
            return False

    def _failed(self, batch: list[_Pending], exc: BaseException) -> None:
        """Refuse these submissions: the service itself failed (the victims are told)."""
        self.stats.failures += 1
        self.stats.last_failure_at = self.clock.now()
        for p in batch:
            if not p.future.done():
                p.future.set_exception(exc)

    async def _isolate(self, batch: list[_Pending]) -> None:
        """After a batch failed, take its submissions one at a time: the healthy ones are
        stored and acknowledged, a failing one alone is refused with an incident.

        Only when every one fails alone is the service itself failing.
        """
        bad: list[tuple[_Pending, BaseException]] = []
        for p in batch:
            try:
                await self._process([p])
            except Exception as exc:
                log.exception("a submission of %d fixes failed on its own", len(p.fixes))
                bad.append((p, exc))
                if not await self._rebuild():
                    break
        if len(bad) == len(batch) or self._stale_engine:
            self._failed(batch, bad[-1][1] if bad else RuntimeError("ingest failed"))
            return
        now = self.clock.now()
        for p, error in bad:  # the incident is kept before the sender hears of the refusal
            self.stats.refused += len(p.fixes)
            fixes = p.fixes if isinstance(p.fixes, FixBatch) else FixBatch.concat([p.fixes])
            refused = [
                make_event(
                    EventKind.FIX_REFUSED,
                    now,
                    device,
                    type(error).__name__,
                    device_id=device,
                    person_id=self.engine.person_of_device(device),
                    data={"error": type(error).__name__, "fixes": len(p.fixes)},
                )
                for device in sorted(set(fixes.device.tolist()))
            ]
            try:
                await self.record(*refused)
            except Exception:  # the writer goes on; the refusal is logged all the same
                log.exception("recording a refused submission failed")
            p.future.set_exception(error)

    async def _process(self, batch: list[_Pending]) -> None:
        fixes = FixBatch.concat([p.fixes for p in batch])
        now = self.clock.now()
        async with self._lock:
            events, late_flags = self.engine.ingest_batch(fixes, now)
            late = self.engine.drain_late()
            touched = self.engine.orders_touched(fixes.device) if self.live else set()
            following = self.live.following(touched)
            views, audits = self.live.views(following, now)
        ids, new_events = await asyncio.get_running_loop().run_in_executor(
            self._writer, self._commit, fixes, late_flags, events, late, audits
        )
        pos = 0
        for p in batch:
            n = len(p.fixes)
            if not p.future.done():
                p.future.set_result(ids[pos : pos + n])
            pos += n
        self.stats.fixes += len(fixes)
        self.stats.batches += 1
        self.stats.late += len(late)
        self.stats.events += len(new_events)
        if new_events:
            await self.bus.publish(new_events)
        self.live.announce(following, views)

    def _commit(
        self,
        fixes: FixBatch,
        late_flags: npt.NDArray[np.bool_],
        events: list[Event],
        late: list[Fix],
        audits: list[AuditEntry],
    ) -> tuple[list[int], list[Event]]:
        """Runs in a worker thread: retro evaluation of late fixes, then one transaction."""
        events = events + self._retro(late)
        return self.store.record_batch(fixes, late_flags, self._plans(events), audits)

    def _plans(self, events: list[Event]) -> list[tuple[Event, str, incidents.Priority | None]]:
        """Each event with the incident kind it opens or joins, and at which priority."""
        out = []
        for e in events:
            kind, priority = incidents.incident_kind(e), incidents.priority_of(e)
            profile = self._profiles.get(e.order_id) if e.order_id is not None else None
            if profile is not None:
                kind, priority = playbooks.profile_incident(profile, e, kind, priority)
            out.append((e, kind, priority))
        return out

    def _retro(self, late: list[Fix]) -> list[Event]:
        """Judge late fixes against the partner's stored fix of that time."""
        out: list[Event] = []
        for fix in late:
            if fix.alarms:
                device = self.store.get_device(fix.device_id)
                person = device.person_id if device is not None else None
                out.extend(retro.evaluate_late_alarms(fix, person))
            for order, partner_devices in self._orders_with_partner_devices(fix.device_id):
                partner = self.store.fix_at_or_before(partner_devices, fix.fix_time, RETRO_WINDOW_S)
                out.extend(
                    retro.evaluate_late(
                        order, fix, partner, fix.device_id in self._offender_devices(order)
                    )
                )
        return out

    def _orders_with_partner_devices(self, device_id: int) -> list[tuple[Order, list[int]]]:
        device = self.store.get_device(device_id)
        if device is None:
            return []
        result = []
        for order in self.store.orders_for_person(device.person_id):
            other = order.victim_id if order.offender_id == device.person_id else order.offender_id
            result.append((order, self.store.device_ids_of_person(other)))
        return result

    def _offender_devices(self, order: Order) -> set[int]:
        return set(self.store.device_ids_of_person(order.offender_id))

    async def record(self, *events: Event) -> list[Event]:
        """Store events raised outside the engine (a cloned tracker) by the one writer, with
        the incidents they open, then publish them; return those that were new."""
        _, new_events = await asyncio.get_running_loop().run_in_executor(
            self._writer, self.store.record_batch, [], [], self._plans(list(events))
        )
        if new_events:
            self.stats.events += len(new_events)
            await self.bus.publish(new_events)
        return list(new_events)

    # -- timers -------------------------------------------------------------------------

    async def tick(self) -> list[Event]:
        """Fire due timers now; store and publish what they raise."""
        async with self._lock:
            events = self.engine.tick(self.clock.now())
        if not events:
            return []
        _, new_events = await asyncio.get_running_loop().run_in_executor(
            self._writer, self.store.record_batch, [], [], self._plans(events)
        )
        if new_events:
            await self.bus.publish(new_events)
        self.live.announce(
            self.live.following({e.order_id for e in events if e.order_id is not None})
        )
        return list(new_events)

    async def _tick_loop(self, tick_s: float) -> None:
        while True:
            await asyncio.sleep(tick_s)
            try:
                await self.tick()
            except Exception:  # a failed tick is retried on the next one
                log.exception("timer tick failed")
                self.stats.last_failure_at = self.clock.now()
