"""Store methods for events and incidents: events stored once by id, the open incident
of their kind each joins or opens, the timeline, an operator's actions, and what the
engine rebuilds from events (tiers, disclosure pauses).

A mixin of :class:`~bangpae.adapters.store.store.Store`: every method runs in its own
transaction and has committed when it returns. On PostgreSQL incident grouping takes a
transaction-scoped advisory lock, and incident actions lock their row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    Row,
    Select,
    and_,
    bindparam,
    or_,
    select,
)
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from bangpae.adapters.store import schema as s
from bangpae.adapters.store.base import (
    StoreBase,
    bound_list,
    fits,
    insert_action_entry,
    one_of,
)
from bangpae.domain.errors import Invalid, NotFound
from bangpae.domain.incidents import FINAL, PRIORITIES, IncidentRecord, advance, transition
from bangpae.domain.model import Event, EventKind, Tier

# incident watchers' failures are logged beside the audit log's own alarms
log = logging.getLogger("bangpae.audit")

# PostgreSQL advisory lock key of incident grouping (transaction-scoped: a crash never
# leaves it held)
_LOCK_INCIDENTS = 0x62616E6770610002

# Events and incident grouping run on the single writer for every event of every batch:
# their statements are built once, so an event only binds parameters (building a
# statement and its cache key per event cost more than the SQL itself).
_EVENT_INSERT = {
    name: dialect.insert(s.events)
    .on_conflict_do_nothing(index_elements=[s.events.c.id])
    .returning(s.events.c.id)
    for name, dialect in (("sqlite", sqlite_dialect), ("postgresql", pg_dialect))
}
_EVENT_IDS = {
    name: select(s.events.c.id).where(clause)
    for name, clause in one_of(s.events.c.id, "ids").items()
}
# Which of these event ids have a timeline entry at all (most have none: no lookup each).
_ENTRY_EVENT_IDS = {
    name: select(s.incident_entries.c.event_id).where(clause).distinct()
    for name, clause in one_of(s.incident_entries.c.event_id, "event_ids").items()
}
_SEEN_IN_KIND = (
    select(s.incident_entries.c.incident_id)
    .join(s.incidents, s.incidents.c.id == s.incident_entries.c.incident_id)
    .where(
        and_(
            s.incident_entries.c.event_id == bindparam("event_id"),
            s.incidents.c.kind == bindparam("kind"),
        )
    )
    .limit(1)
)


# The events that set an order's disclosure pause: the guard's detections, operators' decisions.
_PAUSE_KINDS = (EventKind.DISCLOSURE_MISUSE.value, EventKind.DISCLOSURE_DECIDED.value)


def _open_incident_query(scope: ColumnElement[bool]) -> Select[Any]:
    i = s.incidents
    # NOT IN (?, ?) with its values bound as usual: a list literal would be expanded into
    # the SQL string again at every execution.
    final: list[BindParameter[str]] = [
        bindparam(f"final_{k}", status) for k, status in enumerate(FINAL)
    ]
    return select(i.c.id, i.c.updated_at, i.c.order_id, i.c.person_id, i.c.kind).where(
        and_(scope, i.c.status.not_in(final))
    )


# The open incidents of some orders; of some people (events of no order); and, for events
# of neither, those of neither (``== None`` would never match: IS NULL).
_OPEN_OF_ORDERS = {
    name: _open_incident_query(clause)
    for name, clause in one_of(s.incidents.c.order_id, "ids").items()
}
_OPEN_OF_PEOPLE = {
    name: _open_incident_query(and_(s.incidents.c.order_id.is_(None), clause))
    for name, clause in one_of(s.incidents.c.person_id, "ids").items()
}
_OPEN_OF_NOBODY = _open_incident_query(
    and_(s.incidents.c.order_id.is_(None), s.incidents.c.person_id.is_(None))
)


def _scope(order_id: int | None, person_id: int | None) -> tuple[str, int | None]:
    """Whose incidents an event joins: its order's, else its person's, else nobody's."""
    if order_id is not None:
        return ("order", int(order_id))
    if person_id is not None:
        return ("person", int(person_id))
    return ("nobody", None)


