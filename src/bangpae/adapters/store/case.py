"""Store methods for exporting and importing one case (an order with everything about it).

A mixin of :class:`~bangpae.adapters.store.store.Store`. The export reads every table in
one transaction (a consistent snapshot); the import writes every table, and its audit
record, in one transaction, keeping ids, times and values as they were.

A case is: the order; its two parties and their devices (without device keys); the
parties' fixes while the order was in force; the order's events, incidents (with their
timeline entries: events and operator actions), police hand-offs with their delivery
attempts, and notices; the parties' events and incidents of no order while it was in
force; and the audit records whose subject names any of these.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    func,
    or_,
    select,
    text,
    true,
)
from sqlalchemy.exc import DBAPIError, IntegrityError

from bangpae.adapters.store import schema as s
from bangpae.adapters.store.audit import AuditStore
from bangpae.domain.audit import AuditEntry
from bangpae.domain.errors import Conflict, Invalid, NotFound

# Tables of a case, parents first (the order they are imported in).
CASE_TABLES: tuple[str, ...] = (
    "people",
    "devices",
    "orders",
    "fixes",
    "events",
    "incidents",
    "incident_entries",
    "handoffs",
    "handoff_attempts",
    "notices",
)
# Credentials never leave the instance.
EXCLUDED: Mapping[str, frozenset[str]] = {"devices": frozenset({"secret_hash"})}
AUDIT_COLUMNS = (
    "id",
    "at",
    "actor",
    "role",
    "action",
    "subject",
    "purpose",
    "fields",
    "request_id",
    "prev_hash",
    "hash",
)
_BATCH = 1000
_CHUNK = 500

# A case carries fixes with their positions opened, in the columns the table had before
# positions were sealed (schema 0008): the files do not depend on this instance's keys,
# and a case exported before still imports.
_CARRIED_FIXES = Table(
    "fixes",
    MetaData(),
    Column("id", s.Id, primary_key=True),
    Column("device_id", s.Id, nullable=False),
    Column("fix_time", Float, nullable=False),
    Column("received_at", Float, nullable=False),
    Column("lat", Float, nullable=False),
    Column("lon", Float, nullable=False),
    Column("accuracy_m", Float),
    Column("speed_mps", Float),
    Column("heading_deg", Float),
    Column("battery_pct", Float),
    Column("valid", Boolean, nullable=False),
    Column("alarms", String(200), nullable=False, default=""),
    Column("late", Boolean, nullable=False, default=False),
    Column("hold", Boolean, nullable=False, default=False),
)


def case_table(name: str) -> Table:
    """The table a case file of this name carries: its columns and their types."""
    if name not in CASE_TABLES:
        raise Invalid(f"{name!r} is not a table of a case")
    return _CARRIED_FIXES if name == "fixes" else s.metadata.tables[name]


def stored_table(name: str) -> Table:
    """The schema table a case table is read from and written to."""
    if name not in CASE_TABLES:
        raise Invalid(f"{name!r} is not a table of a case")
    return s.metadata.tables[name]


def case_columns(name: str) -> list[str]:
    """The columns a case file of this table carries, in schema order."""
    skip = EXCLUDED.get(name, frozenset())
    return [c.name for c in case_table(name).columns if c.name not in skip]


def _plain(column: Any, value: Any) -> Any:
    """A database value as plain JSON-ready Python, alike on both backends."""
    if value is None:
        return None
    if isinstance(column.type, Boolean):
        return bool(value)
    if isinstance(column.type, Float):
        return float(value)
    if isinstance(column.type, Integer):
        return int(value)
    return value


def check_value(table: str, column: Any, value: Any) -> Any:
    """A value read from a case file, checked against its column (Invalid if it does not fit)."""
    t = column.type
    if value is None:
        if not column.nullable and column.server_default is None and column.default is None:
            raise Invalid(f"{table}.{column.name} may not be null")
        return None
    ok: bool
    if isinstance(t, Boolean):
        ok = isinstance(value, bool)
    elif isinstance(t, Float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(t, Integer):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(t, JSON):
        ok = True
    elif isinstance(t, String):  # Text is a String
        ok = isinstance(value, str) and (t.length is None or len(value) <= t.length)
    else:  # pragma: no cover - every column of a case table is one of the above
        ok = True
    if not ok:
        raise Invalid(f"{table}.{column.name}: {value!r} does not fit the column")
    return value


def _refs(subject: str) -> set[str]:
    return set(subject.split("/"))


class CaseStore(AuditStore):
    """Read one case as rows per table, and write a case into this database."""

    def case_tables(self, order_id: int) -> Iterator[tuple[str, Iterator[dict[str, Any]]]]:
        """Each case table's rows for this order, then ``audit``; all from one snapshot.

        Consume each table's rows before asking for the next table.
        """
        with self._read() as c:
            if self.dialect == "postgresql":
                c.execution_options(isolation_level="REPEATABLE READ")
            o = c.execute(select(s.orders).where(s.orders.c.id == order_id)).first()
            if o is None:
                raise NotFound(f"order {order_id} does not exist")
            parties = [int(o.offender_id), int(o.victim_id)]
            lo, hi = o.valid_from, o.valid_until

            def within(col: Any) -> Any:
                bounds = []
                if lo is not None:
                    bounds.append(col >= lo)
                if hi is not None:
                    bounds.append(col <= hi)
                return and_(true(), *bounds)

            def rows(name: str, where: Any, order_by: Any = None) -> Iterator[dict[str, Any]]:
                t = stored_table(name)  # positions still sealed (SealedFields opens them)
                skip = EXCLUDED.get(name, frozenset())
                cols = [x for x in t.columns if x.name not in skip]
                q = select(*cols).where(where).order_by(t.c.id if order_by is None else order_by)
                for r in c.execute(q).yield_per(_BATCH):
                    yield {col.name: _plain(col, r[k]) for k, col in enumerate(cols)}

            p, d, f, ev, i = s.people, s.devices, s.fixes, s.events, s.incidents
            e, h, ha, n = s.incident_entries, s.handoffs, s.handoff_attempts, s.notices
            device_ids = [
                int(x)
                for x in c.execute(select(d.c.id).where(d.c.person_id.in_(parties))).scalars()
            ]
            overlaps = [i.c.opened_at <= hi] if hi is not None else []
            overlaps += [i.c.updated_at >= lo] if lo is not None else []
            incident_where = or_(
                i.c.order_id == order_id,
                and_(i.c.order_id.is_(None), i.c.person_id.in_(parties), *overlaps),
            )
            incident_ids = [
                int(x) for x in c.execute(select(i.c.id).where(incident_where)).scalars()
            ]
            handoff_ids = [
                int(x)
                for x in c.execute(
                    select(h.c.id).where(h.c.incident_id.in_(incident_ids))
                ).scalars()
            ]
            yield "people", rows("people", p.c.id.in_(parties))
            yield "devices", rows("devices", d.c.person_id.in_(parties))
            yield "orders", rows("orders", s.orders.c.id == order_id)
            yield "fixes", rows("fixes", and_(f.c.device_id.in_(device_ids), within(f.c.fix_time)))
            events_where = or_(
                ev.c.order_id == order_id,
                and_(ev.c.order_id.is_(None), ev.c.person_id.in_(parties), within(ev.c.at)),
            )
            # Event ids are hashes: sorted here, not by the database's collation.
            yield (
                "events",
                iter(sorted(rows("events", events_where), key=lambda r: (r["at"], r["id"]))),
            )
            yield "incidents", rows("incidents", i.c.id.in_(incident_ids))
            yield "incident_entries", rows("incident_entries", e.c.incident_id.in_(incident_ids))
            yield "handoffs", rows("handoffs", h.c.id.in_(handoff_ids))
            yield "handoff_attempts", rows("handoff_attempts", ha.c.handoff_id.in_(handoff_ids))
            yield "notices", rows("notices", n.c.order_id == order_id)
            refs = {f"order:{order_id}"}
            refs |= {f"{k}:{x}" for k in ("person", "offender", "victim") for x in parties}
            refs |= {f"device:{x}" for x in device_ids}
            refs |= {f"incident:{x}" for x in incident_ids}
            refs |= {f"handoff:{x}" for x in handoff_ids}
            yield "audit", self._audit_rows(c, refs)

    @staticmethod
    def _audit_rows(c: Connection, refs: set[str]) -> Iterator[dict[str, Any]]:
        a = s.audit
        for r in c.execute(select(a).order_by(a.c.id)).yield_per(_BATCH):
            if _refs(r.subject) & refs:
                row = {k: getattr(r, k) for k in AUDIT_COLUMNS}
                row["id"], row["at"] = int(row["id"]), float(row["at"])
                row["fields"] = json.loads(row["fields"])
                yield row

    def import_case(
        self,
        tables: Callable[[str], Iterable[dict[str, Any]]],
        audit: Callable[[Mapping[str, int]], tuple[str, str, str, str, list[str], float]],
    ) -> dict[str, int]:
        """Insert every case table's rows as given, in one transaction with its audit record.

        ``tables(name)`` gives a table's rows (checked values); ``audit(counts)`` gives the
        audit record (actor, role, subject, purpose, fields, at). Refused (Conflict) when
        any row's id is already taken here: a case is imported once.
        """
        counts: dict[str, int] = {}
        with self._audit_lock, self._write() as c:
            for name in CASE_TABLES:
                table = stored_table(name)
                n = 0
                batch: list[dict[str, Any]] = []
                try:
                    for row in tables(name):
                        batch.append(row)
                        if len(batch) >= _BATCH:
                            n += self._insert(c, table, batch)
                            batch = []
                    if batch:
                        n += self._insert(c, table, batch)
                except IntegrityError as exc:
                    raise Conflict(
                        f"{name}: a record with the same id (or device identifier) is already "
                        "in this database; a case is imported once, into an instance without it"
                    ) from exc
                except DBAPIError as exc:
                    raise Invalid(f"{name}: the database refused a row: {exc.orig}") from exc
                counts[name] = n
            try:
                counts |= self._import_case_extras(c, tables)
            except IntegrityError as exc:
                raise Conflict(
                    "a record of the case is already in this database; a case is imported once"
                ) from exc
            if self.dialect == "postgresql":
                self._advance_sequences(c)
            actor, role, subject, purpose, fields, at = audit(counts)
            self._audit_insert(
                c, AuditEntry(actor, role, "import", subject, purpose, fields, at=at)
            )
        return counts

    def _import_case_extras(
        self, c: Connection, tables: Callable[[str], Iterable[dict[str, Any]]]
    ) -> dict[str, int]:
        """What a case carries besides its tables, inserted in the import's transaction
        (a mixin's part: the recordings of adapters/store/evidence.py); counts per kind."""
        return {}

    @staticmethod
    def _insert(c: Connection, table: Table, rows: list[dict[str, Any]]) -> int:
        # executemany needs every row to name the same columns.
        names = sorted({k for r in rows for k in r})
        c.execute(table.insert(), [{k: r.get(k) for k in names} for r in rows])
        return len(rows)

    @staticmethod
    def _advance_sequences(c: Connection) -> None:
        """Move PostgreSQL's id sequences past the ids just inserted."""
        for name in CASE_TABLES:
            t = stored_table(name)
            if not isinstance(t.c.id.type, Integer):
                continue
            top = c.execute(select(func.max(t.c.id))).scalar()
            if top is not None:
                c.execute(
                    text("SELECT setval(pg_get_serial_sequence(:t, 'id'), :v)"),
                    {"t": name, "v": int(top)},
                )

    def schema_revision(self) -> str | None:
        """The Alembic revision this database is at."""
        with self._read() as c:
            value = c.execute(text("SELECT version_num FROM alembic_version")).scalar()
        return None if value is None else str(value)

    def case_id_taken(self, ids: Mapping[str, Sequence[Any]]) -> tuple[str, Any] | None:
        """The first (table, id) of these already stored here, if any."""
        with self._read() as c:
            for name, values in ids.items():
                t = stored_table(name)
                for k in range(0, len(values), _CHUNK):
                    chunk = list(values[k : k + _CHUNK])
                    hit = c.execute(select(t.c.id).where(t.c.id.in_(chunk)).limit(1)).scalar()
                    if hit is not None:
                        return name, hit
        return None
