"""Live views of the engine: which open streams follow which orders, and what each is
handed after a batch.

The single writer (:class:`~bangpae.services.ingest.Ingest`) asks three things of it,
at fixed points of a batch: which streams the batch touched (:meth:`LiveViews.following`),
under its lock the status each such stream's view shows with the audit records of the
positions in it (:meth:`LiveViews.views`: those records are committed with the batch,
so a position is audited before it is sent), and after the commit, hand each its status
(:meth:`LiveViews.announce`). A stream follows orders with :meth:`LiveViews.watch` and
reads its queue. See docs/architecture.md and docs/disclosure.md ("The live link").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bangpae.domain.audit import AuditEntry

log = logging.getLogger(__name__)

# What a live stream gets: the status a batch showed it (already audited), the orders
# a batch or a timer touched (it reads its status itself), or REGISTRY_CHANGED (people,
# devices or orders changed: it reads which orders it follows again).
REGISTRY_CHANGED = "registry"
Update = dict[str, Any] | set[int] | str
# A stream's view of the engine: its status now and the audit records of the positions it
# shows, written in the transaction of the batch that changed it.
View = Callable[[float], tuple[dict[str, Any], list[AuditEntry]]]
QUEUE = 1000  # updates a stream may fall behind by; past it, the oldest detail goes


@dataclass(eq=False)
class _Watch:
    queue: asyncio.Queue[Update]
    view: View | None


class LiveViews:
    """The open live streams, by the orders they follow."""

    def __init__(self, check_audit: Callable[[AuditEntry], None]) -> None:
        self._check_audit = check_audit  # a record the audit log cannot hold fails early
        self._watchers: dict[int, set[_Watch]] = {}
        self._streams: set[_Watch] = set()  # every live stream, whatever it follows

    def __bool__(self) -> bool:
        """Whether any stream follows any order (a batch then looks for them)."""
        return bool(self._watchers)

    def registry_changed(self) -> None:
        """People, devices or orders changed: every stream reads what it follows again."""
        for w in self._streams:
            self._put(w.queue, REGISTRY_CHANGED)

    def watch(self, order_ids: Iterable[int], view: View | None = None) -> asyncio.Queue[Update]:
        """A queue for a live stream following these orders: after each committed batch
        that touched some of them, the status ``view`` gives (its audit records were
        committed with the batch), or without a view the orders touched.

        A view runs on the event loop right after the engine took the batch, so the
        status is the one the batch made and its reads are audited before it is sent.
        """
        w = _Watch(asyncio.Queue(QUEUE), view)
        self._streams.add(w)
        for oid in set(order_ids):
            self._watchers.setdefault(oid, set()).add(w)
        return w.queue

    def rewatch(self, q: asyncio.Queue[Update], order_ids: Iterable[int]) -> None:
        """Follow these orders with a queue from now on (its orders changed)."""
        w = next((w for w in self._streams if w.queue is q), None)
        if w is None:
            return
        self._drop(q)
        for oid in set(order_ids):
            self._watchers.setdefault(oid, set()).add(w)

    def unwatch(self, q: asyncio.Queue[Update]) -> None:
        """Stop announcing to a queue."""
        self._drop(q)
        self._streams = {w for w in self._streams if w.queue is not q}

    def _drop(self, q: asyncio.Queue[Update]) -> None:
        for oid in list(self._watchers):
            self._watchers[oid] = {w for w in self._watchers[oid] if w.queue is not q}
            if not self._watchers[oid]:
                del self._watchers[oid]

    @staticmethod
    def _put(q: asyncio.Queue[Update], update: Update) -> None:
        if q.full():  # a slow reader loses detail, never the fact that something changed
            q.get_nowait()
        q.put_nowait(update)

    def following(self, touched: set[int]) -> dict[_Watch, set[int]]:
        """The streams following some of ``touched``, each with those orders."""
        found: dict[_Watch, set[int]] = {}
        for oid in touched & self._watchers.keys():
            for w in self._watchers[oid]:
                found.setdefault(w, set()).add(oid)
        return found

    def views(
        self, following: dict[_Watch, set[int]], now: float
    ) -> tuple[dict[_Watch, dict[str, Any]], list[AuditEntry]]:
        """The status of each stream with a view that the batch touched, and the audit
        records of the positions they show."""
        views: dict[_Watch, dict[str, Any]] = {}
        audits: list[AuditEntry] = []
        for w in following:
            if w.view is None:
                continue
            try:
                status, reads = w.view(now)
                for r in reads:
                    self._check_audit(r)
            except Exception:  # that stream reads (and audits) its status itself
                log.exception("a live view failed")
                continue
            views[w] = status
            audits.extend(reads)
        return views, audits

    def announce(
        self, following: dict[_Watch, set[int]], views: dict[_Watch, dict[str, Any]] | None = None
    ) -> None:
        """Hand each stream its view, or the orders of its that were touched."""
        for w, mine in following.items():
            self._put(w.queue, views[w] if views and w in views else mine)
