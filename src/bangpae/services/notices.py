"""Notices: decide from each stored event what victims and staff are told, and deliver it.

The decisions are :mod:`bangpae.domain.notices`; this module de-duplicates them
against what was already sent (kept in the store, so a restart does not buzz
everyone again), delivers each through every channel (the live WebSocket streams,
Web Push, the SMS/voice gateway) and keeps the record of what was said to whom,
when, and how each channel fared.

It also watches bangpae itself: while ingest is failing, every protected person
with an active order is told the service is degraded (within a tick of it
happening, and so well inside 10 minutes), and told again when it is back. The
offender is never told anything.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bangpae.domain import notices
from bangpae.domain.model import Device, Event, EventKind, Order, Person
from bangpae.domain.notices import Contact, Notice
from bangpae.services.ingest import Ingest
from bangpae.services.ports import Clock

log = logging.getLogger(__name__)

Listener = Callable[[dict[str, Any]], Awaitable[None]]
_SILENT = (EventKind.OFFLINE, EventKind.NO_FIX)
KEEP_PER_COMMIT = 200  # his device went quiet: she is told


class NoticeLog(Protocol):
    """What the notifier reads and records of the store (``adapters.store.notices``)."""

    def get_orders(self, order_ids: Iterable[int]) -> dict[int, Order]:
        """Orders by id, in one query (an id not found is left out)."""
        ...

    def orders_for_person(self, person_id: int) -> list[Order]:
        """Orders in which a person is the offender or the victim."""
        ...

    def load_all(self) -> tuple[list[Person], list[Device], list[Order]]:
        """Everyone, every device and every order: what the engine needs to start."""
        ...

    def last_notices_at(self, dedup_keys: Iterable[str]) -> dict[str, float | None]:
        """When a notice with each key was last sent (None: never)."""
        ...

    def add_notices(self, sent: Sequence[tuple[Notice, dict[str, str]]]) -> list[int]:
        """Keep sent notices with the outcome of each channel, in one transaction; their ids."""
        ...


class TextRecords(Protocol):
    """What texting her reads of the store for a round: contacts, orders, recent texts."""

    def contacts(self, person_ids: Iterable[int]) -> dict[int, Contact]:
        """The contacts of many people at once (for the texts of a round of notices)."""
        ...

    def get_orders(self, order_ids: Iterable[int]) -> dict[int, Order]:
        """Orders by id, in one query (an id not found is left out)."""
        ...

    def sms_recent(
        self, person_ids: Iterable[int], since: float
    ) -> tuple[dict[tuple[int, str], float], dict[int, int]]:
        """Texts for notices of these people since ``since`` (notice time): when the last
        of each (person, kind) was, and how many each person had (for the cap)."""
        ...


class NoticeChannel(Protocol):
    """One way of reaching people: deliver notices, say how each went in a few words."""

    name: str

    async def deliver_all(self, batch: Sequence[Notice]) -> list[str]:
        """Deliver each notice of a round to its audience (what it needs read at once);
        an outcome for each, such as ``sent 1/1``."""
        ...


class Gateway(Protocol):
    """An SMS or voice gateway: send one short text to one phone number."""

    kind: str

    async def send(self, phone: str, text: str, notice: Notice | None = None) -> str:
        """Send (or queue) the text of ``notice``; an outcome such as ``queued`` or ``logged``."""
        ...


def notice_message(notice: Notice) -> dict[str, Any]:
    """A notice as the apps receive it on their stream."""
    return {
        "type": "notice",
        "kind": notice.kind,
        "priority": notice.priority,
        "order_id": notice.order_id,
        "at": notice.at,
        "text": notice.text.as_dict(),
    }


class StreamHub:
    """The open WebSocket streams, by victim and by staff role: the in-app channel."""

    name = "stream"

    def __init__(self) -> None:
        self._people: dict[int, set[Listener]] = {}
        self._roles: dict[str, set[Listener]] = {}

    def listen_person(self, person_id: int, listener: Listener) -> None:
        """Send this victim's notices to ``listener`` (her open app)."""
        self._people.setdefault(person_id, set()).add(listener)

    def listen_role(self, role: str, listener: Listener) -> None:
        """Send this staff role's notices to ``listener`` (an open console)."""
        self._roles.setdefault(role, set()).add(listener)

    def forget(self, listener: Listener) -> None:
        """Stop sending to ``listener``."""
        for group in (*self._people.values(), *self._roles.values()):
            group.discard(listener)

    async def deliver(self, notice: Notice) -> str:
        """Send to every open stream of the audience; ``sent n`` or ``no open app``."""
        if notice.audience == notices.VICTIM:
            targets = self._people.get(notice.person_id or -1, set())
        else:
            targets = self._roles.get(notice.role or "", set())
        message = notice_message(notice)
        sent = 0
        for listener in list(targets):
            try:
                await listener(message)
                sent += 1
            except Exception:  # a closed socket: its stream cleans up on its own
                log.debug("notice to a closing stream dropped", exc_info=True)
        return f"sent {sent}" if sent else "no open app"

    async def deliver_all(self, batch: Sequence[Notice]) -> list[str]:
        """Each notice in turn: nothing to read first."""
        return [await self.deliver(n) for n in batch]


