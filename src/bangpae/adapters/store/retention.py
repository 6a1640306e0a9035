"""Store methods for retention: legal holds, the purge, and the audit chain's purge checkpoint.

A mixin of :class:`~bangpae.adapters.store.store.Store`: every method runs in its own
transaction through the store's ``_read`` / ``_write`` helpers and has committed when
it returns.

Legal holds are kept in the audit log itself (there is no table for them): placing one
appends a ``legal_hold`` record (subject ``order:N``, ``person:N`` or ``incident:N``,
purpose the reason, fields ``from=`` / ``until=``), releasing one a
``legal_hold_release`` record (subject ``hold:ID``). The register is as tamper-evident as
the chain, and the audit purge never cuts at or past the oldest hold still in force.

Purging audit records cuts a prefix of the chain. In the same transaction it appends a
checkpoint (action ``purge``, subject ``audit``) naming the last record deleted and its
hash (``through_id=``, ``through_hash=``); ``audit_verify`` starts from the newest
checkpoint, so the chain still verifies, and deleting anything beyond it still shows.
The checkpoint also records the audit retention in force (``days=``), which
``audit_verify`` checks its cut-off against (docs/audit-log.md).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, func, or_, select

from bangpae.adapters.store import schema as s
from bangpae.adapters.store.audit import GENESIS, AuditStore, audit_notes
from bangpae.domain.audit import AuditEntry
from bangpae.domain.errors import Invalid, NotFound
from bangpae.domain.incidents import FINAL
from bangpae.domain.retention import (
    CLASSES,
    HOLD_SCOPES,
    HandoffSpan,
    Hold,
    IncidentSpan,
    OrderSpan,
    Plan,
    Range,
    Sweep,
)

HOLD = "legal_hold"
RELEASE = "legal_hold_release"
_CHUNK = 500  # ids per IN (...) list


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _chunks(ids: Sequence[Any]) -> Iterator[list[Any]]:
    for k in range(0, len(ids), _CHUNK):
        yield list(ids[k : k + _CHUNK])


def _bound(value: str) -> float | None:
    return float(value) if value else None


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """What a purge found due (dry run) or deleted, per class, and the cut-offs used."""

    now: float
    dry_run: bool
    counts: Mapping[str, int]
    cutoffs: Mapping[str, float]
    details: Mapping[str, Mapping[str, int]]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "dry_run": self.dry_run,
            "now": _iso(self.now),
            "classes": {
                name: {
                    ("due" if self.dry_run else "deleted"): self.counts[name],
                    "before": _iso(self.cutoffs[name]),
                    **self.details.get(name, {}),
                }
                for name in CLASSES
            },
        }


class RetentionStore(AuditStore):
    """Legal holds, the purge of data past retention, and the audit chain's checkpoint."""

    # -- legal holds -------------------------------------------------------------------

    def place_hold(
        self,
        scope: str,
        target: int,
        start: float | None,
        end: float | None,
        reason: str,
        *,
        actor: str,
        role: str,
        at: float,
    ) -> Hold:
        """Record a legal hold on an order, a person or an incident; its id is the record's."""
        if scope not in HOLD_SCOPES:
            raise Invalid(f"a hold is on an order, a person or an incident, not {scope!r}")
        if not reason.strip():
            raise Invalid("a hold needs a reason (the court's request)")
        if start is not None and end is not None and start > end:
            raise Invalid("a hold's range ends before it starts")
        table = {"order": s.orders, "person": s.people, "incident": s.incidents}[scope]
        fields = [
            f"from={'' if start is None else repr(float(start))}",
            f"until={'' if end is None else repr(float(end))}",
        ]
        with self._audit_lock, self._write() as c:
            if c.execute(select(table.c.id).where(table.c.id == target)).first() is None:
                raise NotFound(f"{scope} {target} does not exist")
            hid = self._audit_insert(
                c, AuditEntry(actor, role, HOLD, f"{scope}:{target}", reason.strip(), fields, at=at)
            )
        return Hold(hid, scope, target, start, end, reason.strip(), at)

    def release_hold(self, hold_id: int, reason: str, *, actor: str, role: str, at: float) -> None:
        """Release a legal hold in force; its data follows the retention policy again."""
        if not reason.strip():
            raise Invalid("releasing a hold needs a reason")
        with self._audit_lock, self._write() as c:
            if hold_id not in {h.id for h in self._holds(c)}:
                raise NotFound(f"no hold {hold_id} is in force")
            self._audit_insert(
                c, AuditEntry(actor, role, RELEASE, f"hold:{hold_id}", reason.strip(), [], at=at)
            )

    def legal_holds(self) -> list[Hold]:
        """The legal holds in force, oldest first."""
        with self._read() as c:
            return self._holds(c)

    def _holds(self, c: Connection) -> list[Hold]:
        a = s.audit
        rows = c.execute(
            select(a.c.id, a.c.at, a.c.action, a.c.subject, a.c.purpose, a.c.fields)
            .where(a.c.action.in_([HOLD, RELEASE]))
            .order_by(a.c.id)
        ).all()
        released = {
            int(r.subject.partition(":")[2])
            for r in rows
            if r.action == RELEASE and r.subject.partition(":")[2].isdigit()
        }
        out = []
        for r in rows:
            scope, _, target = r.subject.partition(":")
            if r.action != HOLD or r.id in released or scope not in HOLD_SCOPES:
                continue
            if not target.isdigit():  # pragma: no cover - only place_hold writes these
                continue
            notes = audit_notes(r.fields)
            out.append(
                Hold(
                    int(r.id),
                    scope,
                    int(target),
                    _bound(notes.get("from", "")),
                    _bound(notes.get("until", "")),
                    r.purpose,
                    float(r.at),
                )
            )
        return out

    # -- what the decision needs -------------------------------------------------------

    def retention_inputs(
        self, holds: Sequence[Hold]
    ) -> tuple[list[OrderSpan], list[IncidentSpan], list[HandoffSpan]]:
        """Orders, incidents (with the event ids of those that may be protected) and hand-offs."""
        o, i, e, h = s.orders, s.incidents, s.incident_entries, s.handoffs
        with self._read() as c:
            orders = [
                OrderSpan(int(r.id), int(r.offender_id), int(r.victim_id), r.valid_until)
                for r in c.execute(
                    select(o.c.id, o.c.offender_id, o.c.victim_id, o.c.valid_until).order_by(o.c.id)
                )
            ]
            rows = c.execute(
                select(
                    i.c.id, i.c.order_id, i.c.person_id, i.c.opened_at, i.c.updated_at, i.c.status
                ).order_by(i.c.id)
            ).all()
            held_people = {x.target for x in holds if x.scope == "person"}
            held_orders = {x.target for x in holds if x.scope == "order"} | {
                x.id for x in orders if {x.offender_id, x.victim_id} & held_people
            }
            held_incidents = {x.target for x in holds if x.scope == "incident"}
            # Only an open or possibly held incident protects its events by id.
            need = [
                int(r.id)
                for r in rows
                if r.status not in FINAL
                or r.id in held_incidents
                or r.order_id in held_orders
                or r.person_id in held_people
            ]
            event_ids: dict[int, set[str]] = defaultdict(set)
            for chunk in _chunks(need):
                for x in c.execute(
                    select(e.c.incident_id, e.c.event_id).where(
                        and_(e.c.incident_id.in_(chunk), e.c.event_id.is_not(None))
                    )
                ):
                    event_ids[int(x.incident_id)].add(str(x.event_id))
            incidents = [
                IncidentSpan(
                    int(r.id),
                    None if r.order_id is None else int(r.order_id),
                    None if r.person_id is None else int(r.person_id),
                    float(r.opened_at),
                    float(r.updated_at),
                    r.status in FINAL,
                    frozenset(event_ids.get(int(r.id), ())),
                )
                for r in rows
            ]
            handoffs = [
                HandoffSpan(int(r.id), int(r.incident_id), r.closed_at)
                for r in c.execute(select(h.c.id, h.c.incident_id, h.c.closed_at).order_by(h.c.id))
            ]
        return orders, incidents, handoffs

    def last_purge_at(self) -> float | None:
        """When the audit class was last purged (every purge ends with it), if ever."""
        a = s.audit
        with self._read() as c:
            value = c.execute(
                select(func.max(a.c.at)).where(and_(a.c.action == "purge", a.c.subject == "audit"))
            ).scalar()
        return None if value is None else float(value)

    # -- the purge ---------------------------------------------------------------------

    @staticmethod
    def _time_clauses(
        time_col: Any,
        key_col: Any,
        sweep: Sweep,
        key_ids: Mapping[int, Sequence[int]] | None = None,
    ) -> list[ColumnElement[bool]]:
        """Disjoint conditions selecting exactly what a sweep lets go.

        ``key_ids`` maps a sweep key to the values of ``key_col`` it stands for (a person
        to their devices); without it the key is the column's value.
        """

        def ids(key: int) -> list[int]:
            return [key] if key_ids is None else list(key_ids.get(key, ()))

        def within(r: Range) -> ColumnElement[bool]:
            lo, hi = r
            return time_col < hi if lo is None else and_(time_col > lo, time_col < hi)

        out: list[ColumnElement[bool]] = []
        keyed = [v for k in sweep.ranges for v in ids(k)]
        if sweep.before is not None:
            rest: ColumnElement[bool] = time_col < sweep.before
            if keyed:
                rest = and_(rest, or_(key_col.is_(None), key_col.not_in(keyed)))
            out.append(rest)
        for key, ranges in sweep.ranges.items():
            values = ids(key)
            if values and ranges:
                out.append(and_(key_col.in_(values), or_(*(within(r) for r in ranges))))
        return out

    def _class_clauses(self, c: Connection, p: Plan) -> dict[str, list[ColumnElement[bool]]]:
        f, ev, n = s.fixes, s.events, s.notices
        devices: dict[int, list[int]] = defaultdict(list)
        for r in c.execute(select(s.devices.c.id, s.devices.c.person_id)):
            devices[int(r.person_id)].append(int(r.id))
        keep_ids = sorted(p.keep_event_ids)
        fixes = [
            and_(w, f.c.hold.is_(False))
            for w in self._time_clauses(f.c.fix_time, f.c.device_id, p.fixes, devices)
        ]
        events = [
            and_(ev.c.order_id.is_not(None), w)
            for w in self._time_clauses(ev.c.at, ev.c.order_id, p.order_events)
        ] + [
            and_(ev.c.order_id.is_(None), w)
            for w in self._time_clauses(ev.c.at, ev.c.person_id, p.person_events)
        ]
        if keep_ids:
            events = [and_(w, ev.c.id.not_in(keep_ids)) for w in events]
        notices = self._time_clauses(n.c.at, n.c.order_id, p.notices)
        return {"fixes": fixes, "events": events, "notices": notices}

    def _audit_cut(self, c: Connection, p: Plan, dry_run: bool) -> tuple[int, int, str, int]:
        """(first id, last id to delete, its hash, how many) of the audit prefix now due.

        The newest record always stays (the chain continues from it); a real run has
        appended the other classes' records by then, so a dry run counts the head too.
        """
        a = s.audit
        first = c.execute(select(a.c.id, a.c.prev_hash).order_by(a.c.id).limit(1)).first()
        if first is None:
            return 1, 0, GENESIS, 0
        head = int(c.execute(select(func.max(a.c.id))).scalar_one())
        stop = c.execute(select(func.min(a.c.id)).where(a.c.at >= p.audit_before)).scalar()
        last = min(
            head if dry_run else head - 1,
            (head + 1 if stop is None else int(stop)) - 1,
            (p.audit_keep_from_id or head + 1) - 1,
        )
        if last < int(first.id):
            return int(first.id), int(first.id) - 1, str(first.prev_hash), 0
        digest = c.execute(select(a.c.hash).where(a.c.id == last)).scalar_one()
        return int(first.id), last, str(digest), last - int(first.id) + 1

    def _count(self, c: Connection, table: Any, clauses: Iterable[ColumnElement[bool]]) -> int:
        return sum(
            int(c.execute(select(func.count()).select_from(table).where(w)).scalar_one())
            for w in clauses
        )

    def _delete_ids(self, c: Connection, column: Any, ids: Sequence[int]) -> int:
        n = 0
        for chunk in _chunks(ids):
            n += int(c.execute(column.table.delete().where(column.in_(chunk))).rowcount)
        return n

    def purge(
        self, p: Plan, *, dry_run: bool = False, actor: str = "system", role: str = "system"
    ) -> PurgeReport:
        """Delete what the plan finds due, class by class, each with its audit record.

        Each class is one transaction holding its deletions and the record saying how
        many went and the cut-off; a dry run only counts.
        """
        counts: dict[str, int] = {}
        details: dict[str, dict[str, int]] = {}

        def record(c: Connection, name: str, deleted: int, extra: Sequence[str] = ()) -> None:
            fields = [f"before={_iso(p.cutoffs[name])}", f"deleted={deleted}", *extra]
            self._audit_insert(
                c, AuditEntry(actor, role, "purge", name, "retention", fields, at=p.now)
            )

        tables = {"fixes": s.fixes, "events": s.events, "notices": s.notices}
        for name in ("fixes", "events"):
            with self._audit_lock, self._write() as c:
                clauses = self._class_clauses(c, p)[name]
                if dry_run:
                    counts[name] = self._count(c, tables[name], clauses)
                    continue
                counts[name] = sum(
                    int(c.execute(tables[name].delete().where(w)).rowcount) for w in clauses
                )
                record(c, name, counts[name])

        h, ha, i, e = s.handoffs, s.handoff_attempts, s.incidents, s.incident_entries
        with self._audit_lock, self._write() as c:
            attempts = sum(
                int(
                    c.execute(
                        select(func.count()).select_from(ha).where(ha.c.handoff_id.in_(chunk))
                    ).scalar_one()
                )
                for chunk in _chunks(p.handoffs)
            )
            counts["handoffs"] = len(p.handoffs)
            details["handoffs"] = {"attempts": attempts}
            if not dry_run:
                self._delete_ids(c, ha.c.handoff_id, p.handoffs)
                counts["handoffs"] = self._delete_ids(c, h.c.id, p.handoffs)
                record(c, "handoffs", counts["handoffs"], [f"attempts={attempts}"])

        with self._audit_lock, self._write() as c:
            entries = sum(
                int(
                    c.execute(
                        select(func.count()).select_from(e).where(e.c.incident_id.in_(chunk))
                    ).scalar_one()
                )
                for chunk in _chunks(p.incidents)
            )
            counts["incidents"] = len(p.incidents)
            details["incidents"] = {"entries": entries}
            if not dry_run:
                self._delete_ids(c, s.evidence.c.incident_id, p.incidents)  # recordings too
                self._delete_ids(c, e.c.incident_id, p.incidents)
                counts["incidents"] = self._delete_ids(c, i.c.id, p.incidents)
                record(c, "incidents", counts["incidents"], [f"entries={entries}"])

        with self._audit_lock, self._write() as c:
            clauses = self._class_clauses(c, p)["notices"]
            if dry_run:
                counts["notices"] = self._count(c, s.notices, clauses)
            else:
                counts["notices"] = sum(
                    int(c.execute(s.notices.delete().where(w)).rowcount) for w in clauses
                )
                record(c, "notices", counts["notices"])

        with self._audit_lock, self._write() as c:
            counts["signins"] = self._signins(c, p.signins_before, dry_run)
            if not dry_run:
                record(c, "signins", counts["signins"])

        # Last, so the records above are part of the chain the checkpoint continues.
        a = s.audit
        with self._audit_lock, self._write() as c:
            _, last, digest, n = self._audit_cut(c, p, dry_run)
            counts["audit"] = n
            if not dry_run:
                if n:
                    c.execute(a.delete().where(a.c.id <= last))
                days = f"days={(p.now - p.audit_before) / 86400:g}"  # the retention in force
                record(c, "audit", n, [f"through_id={last}", f"through_hash={digest}", days])
        return PurgeReport(p.now, dry_run, counts, dict(p.cutoffs), details)

    def _signins(self, c: Connection, before: float, dry_run: bool) -> int:
        """Sessions that ended before ``before`` (with their spent refresh tokens) and
        sign-in attempts made before it: counted, or deleted."""
        a, ss, rt = s.login_attempts, s.sessions, s.retired_refresh_tokens
        ended = or_(ss.c.expires_at < before, ss.c.revoked_at < before)
        if dry_run:
            return self._count(c, ss, [ended]) + self._count(c, a, [a.c.at < before])
        old = select(ss.c.id).where(ended).scalar_subquery()
        c.execute(rt.delete().where(rt.c.session_id.in_(old)))
        n = int(c.execute(ss.delete().where(ended)).rowcount)
        return n + int(c.execute(a.delete().where(a.c.at < before)).rowcount)
