"""Store methods for the control centre's response: escalations, steps, positions, hand-offs.

A mixin of :class:`~bangpae.adapters.store.store.Store`: every method runs in its own
transaction through the store's ``_read`` / ``_write`` helpers and has committed when
it returns.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, and_, func, select

from bangpae.adapters.store import schema as s
from bangpae.adapters.store.base import StoreBase, insert_action_entry
from bangpae.adapters.store.sealed import HANDOFF_POSITIONS
from bangpae.domain.errors import Invalid, NotFound
from bangpae.domain.incidents import FINAL
from bangpae.domain.model import Event, Fix, Person, PersonKind
from bangpae.domain.response import HandoffAttempt, HandoffRecord, Unacknowledged


def _fits(column: Any, value: str | None) -> None:
    length = getattr(column.type, "length", None)
    if value is not None and length is not None and len(value) > length:
        raise Invalid(f"{column.name} is longer than {length} characters")


class ResponseStore(StoreBase):
    """Escalations, checklist steps, positions for dispatch and police hand-offs."""

    # -- incidents ---------------------------------------------------------------------

    def unacknowledged_incidents(
        self, priority: str = "critical", opened_by: float | None = None
    ) -> list[Unacknowledged]:
        """Incidents still ``open`` (nobody acknowledged them) at this priority, oldest first.

        ``opened_by``: only those opened at or before then.
        """
        i, e = s.incidents, s.incident_entries
        pages = (
            select(e.c.incident_id, func.count().label("pages"), func.max(e.c.at).label("last"))
            .where(e.c.action == "escalated")
            .group_by(e.c.incident_id)
            .subquery()
        )
        q = (
            select(i, func.coalesce(pages.c.pages, 0).label("pages"), pages.c.last)
            .outerjoin(pages, pages.c.incident_id == i.c.id)
            .where(and_(i.c.status == "open", i.c.priority == priority))
            .order_by(i.c.opened_at, i.c.id)
        )
        if opened_by is not None:
            q = q.where(i.c.opened_at <= opened_by)
        with self._read() as c:
            rows = c.execute(q).all()
        return [
            Unacknowledged(
                int(r.id),
                r.kind,
                r.priority,
                None if r.order_id is None else int(r.order_id),
                None if r.person_id is None else int(r.person_id),
                float(r.opened_at),
                int(r.pages),
                None if r.last is None else float(r.last),
            )
            for r in rows
        ]

    def record_escalation(
        self, incident_id: int, page: int, at: float, data: dict[str, Any], event: Event
    ) -> bool:
        """Write page number ``page`` to the timeline unless the incident was taken in hand
        or that page was written already (by another worker); return whether it was written.

        The page's ``event`` is stored in the same transaction, with its reactions due:
        the supervisor's phone is paged even if the process stops right after.
        """
        i, e = s.incidents, s.incident_entries
        with self._write() as c:
            r = c.execute(select(i.c.status).where(i.c.id == incident_id).with_for_update()).first()
            if r is None or r.status != "open":
                return False
            done = c.execute(
                select(func.count())
                .select_from(e)
                .where(and_(e.c.incident_id == incident_id, e.c.action == "escalated"))
            ).scalar_one()
            if int(done) >= page:
                return False
            c.execute(
                e.insert().values(
                    incident_id=incident_id,
                    at=at,
                    action="escalated",
                    actor="system",
                    note=f"escalated to the supervisor (page {page})",
                    event_id=None,
                    data={**data, "page": page},
                )
            )
            self._queue_reactions(c, self._insert_events(c, [event]))
            return True

    @staticmethod
    def _lock_incident(c: Connection, incident_id: int, open_only: bool) -> None:
        i = s.incidents
        r = c.execute(select(i.c.status).where(i.c.id == incident_id).with_for_update()).first()
        if r is None:
            raise NotFound(f"incident {incident_id} does not exist")
        if open_only and r.status in FINAL:
            raise Invalid(f"incident {incident_id} is {r.status}")

    def _entry(
        self,
        c: Connection,
        incident_id: int,
        action: str,
        actor: str,
        at: float,
        note: str,
        data: dict[str, Any],
        open_only: bool,
    ) -> None:
        self._lock_incident(c, incident_id, open_only)
        _fits(s.incident_entries.c.actor, actor)
        insert_action_entry(c, incident_id, action, actor, at, note, data)

    def add_incident_entry(
        self,
        incident_id: int,
        action: str,
        actor: str,
        at: float,
        note: str = "",
        data: dict[str, Any] | None = None,
    ) -> None:
        """Add an entry (a checklist step, a call) to the timeline of an incident not closed."""
        with self._write() as c:
            self._entry(c, incident_id, action, actor, at, note, dict(data or {}), True)
        self._incidents_moved([incident_id])

    # -- positions ---------------------------------------------------------------------

    def latest_fix_of_person(self, person_id: int) -> Fix | None:
        """The newest live, valid fix of any of a person's devices."""
        f, d = s.fixes, s.devices
        with self._read() as c:
            r = c.execute(
                select(f)
                .join(d, d.c.id == f.c.device_id)
                .where(and_(d.c.person_id == person_id, f.c.late.is_(False), f.c.valid.is_(True)))
                .order_by(f.c.fix_time.desc(), f.c.id.desc())
                .limit(1)
            ).first()
        return None if r is None else self._stored(r).fix

    def officer_positions(self) -> list[tuple[Person, Fix]]:
        """Every field officer with a device that reported a valid position: the newest one."""
        p, d, f = s.people, s.devices, s.fixes
        out: list[tuple[Person, Fix]] = []
        with self._read() as c:
            officers = c.execute(
                select(p.c.id, p.c.name)
                .where(p.c.kind == PersonKind.OFFICER.value)
                .order_by(p.c.id)
            ).all()
            for o in officers:
                r = c.execute(
                    select(f)
                    .join(d, d.c.id == f.c.device_id)
                    .where(and_(d.c.person_id == o.id, f.c.late.is_(False), f.c.valid.is_(True)))
                    .order_by(f.c.fix_time.desc(), f.c.id.desc())
                    .limit(1)
                ).first()
                if r is not None:
                    person = Person(int(o.id), PersonKind.OFFICER, o.name)
                    out.append((person, self._stored(r).fix))
        return out

    # -- hand-offs ---------------------------------------------------------------------

    def create_handoff(
        self,
        incident_id: int,
        channel: str,
        note: str,
        summary: dict[str, Any],
        token_hash: str,
        at: float,
        actor: str,
    ) -> int:
        """Record a hand-off (pending delivery) and note it on the incident's timeline."""
        h = s.handoffs
        _fits(h.c.channel, channel)
        _fits(h.c.created_by, actor)
        with self._write() as c:
            self._lock_incident(c, incident_id, True)
            r = c.execute(
                h.insert().values(
                    incident_id=incident_id,
                    channel=channel,
                    status="pending",
                    note=note,
                    summary=self._seal_in(summary, HANDOFF_POSITIONS),
                    token_hash=token_hash,
                    attempts=0,
                    created_at=at,
                    created_by=actor,
                )
            )
            key = r.inserted_primary_key
            assert key is not None
            hid = int(key[0])
            # the case summary names its own hand-off: set it once the id is known
            c.execute(
                h.update()
                .where(h.c.id == hid)
                .values(summary=self._seal_in({**summary, "handoff_id": hid}, HANDOFF_POSITIONS))
            )
            data = {"handoff_id": hid, "channel": channel}
            self._entry(c, incident_id, "handoff", actor, at, note, data, True)
        self._incidents_moved([incident_id])
        return hid

    def _handoff(self, r: Row[Any], attempts: tuple[HandoffAttempt, ...]) -> HandoffRecord:
        return HandoffRecord(
            id=int(r.id),
            incident_id=int(r.incident_id),
            channel=r.channel,
            status=r.status,
            note=r.note,
            summary=dict(self._open_in(r.summary, HANDOFF_POSITIONS, f"handoffs {r.id}")),
            created_at=float(r.created_at),
            created_by=r.created_by,
            closed_at=r.closed_at,
            closed_by=r.closed_by,
            attempts=attempts,
        )

    def _attempts(self, c: Connection, hid: int) -> tuple[HandoffAttempt, ...]:
        a = s.handoff_attempts
        return tuple(
            HandoffAttempt(int(x.attempt), float(x.at), x.status, x.http_status, x.error)
            for x in c.execute(select(a).where(a.c.handoff_id == hid).order_by(a.c.attempt))
        )

    def get_handoff(self, handoff_id: int) -> HandoffRecord | None:
        """A hand-off with its attempts."""
        h = s.handoffs
        with self._read() as c:
            r = c.execute(select(h).where(h.c.id == handoff_id)).first()
            return None if r is None else self._handoff(r, self._attempts(c, int(r.id)))

    def handoffs_for_incident(self, incident_id: int) -> list[HandoffRecord]:
        """An incident's hand-offs, oldest first, each with its attempts."""
        h = s.handoffs
        with self._read() as c:
            rows = c.execute(select(h).where(h.c.incident_id == incident_id).order_by(h.c.id))
            return [self._handoff(r, self._attempts(c, int(r.id))) for r in rows.all()]

    def open_handoff_by_token(self, token_hash: str) -> HandoffRecord | None:
        """The open hand-off a live-position token belongs to (None once closed)."""
        h = s.handoffs
        with self._read() as c:
            r = c.execute(
                select(h).where(and_(h.c.token_hash == token_hash, h.c.closed_at.is_(None)))
            ).first()
        return None if r is None else self._handoff(r, ())

    def pending_handoffs(self) -> list[int]:
        """Ids of open hand-offs whose delivery has not finished (to resume after a restart)."""
        h = s.handoffs
        with self._read() as c:
            rows = c.execute(
                select(h.c.id)
                .where(and_(h.c.status == "pending", h.c.closed_at.is_(None)))
                .order_by(h.c.id)
            )
            return [int(x) for x in rows.scalars()]

    def record_handoff_attempt(
        self,
        handoff_id: int,
        attempt: int,
        at: float,
        status: str,
        http_status: int | None = None,
        error: str = "",
        final_status: str | None = None,
    ) -> None:
        """Store one delivery attempt; a ``final_status`` (delivered, failed, logged) ends it."""
        h, a = s.handoffs, s.handoff_attempts
        _fits(a.c.status, status)
        with self._write() as c:
            c.execute(
                a.insert().values(
                    handoff_id=handoff_id,
                    attempt=attempt,
                    at=at,
                    status=status,
                    http_status=http_status,
                    error=error[:2000],
                )
            )
            values: dict[str, Any] = {"attempts": attempt}
            if final_status is not None:
                values["status"] = final_status
            c.execute(h.update().where(h.c.id == handoff_id).values(**values))

    def close_handoff(self, handoff_id: int, at: float, actor: str, note: str = "") -> None:
        """End a hand-off: its live-position link stops working at once."""
        h = s.handoffs
        _fits(h.c.closed_by, actor)
        with self._write() as c:
            r = c.execute(select(h).where(h.c.id == handoff_id).with_for_update()).first()
            if r is None:
                raise NotFound(f"hand-off {handoff_id} does not exist")
            if r.closed_at is not None:
                raise Invalid(f"hand-off {handoff_id} is closed already")
            c.execute(h.update().where(h.c.id == handoff_id).values(closed_at=at, closed_by=actor))
            self._entry(
                c,
                int(r.incident_id),
                "handoff_closed",
                actor,
                at,
                note,
                {"handoff_id": handoff_id},
                False,
            )


__all__ = ["HandoffAttempt", "HandoffRecord", "ResponseStore", "Unacknowledged"]