class SmsChannel:
    """Her notices as text messages to her phone, as she chose (docs/sms.md).

    Which notices are texted, in which language, and how often, are the rules of
    :mod:`bangpae.domain.notices` (``sms_wanted``, ``sms_capped``); this reads her contact,
    her order's profile and her recent texts for a whole round at once, and hands each
    text to the gateway (SMPP, or the log sink when none is configured).
    """

    def __init__(self, store: TextRecords, gateway: Gateway) -> None:
        self.store = store
        self.gateway = gateway
        self.name = gateway.kind

    def _round(
        self, people: list[int], order_ids: list[int], now: float
    ) -> tuple[dict[int, Contact], dict[int, Order], dict[tuple[int, str], float], dict[int, int]]:
        contacts = self.store.contacts(people)
        orders = self.store.get_orders(order_ids)
        last, count = self.store.sms_recent(people, now - 3600.0)
        return contacts, orders, last, count

    async def deliver_all(self, batch: Sequence[Notice]) -> list[str]:
        """Text each notice she chose to be texted, unless the cap holds it back."""
        mine = [n for n in batch if n.audience == notices.VICTIM and n.person_id is not None]
        if not mine:
            return ["not for staff"] * len(batch)
        now = max(n.at for n in mine)  # the cap counts in the notices' own time
        people = sorted({n.person_id for n in mine if n.person_id is not None})
        order_ids = sorted({n.order_id for n in mine if n.order_id is not None})
        contacts, orders, last, count = await asyncio.to_thread(self._round, people, order_ids, now)
        out = []
        for notice in batch:
            pid = notice.person_id
            contact = contacts.get(pid) if pid is not None else None
            order = orders.get(notice.order_id) if notice.order_id is not None else None
            prefs = notices.sms_prefs(
                contact.sms_prefs if contact is not None else None,
                order.profile if order is not None else "kr",
            )
            why = notices.sms_wanted(notice, prefs)
            if why is not None:
                out.append(why)
                continue
            if pid is None or contact is None or not contact.phone:
                out.append("no phone number")
                continue
            if notices.sms_capped(notice, last.get((pid, notice.kind)), count.get(pid, 0)):
                out.append("capped")
                continue
            last[(pid, notice.kind)] = notice.at
            count[pid] = count.get(pid, 0) + 1
            try:
                out.append(
                    await self.gateway.send(
                        contact.phone, notices.sms_text(notice, prefs.lang), notice
                    )
                )
            except Exception as exc:  # the store failing: the next text may still go
                log.exception("a text for a notice could not be queued")
                out.append(f"failed: {type(exc).__name__}")
        return out


@dataclass
class NoticeStats:
    """Counters for /metrics."""

    events: int = 0  # stored events looked at
    sent: int = 0
    suppressed: int = 0
    failed_channels: int = 0


