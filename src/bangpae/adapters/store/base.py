"""What the store's mixins share: the timeline entry of a person's action, bulk inserts
that keep SQLAlchemy's per-row work off the single writer, and what they may use of
:class:`~bangpae.adapters.store.store.Store`, declared once for type checkers (``Store``
itself provides each of those).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    Column,
    ColumnElement,
    Connection,
    Engine,
    Row,
    Select,
    Table,
    any_,
    bindparam,
    func,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY

from bangpae.adapters.store import schema as s
from bangpae.domain.model import Event


def insert_action_entry(
    c: Connection,
    incident_id: int,
    action: str,
    actor: str,
    at: float,
    note: str,
    data: dict[str, Any],
) -> None:
    """One timeline entry of something a person did to an incident (no event behind it)."""
    c.execute(
        s.incident_entries.insert().values(
            incident_id=incident_id,
            at=at,
            action=action,
            actor=actor,
            note=note,
            event_id=None,
            data=data,
        )
    )


def one_of(column: Column[Any], name: str) -> dict[str, ColumnElement[bool]]:
    """``column`` is one of the values bound as the single parameter ``name``, per dialect
    (bind them with :func:`bound_list`).

    An IN list with a parameter per value is rendered into the SQL again at every execution
    and needs splitting under the driver's parameter limit; one parameter (a JSON array that
    SQLite's ``json_each`` reads, a PostgreSQL array) keeps the statement compiled once,
    whatever the number of values.
    """
    values: Select[Any] = select(literal_column("value")).select_from(
        func.json_each(bindparam(name))
    )
    return {
        "sqlite": column.in_(values),
        "postgresql": column == any_(bindparam(name, type_=ARRAY(column.type))),
    }


def bound_list(dialect: str, values: Iterable[Any]) -> Any:
    """The values for a parameter of :func:`one_of` on this dialect."""
    return json.dumps(list(values)) if dialect == "sqlite" else list(values)


def sqlite_insert(
    c: Connection,
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    ids: bool = True,
) -> list[int]:
    """Insert rows with one multi-row INSERT on the driver's cursor (per few thousand
    rows); the rows' ids in ``table``, in order (none unless ``ids``).

    One statement, not one per row: each call into SQLite hands the interpreter to the
    other threads and back, and with the event loop busy every hand-back waited for its
    switch interval, so the single writer's transaction took several times its work.
    """
    if not rows:
        return []
    raw = c.connection.dbapi_connection
    if raw is None:  # pragma: no cover - a checked-out connection always has one
        raise RuntimeError("no database connection")
    width = len(columns)
    limit = min(raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER), 32766)
    per = max(1, limit // width)
    head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
    one = "(" + ", ".join("?" * width) + ")"
    cur: Any = raw.cursor()
    try:
        for k in range(0, len(rows), per):
            chunk = rows[k : k + per]
            cur.execute(head + ", ".join([one] * len(chunk)), [v for r in chunk for v in r])
        if not ids:
            return []
        # Under BEGIN IMMEDIATE this is the only writer, and SQLite gives each new row
        # max(rowid) + 1 in the order of VALUES (it would pick at random only once a
        # rowid reached 2**63 - 1): the rows' ids are the len(rows) up to the last one.
        last = int(cur.execute("SELECT last_insert_rowid()").fetchone()[0])
    finally:
        cur.close()
    return list(range(last - len(rows) + 1, last + 1))


class StoreBase:
    """The base of every store mixin."""

    def _insert_rows(
        self, c: Connection, table: Table, rows: list[dict[str, Any]], ids: bool = True
    ) -> list[int]:
        """Insert rows (all with the same keys) in order; their generated ids, in that order
        (none unless ``ids``: for a table whose key is not generated).

        On SQLite through :func:`sqlite_insert` on plain tuples: building and compiling a
        parameter set per row cost the single writer more than SQLite's own work.
        """
        if not rows:
            return []
        if self.dialect != "sqlite":
            if not ids:
                c.execute(table.insert(), rows)
                return []
            stmt = table.insert().returning(table.c.id, sort_by_parameter_order=True)
            return [int(x) for x in c.execute(stmt, rows).scalars()]
        names = list(rows[0])
        json_cols = {k for k in names if isinstance(table.c[k].type, JSON)}
        params = [tuple(json.dumps(r[k]) if k in json_cols else r[k] for k in names) for r in rows]
        return sqlite_insert(c, table.name, names, params, ids)

    if TYPE_CHECKING:  # provided by Store
        _audit_lock: threading.Lock
        engine: Engine
        _serial: AbstractContextManager[Any]  # one caller at a time (in-memory SQLite)
        _writers: AbstractContextManager[Any]  # this process's writers, one at a time

        @property
        def dialect(self) -> str:
            """``sqlite`` or ``postgresql``."""
            ...

        def _read(self) -> AbstractContextManager[Connection]: ...
        def _incidents_moved(self, incident_ids: Iterable[int]) -> None: ...
        def _write(self) -> AbstractContextManager[Connection]: ...
        def _pg_lock(self, c: Connection, key: int) -> None: ...
        def _seal(self, column: Column[Any], value: Any) -> Any: ...
        def _open(self, column: Column[Any], value: Any, row_id: Any) -> Any: ...
        def _seal_in(self, data: Any, key: str) -> Any: ...
        def _open_in(self, data: Any, key: str, what: str) -> Any: ...
        def _open_place(self, data: Any, what: str) -> Any: ...
        def _insert_events(self, c: Connection, events: Sequence[Event]) -> list[Event]: ...
        def _queue_reactions(self, c: Connection, events: Sequence[Event]) -> None: ...
        def _stored(self, r: Row[Any]) -> Any: ...
        def _audit_insert(
            self,
            c: Connection,
            actor: str,
            role: str,
            action: str,
            subject: str,
            purpose: str,
            fields: Sequence[str] = (),
            *,
            at: float,
            request_id: str | None = None,
        ) -> int: ...


def audit_row(r: Any) -> dict[str, Any]:
    """An audit row as the record its hash covers (and as callers read it)."""
    return {
        "id": int(r.id),
        "at": float(r.at),
        "actor": r.actor,
        "role": r.role,
        "action": r.action,
        "subject": r.subject,
        "purpose": r.purpose,
        "fields": json.loads(r.fields),
        "request_id": r.request_id,
    }
