"""Access requests and their approvals, and the audit records an access review reads.

A request to read a person's positions, and another staff member's approval of it,
are audit records themselves (as legal holds are): the request's id is its record's,
the approval names it (``access_request:<id>``) with the time it runs out (``until=``).
So both are in the hash chain, in order, and nobody can approve, or un-approve, a
request without it showing in the log. ``docs/access-policy.md`` sets out the rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, and_, or_, select

from bangpae.adapters.store import schema as s
from bangpae.adapters.store.audit import AuditStore, audit_row
from bangpae.domain.access import APPROVE, REQUEST, notes
from bangpae.domain.audit import AuditEntry
from bangpae.domain.errors import Conflict, NotFound


class AccessStore(AuditStore):
    """Requests to read a person's positions, approvals, and audit records by time."""

    def request_access(
        self,
        actor: str,
        role: str,
        person_id: int,
        purpose: str,
        reason: str,
        *,
        at: float,
        request_id: str | None = None,
    ) -> int:
        """Record a request to read ``person_id``'s positions for ``purpose``; its id."""
        with self._audit_lock, self._write() as c:
            p = s.people
            if c.execute(select(p.c.id).where(p.c.id == person_id)).first() is None:
                raise NotFound(f"person {person_id} does not exist")
            return self._audit_insert(
                c,
                AuditEntry(
                    actor,
                    role,
                    REQUEST,
                    f"person:{int(person_id)}",
                    purpose,
                    [f"reason={reason}"],
                    at=at,
                    request_id=request_id,
                ),
            )

    def approve_access(
        self,
        access_request: int,
        actor: str,
        role: str,
        until: float,
        *,
        at: float,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Record an approval of a pending request, good until ``until``; the request as it
        now stands. NotFound for no such request, Conflict for one already approved."""
        with self._audit_lock, self._write() as c:
            found = self._access_request(c, access_request)
            if found is None:
                raise NotFound(f"no access request {access_request}")
            if found["approved_by"] is not None:
                raise Conflict(f"access request {access_request} is approved already")
            self._audit_insert(
                c,
                AuditEntry(
                    actor,
                    role,
                    APPROVE,
                    f"access_request:{int(access_request)}",
                    found["purpose"],
                    [f"until={float(until)!r}"],
                    at=at,
                    request_id=request_id,
                ),
            )
            out = self._access_request(c, access_request)
        assert out is not None
        return out

    def access_request(self, access_request: int) -> dict[str, Any] | None:
        """A request with its approval, if any (``approved_by``, ``approved_at``, ``until``)."""
        with self._read() as c:
            return self._access_request(c, access_request)

    def access_requests(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest requests, newest first, each with its approval."""
        a = s.audit
        with self._read() as c:
            ids = c.execute(
                select(a.c.id).where(a.c.action == REQUEST).order_by(a.c.id.desc()).limit(limit)
            ).scalars()
            return [r for i in list(ids) if (r := self._access_request(c, int(i))) is not None]

    def _access_request(self, c: Connection, access_request: int) -> dict[str, Any] | None:
        a = s.audit
        rows = c.execute(
            select(a)
            .where(
                or_(
                    and_(a.c.id == access_request, a.c.action == REQUEST),
                    and_(a.c.action == APPROVE, a.c.subject == f"access_request:{access_request}"),
                )
            )
            .order_by(a.c.id)
        ).all()
        if not rows or rows[0].action != REQUEST:
            return None
        req, approvals = audit_row(rows[0]), [audit_row(r) for r in rows[1:]]
        person = req["subject"].partition(":")[2]
        out = {
            "id": req["id"],
            "at": req["at"],
            "actor": req["actor"],
            "role": req["role"],
            "person_id": int(person) if person.isdigit() else None,
            "purpose": req["purpose"],
            "reason": notes(req["fields"]).get("reason", ""),
            "approved_by": None,
            "approved_role": None,
            "approved_at": None,
            "until": None,
        }
        if approvals:
            first = approvals[0]
            out["approved_by"], out["approved_role"] = first["actor"], first["role"]
            out["approved_at"] = first["at"]
            out["until"] = float(notes(first["fields"]).get("until", "0") or 0)
        return out

    def audit_between(
        self, since: float | None, until: float | None, actions: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Audit records of these actions with ``since <= at < until``, in chain order."""
        a = s.audit
        q = select(a).where(a.c.action.in_(list(actions)))
        if since is not None:
            q = q.where(a.c.at >= since)
        if until is not None:
            q = q.where(a.c.at < until)
        with self._read() as c:
            return [audit_row(r) for r in c.execute(q.order_by(a.c.id)).all()]

    def incident_ids_about(self, person_id: int) -> list[int]:
        """The incidents concerning a person: theirs, and those of the orders they are party to."""
        i, o = s.incidents, s.orders
        orders = select(o.c.id).where(or_(o.c.offender_id == person_id, o.c.victim_id == person_id))
        q = select(i.c.id).where(or_(i.c.person_id == person_id, i.c.order_id.in_(orders)))
        with self._read() as c:
            return [int(x) for x in c.execute(q.order_by(i.c.id)).scalars()]

    def actors_of_person(self, person_id: int) -> list[str]:
        """How the users bound to a person are named in the audit log."""
        u = s.users
        with self._read() as c:
            rows = c.execute(select(u.c.id, u.c.username).where(u.c.person_id == person_id))
            return [f"user:{int(r.id)}:{r.username}" for r in rows]
