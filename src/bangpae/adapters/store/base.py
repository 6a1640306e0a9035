"""What the store's mixins share: the timeline entry of a person's action, bulk inserts
that keep SQLAlchemy's per-row work off the single writer, and what they may use of
:class:`~bangpae.adapters.store.store.Store`, declared once for type checkers (``Store``
itself provides each of those).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    Column,
    ColumnElement,
    Connection,
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
    c: Connection, table: str | None, sql: str, rows: Sequence[tuple[Any, ...]]
) -> list[int]:
    """Run an INSERT for each row on the driver's cursor; the rows' ids in ``table``, in
    order (none when no table is named)."""
    raw = c.connection.dbapi_connection
    if raw is None:  # pragma: no cover - a checked-out connection always has one
        raise RuntimeError("no database connection")
    cur: Any = raw.cursor()
    if table is None:
        try:
            cur.executemany(sql, rows)
        finally:
            cur.close()
        return []
    try:
        # Under BEGIN IMMEDIATE this is the only writer and SQLite gives each new row
        # max(rowid) + 1: the rows' ids are the next len(rows) after the largest.
        first = int(cur.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0]) + 1
        cur.executemany(sql, rows)
        last = int(cur.execute("SELECT last_insert_rowid()").fetchone()[0])
    finally:
        cur.close()
    if last - first + 1 != len(rows):  # pragma: no cover - only at the end of the rowid range
        raise RuntimeError(f"{table} ids were not assigned in sequence")
    return list(range(first, last + 1))


class StoreBase:
    """The base of every store mixin."""

    def _insert_rows(
        self, c: Connection, table: Table, rows: list[dict[str, Any]], ids: bool = True
    ) -> list[int]:
        """Insert rows (all with the same keys) in order; their generated ids, in that order
        (none unless ``ids``: for a table whose key is not generated).

        On SQLite through the driver's executemany on plain tuples: building and compiling
        a parameter set per row cost the single writer more than SQLite's own work.
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
        sql = (
            f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
        )
        return sqlite_insert(c, table.name if ids else None, sql, params)

    if TYPE_CHECKING:  # provided by Store
        _audit_lock: threading.Lock

        @property
        def dialect(self) -> str:
            """``sqlite`` or ``postgresql``."""
            ...

        def _read(self) -> AbstractContextManager[Connection]: ...
        def _write(self) -> AbstractContextManager[Connection]: ...
        def _pg_lock(self, c: Connection, key: int) -> None: ...
        def _seal(self, column: Column[Any], value: Any) -> Any: ...
        def _open(self, column: Column[Any], value: Any, row_id: Any) -> Any: ...
        @staticmethod
        def _stored(r: Row[Any]) -> Any: ...
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