class Notifier:
    """Turns stored events (and the service's own health) into delivered notices."""

    def __init__(
        self,
        store: NoticeLog,
        clock: Clock,
        hub: StreamHub,
        channels: Sequence[NoticeChannel] = (),
    ) -> None:
        self.store = store
        self.clock = clock
        self.hub = hub
        self.channels = list(channels)
        self.stats = NoticeStats()
        # dedup key -> last sent (None: never), a cache of the store: only this writes notices
        self._last: dict[str, float | None] = {}
        self._degraded: str | None = None

    # -- deciding -----------------------------------------------------------------------

    def _orders_of(self, events: Sequence[Event]) -> list[list[Order]]:
        """The orders each event concerns (one visit to the store for a whole round)."""
        tier_orders = self.store.get_orders(
            e.order_id
            for e in events
            if e.kind == EventKind.SHOWN_TIER_CHANGED and e.order_id is not None
        )
        out: list[list[Order]] = []
        for event in events:
            if event.kind == EventKind.SHOWN_TIER_CHANGED and event.order_id is not None:
                order = tier_orders.get(event.order_id)
                out.append([] if order is None else [order])
            elif event.kind in _SILENT and event.person_id is not None:
                out.append(
                    [
                        o
                        for o in self.store.orders_for_person(event.person_id)
                        if o.offender_id == event.person_id
                    ]
                )
            else:
                out.append([])
        return out

    async def on_events(self, events: Sequence[Event]) -> int:
        """Decide and send the notices of stored events; how many were sent."""
        # store-and-forward data: the moment has passed, the console has it
        live = [e for e in events if not e.late]
        sent = 0
        if live:
            orders = await asyncio.to_thread(self._orders_of, live)
            sent = await self.send_all(
                [
                    n
                    for e, os in zip(live, orders, strict=True)
                    for n in (*notices.victim_notices(e, os), *notices.staff_notices(e))
                ]
            )
        self.stats.events += len(events)  # looked at, and what they caused was sent and kept
        return sent

    async def check_service(self, ingest: Ingest) -> int:
        """Tell victims when bangpae becomes degraded, and when it is back."""
        now = self.clock.now()
        reason = ingest.degraded(now)
        if (reason is None) == (self._degraded is None):
            return 0
        was, self._degraded = self._degraded, reason
        if reason is not None:
            log.error("service degraded: %s; telling the protected people", reason)
        else:
            log.warning("service restored after: %s", was)
        _, _, orders = await asyncio.to_thread(self.store.load_all)
        return await self.send_all(notices.service_notices(orders, reason is not None, now))

    # -- sending ------------------------------------------------------------------------

    async def send_all(self, batch: Sequence[Notice]) -> int:
        """Deliver each notice unless one with its key went out recently; how many went.

        Each goes through every channel, the open apps first (fastest), then Web Push
        and the gateway; then the record of what was said is kept. A few hundred at a
        time, each kept in one transaction: a storm of tier changes must neither queue a
        commit per notice in front of the fixes nor hold the writer's lock, or the event
        loop, for long in front of them and of the apps' own updates.
        """
        sent = 0
        for i in range(0, len(batch), KEEP_PER_COMMIT):
            sent += await self._send_chunk(batch[i : i + KEEP_PER_COMMIT])
        return sent

    async def _send_chunk(self, batch: Sequence[Notice]) -> int:
        unknown = {n.dedup_key for n in batch if n.dedup_key not in self._last}
        if unknown:
            self._last.update(await asyncio.to_thread(self.store.last_notices_at, unknown))
        due: list[Notice] = []
        for notice in batch:
            if not notices.due(self._last.get(notice.dedup_key), notice):
                self.stats.suppressed += 1
                continue
            self._last[notice.dedup_key] = notice.at
            due.append(notice)
        if not due:
            return 0
        deliveries: list[dict[str, str]] = [{} for _ in due]
        for ch in [self.hub, *self.channels]:
            try:
                outcomes = await ch.deliver_all(due)
            except Exception as exc:  # one channel failing never stops the others
                log.exception("notice channel %s failed", ch.name)
                outcomes = [f"failed: {type(exc).__name__}"] * len(due)
                self.stats.failed_channels += len(due)
            for delivery, outcome in zip(deliveries, outcomes, strict=True):
                delivery[ch.name] = outcome
        self.stats.sent += len(due)
        try:
            await asyncio.to_thread(self.store.add_notices, list(zip(due, deliveries, strict=True)))
        except Exception:  # the store may be what is failing: the people were still told
            log.exception("%d notices could not be kept", len(due))
        return len(due)


async def run_service_health(notifier: Notifier, ingest: Ingest, tick_s: float = 1.0) -> None:
    """Tell the protected people when the service degrades and recovers, until cancelled.

    The notices of stored events are a reaction (``services/reactions.py``); this
    follows the service's own health, which no event carries.
    """
    while True:
        try:
            await notifier.check_service(ingest)
        except Exception:
            log.exception("service health check failed")
        await asyncio.sleep(tick_s)