_TOUCH_INCIDENT = (
    s.incidents.update()
    .where(s.incidents.c.id == bindparam("incident_id"))
    .values(updated_at=bindparam("new_updated_at"))
)


class IncidentStore(StoreBase):
    """Events, incidents and their timelines."""

    if TYPE_CHECKING:  # sealing, from ``sealed`` on the concrete store

        def _seal_place(self, data: dict[str, Any]) -> dict[str, Any]: ...

        def _opened_entry(self, data: Any, entry_id: Any) -> Any: ...

    def _init_incidents(self) -> None:
        # told the ids of incidents that moved, once committed (docs/sos.md): any thread
        self._incident_watchers: list[Callable[[int], None]] = []

    def watch_incidents(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(incident_id)`` after every commit that moved an incident: an
        operator's action, a timeline entry, a hand-off, or an SOS opened or joined."""
        self._incident_watchers.append(callback)

    def _incidents_moved(self, incident_ids: Iterable[int]) -> None:
        for iid in incident_ids:
            for callback in self._incident_watchers:
                try:
                    callback(iid)
                except Exception:  # a watcher's failure never undoes a commit
                    log.exception("an incident watcher failed")

    # -- events and incidents ----------------------------------------------------------

    def _event_row(self, e: Event) -> dict[str, Any]:
        """An event as stored: an alarm's position sealed (see ``sealed``)."""
        return {
            "id": e.id,
            "kind": e.kind.value,
            "at": e.at,
            "order_id": e.order_id,
            "person_id": e.person_id,
            "device_id": e.device_id,
            "tier_from": None if e.tier_from is None else int(e.tier_from),
            "tier_to": None if e.tier_to is None else int(e.tier_to),
            "distance_m": e.distance_m,
            "late": bool(e.late),
            "data": self._seal_place(dict(e.data)),
        }

    def _event_of(self, r: Row[Any]) -> Event:
        """A stored event as decided: the inverse of :meth:`_event_row`."""
        return Event(
            id=r.id,
            kind=EventKind(r.kind),
            at=r.at,
            order_id=r.order_id,
            person_id=r.person_id,
            device_id=r.device_id,
            tier_from=None if r.tier_from is None else Tier(r.tier_from),
            tier_to=None if r.tier_to is None else Tier(r.tier_to),
            distance_m=r.distance_m,
            late=bool(r.late),
            data=self._open_place(r.data, f"events {r.id}"),
        )

    def _insert_events(self, c: Connection, events: Sequence[Event]) -> list[Event]:
        if not events:
            return []
        unique = list({e.id: e for e in events}.values())
        if self.dialect == "sqlite":  # the only writer: the ids not stored yet are the new ones
            ids = bound_list(self.dialect, [e.id for e in unique])
            stored = set(c.execute(_EVENT_IDS[self.dialect], {"ids": ids}).scalars())
            new = [e for e in unique if e.id not in stored]
            self._insert_rows(c, s.events, [self._event_row(e) for e in new], ids=False)
            return new
        stmt = _EVENT_INSERT["postgresql"]
        inserted = set(c.execute(stmt, [self._event_row(e) for e in unique]).scalars())
        return [e for e in unique if e.id in inserted]

    def add_events(self, events: Sequence[Event]) -> list[Event]:
        """Insert events, ignoring ids already stored; return the new ones, in order."""
        if not events:
            return []
        with self._write() as c:
            new = self._insert_events(c, events)
            self._queue_reactions(c, new)
            return new

    def _event_ids_with_entries(self, c: Connection, event_ids: Sequence[str]) -> set[str]:
        """Which of these event ids some timeline entry already carries."""
        ids = bound_list(self.dialect, event_ids)
        return set(c.execute(_ENTRY_EVENT_IDS[self.dialect], {"event_ids": ids}).scalars())

    def _record_incidents(
        self, c: Connection, plans: Sequence[tuple[Event, str, str | None]]
    ) -> list[tuple[int, bool] | None]:
        """For each event in turn, join the open incident of its kind or open one.

        An event with no priority only joins. Returns, per event, the incident's id and
        whether it was opened, or None when an event that opens nothing found no open
        incident of its kind to join.
        """
        if not plans:
            return []
        for _, kind, priority in plans:
            if priority is not None and priority not in PRIORITIES:
                raise Invalid(f"unknown priority {priority!r}")
            fits(s.incidents.c.kind, kind)
        self._pg_lock(c, _LOCK_INCIDENTS)  # held to the commit
        with_entries = self._event_ids_with_entries(c, [x.id for x, _, _ in plans])
        # The open incidents of the events' orders, people and of nobody, read at once:
        # scope -> [id, updated_at] of the oldest open one of each kind. An incident opened
        # here is known by a placeholder, -1 for the first, until the rows are inserted.
        open_now = self._open_incidents(c, [e for e, _, _ in plans])
        new_rows: list[dict[str, Any]] = []
        touched: dict[int, float] = {}
        results: list[tuple[int, bool] | None] = []
        entries: list[dict[str, Any]] = []
        added: dict[tuple[str, str], int] = {}  # (event id, kind) -> incident, this call
        for e, kind, priority in plans:
            # A replayed event never opens a second incident, even after the first was
            # closed. The entries of this call are inserted at its end: look them up here.
            if e.id in with_entries:
                seen = c.execute(_SEEN_IN_KIND, {"event_id": e.id, "kind": kind}).first()
                if seen is not None:
                    results.append((int(seen.incident_id), False))
                    continue
            if (e.id, kind) in added:
                results.append((added[e.id, kind], False))
                continue
            key = (_scope(e.order_id, e.person_id), kind)
            found = open_now.get(key)
            created = found is None
            if found is None:
                if priority is None:
                    results.append(None)
                    continue
                new_rows.append(
                    {
                        "kind": kind,
                        "priority": priority,
                        "status": "open",
                        "order_id": e.order_id,
                        "person_id": e.person_id,
                        "opened_at": e.at,
                        "updated_at": e.at,
                        "late": bool(e.late),
                    }
                )
                iid = -len(new_rows)
                open_now[key] = [iid, e.at]
            else:
                iid = int(found[0])
                if e.at > found[1]:
                    found[1] = e.at
                    if iid < 0:
                        new_rows[-iid - 1]["updated_at"] = e.at
                    else:
                        touched[iid] = e.at
            entries.append(
                {
                    "incident_id": iid,
                    "at": e.at,
                    "action": "event",
                    "actor": "system",
                    "note": e.kind.value,
                    "event_id": e.id,
                    "data": self._event_row(e),
                }
            )
            added[e.id, kind] = iid
            results.append((iid, created))
        new_ids = self._insert_rows(c, s.incidents, new_rows)

        def real(iid: int) -> int:
            return iid if iid >= 0 else new_ids[-iid - 1]

        if touched:
            c.execute(
                _TOUCH_INCIDENT,
                [{"incident_id": i, "new_updated_at": at} for i, at in touched.items()],
            )
        for entry in entries:  # in the order of the events, as if added one by one
            entry["incident_id"] = real(entry["incident_id"])
        self._insert_rows(c, s.incident_entries, entries, ids=False)
        return [None if r is None else (real(r[0]), r[1]) for r in results]

    def _open_incidents(
        self, c: Connection, events: Sequence[Event]
    ) -> dict[tuple[tuple[str, int | None], str], list[Any]]:
        """(scope, kind) -> [id, updated_at] of the oldest open incident, for these events."""
        orders = sorted({e.order_id for e in events if e.order_id is not None})
        people = sorted(
            {e.person_id for e in events if e.order_id is None and e.person_id is not None}
        )
        nobody = any(e.order_id is None and e.person_id is None for e in events)
        rows: list[Row[Any]] = []
        for scope, values in ((_OPEN_OF_ORDERS, orders), (_OPEN_OF_PEOPLE, people)):
            if values:
                ids = bound_list(self.dialect, values)
                rows += c.execute(scope[self.dialect], {"ids": ids}).all()
        if nobody:
            rows += c.execute(_OPEN_OF_NOBODY).all()
        out: dict[tuple[tuple[str, int | None], str], list[Any]] = {}
        for r in sorted(rows, key=lambda r: int(r.id)):
            out.setdefault((_scope(r.order_id, r.person_id), r.kind), [int(r.id), r.updated_at])
        return out

    def record_incident(self, kind: str, priority: str, event: Event) -> tuple[int, bool]:
        """Join the open incident of this kind for the event's order (or person), or open one."""
        with self._write() as c:
            result = self._record_incidents(c, [(event, kind, priority)])[0]
        assert result is not None  # with a priority, an incident is always opened or joined
        return result

    def _live_changes(self, kind: EventKind) -> list[Row[Any]]:
        """Every live (not late) change of ``kind`` with an order, oldest first."""
        ev = s.events
        with self._read() as c:
            return list(
                c.execute(
                    select(ev.c.order_id, ev.c.tier_from, ev.c.tier_to, ev.c.at)
                    .where(
                        and_(
                            ev.c.kind == kind.value,
                            ev.c.late.is_(False),
                            ev.c.order_id.is_not(None),
                        )
                    )
                    .order_by(ev.c.at, ev.c.id)
                ).all()
            )

    def latest_tiers(self) -> dict[int, tuple[Tier, Tier, float]]:
        """Each order's live tier from its last live tier change: (tier, base tier, since)."""
        out: dict[int, tuple[Tier, Tier, float]] = {}
        for r in self._live_changes(EventKind.TIER_CHANGED):
            tier = Tier(r.tier_to)
            base = Tier(r.tier_from) if tier == Tier.UNCERTAIN else tier
            if tier == Tier.UNCERTAIN and r.tier_from == Tier.UNCERTAIN and r.order_id in out:
                base = out[r.order_id][1]
            out[int(r.order_id)] = (tier, base, float(r.at))
        return out

    def latest_shown(self) -> dict[int, Tier]:
        """What each order's protected person was last shown, from its last live change."""
        return {
            int(r.order_id): Tier(r.tier_to)
            for r in self._live_changes(EventKind.SHOWN_TIER_CHANGED)
        }

    def disclosure_pauses(self) -> dict[int, bool]:
        """Each order's disclosure pause, from its last guard detection or operator decision."""
        ev = s.events
        with self._read() as c:
            rows = c.execute(
                select(ev.c.order_id, ev.c.kind, ev.c.data)
                .where(and_(ev.c.kind.in_(_PAUSE_KINDS), ev.c.order_id.is_not(None)))
                .order_by(ev.c.at, ev.c.id)
            ).all()
        out: dict[int, bool] = {}
        for r in rows:
            decided = r.kind == EventKind.DISCLOSURE_DECIDED.value
            out[int(r.order_id)] = bool(r.data.get("paused")) if decided else True
        return out

    def disclosure_history(self, order_id: int, limit: int = 100) -> list[Event]:
        """An order's guard detections and operator decisions, newest first."""
        ev = s.events
        with self._read() as c:
            rows = c.execute(
                select(ev)
                .where(and_(ev.c.kind.in_(_PAUSE_KINDS), ev.c.order_id == order_id))
                .order_by(ev.c.at.desc(), ev.c.id.desc())
                .limit(limit)
            ).all()
        return [self._event_of(r) for r in rows]

    def _incident(self, c: Connection, r: Row[Any], timeline: bool) -> IncidentRecord:
        entries: tuple[dict[str, Any], ...] = ()
        if timeline:
            e = s.incident_entries
            entries = tuple(
                {
                    "at": x.at,
                    "action": x.action,
                    "actor": x.actor,
                    "note": x.note,
                    "event_id": x.event_id,
                    "data": self._opened_entry(x.data, x.id),
                }
                for x in c.execute(select(e).where(e.c.incident_id == r.id).order_by(e.c.id))
            )
        return IncidentRecord(
            id=int(r.id),
            kind=r.kind,
            priority=r.priority,
            status=r.status,
            order_id=None if r.order_id is None else int(r.order_id),
            person_id=None if r.person_id is None else int(r.person_id),
            opened_at=r.opened_at,
            timeline=entries,
            late=bool(r.late),
            updated_at=r.updated_at,
            duress=bool(r.duress),
        )

    def incidents(self, status: str | None = None, limit: int = 200) -> list[IncidentRecord]:
        """Incidents, newest first; ``status="open"`` means every status not yet final."""
        i = s.incidents
        q = select(i)
        if status == "open":
            q = q.where(i.c.status.not_in(FINAL))
        elif status:
            q = q.where(i.c.status == status)
        with self._read() as c:
            rows = c.execute(q.order_by(i.c.id.desc()).limit(max(0, limit))).all()
            return [self._incident(c, r, False) for r in rows]

    def incident_ids_of_orders(self, order_ids: Sequence[int], kinds: Iterable[str]) -> list[int]:
        """The ids of the incidents of these orders and kinds, whatever their status."""
        i = s.incidents
        if not order_ids:
            return []
        q = select(i.c.id).where(and_(i.c.order_id.in_(list(order_ids)), i.c.kind.in_(list(kinds))))
        with self._read() as c:
            return [int(r.id) for r in c.execute(q.order_by(i.c.id))]

    def get_incident(self, incident_id: int) -> IncidentRecord | None:
        """One incident with its timeline (entries as dicts, oldest first)."""
        with self._read() as c:
            r = c.execute(select(s.incidents).where(s.incidents.c.id == incident_id)).first()
            return None if r is None else self._incident(c, r, True)

    def incident_action(
        self,
        incident_id: int,
        action: str,
        actor: str,
        at: float,
        note: str = "",
        data: dict[str, Any] | None = None,
    ) -> IncidentRecord:
        """Move an incident along its lifecycle, recording who did it, when and why."""
        transition(action)  # an unknown action is refused before anything is read
        fits(s.incident_entries.c.actor, actor)
        i = s.incidents
        with self._write() as c:
            r = c.execute(select(i).where(i.c.id == incident_id).with_for_update()).first()
            if r is None:
                raise NotFound(f"incident {incident_id} does not exist")
            target = advance(r.status, action)
            c.execute(
                i.update()
                .where(i.c.id == incident_id)
                .values(status=target, updated_at=max(at, r.updated_at))
            )
            insert_action_entry(c, incident_id, action, actor, at, note, dict(data or {}))
            r = c.execute(select(i).where(i.c.id == incident_id)).one()
            record = self._incident(c, r, True)
        self._incidents_moved([incident_id])
        return record

    def sos_incidents(self, person_id: int, closed_since: float) -> list[IncidentRecord]:
        """A person's SOS incidents still open or closed since then, newest first, with
        their timelines (her SOS loop, docs/sos.md)."""
        i = s.incidents
        q = select(i).where(
            and_(
                i.c.kind == "sos",
                i.c.person_id == person_id,
                or_(i.c.status.not_in(FINAL), i.c.updated_at >= closed_since),
            )
        )
        with self._read() as c:
            rows = c.execute(q.order_by(i.c.id.desc()).limit(100)).all()
            return [self._incident(c, r, True) for r in rows]

    def incident_duress(
        self, incident_id: int, actor: str, at: float, note: str, data: dict[str, Any]
    ) -> None:
        """Mark an open incident as under duress (docs/sos.md): critical, shown as such, and
        a ``duress`` entry on its timeline."""
        fits(s.incident_entries.c.actor, actor)
        i = s.incidents
        with self._write() as c:
            r = c.execute(select(i).where(i.c.id == incident_id).with_for_update()).first()
            if r is None:
                raise NotFound(f"incident {incident_id} does not exist")
            c.execute(
                i.update()
                .where(i.c.id == incident_id)
                .values(priority="critical", duress=True, updated_at=max(at, r.updated_at))
            )
            insert_action_entry(c, incident_id, "duress", actor, at, note, dict(data))
        self._incidents_moved([incident_id])
