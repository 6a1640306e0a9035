"""Store methods for the reactions still due: committed events not yet acted on.

A mixin of :class:`~bangpae.adapters.store.store.Store`. An event that has reactions
(notices, pursuit) gets a row in ``reactions_due`` in the transaction that stores it;
the row is deleted once every reaction has run, in the next write transaction (no
transaction of its own beside the writer's). What a crash interrupts is therefore still
there at the next start, in the order it was committed
(docs/architecture.md, "Reactions").
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from sqlalchemy import Connection, delete, select

from bangpae.adapters.store import schema as s
from bangpae.adapters.store.base import StoreBase, bound_list, one_of
from bangpae.domain.model import Event, EventKind

_DUE_IN = one_of(s.reactions_due.c.event_id, "ids")
_DONE_LOCK = threading.Lock()


class ReactionStore(StoreBase):
    """The events whose reactions have not all run."""

    # the kinds some reaction follows (set by the composition root); others get no row
    reacting_kinds: frozenset[EventKind] = frozenset()
    _done: list[str] | None = None  # events whose reactions have run, rows not yet deleted

    def react_to(self, kinds: Iterable[EventKind]) -> None:
        """From now on, keep a due row for each new event of these kinds."""
        self.reacting_kinds = frozenset(kinds)

    def _queue_reactions(self, c: Connection, events: Sequence[Event]) -> None:
        """Within the transaction storing ``events``: a due row for those with reactions,
        and the rows of events whose reactions have run since the last write deleted."""
        rows = [{"event_id": e.id} for e in events if e.kind in self.reacting_kinds]
        self._insert_rows(c, s.reactions_due, rows, ids=False)
        self._delete_done(c)

    def _delete_done(self, c: Connection) -> int:
        with _DONE_LOCK:
            done, self._done = self._done, None
        if not done:
            return 0
        r = c.execute(
            delete(s.reactions_due).where(_DUE_IN[self.dialect]),
            {"ids": bound_list(self.dialect, done)},
        )
        return int(r.rowcount)

    def reactions_due(self, limit: int = 10_000) -> list[Event]:
        """The oldest committed events still waiting for their reactions, in commit order."""
        d, ev = s.reactions_due, s.events
        with self._read() as c:
            rows = c.execute(
                select(ev).join(d, d.c.event_id == ev.c.id).order_by(d.c.seq).limit(limit)
            ).all()
        return [self._event_of(r) for r in rows]

    def reactions_done(self, event_ids: Sequence[str]) -> None:
        """These events' reactions have all run: their due rows go with the next write
        (the writer's next batch, or :meth:`flush_reactions_done`), not a transaction of
        their own. A stop before that runs them again at the next start."""
        with _DONE_LOCK:
            if self._done is None:
                self._done = []
            self._done.extend(event_ids)

    def flush_reactions_done(self) -> int:
        """Delete the due rows of events whose reactions have run; how many there were."""
        with _DONE_LOCK:
            if not self._done:
                return 0
        with self._write() as c:
            return self._delete_done(c)
