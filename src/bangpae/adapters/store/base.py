"""The store's kernel, which every mixin of :class:`~bangpae.adapters.store.store.Store`
inherits: the engine on SQLite (WAL, synchronous=FULL) or PostgreSQL, its read and write
transactions, advisory locks, migrations, and bulk inserts that keep SQLAlchemy's
per-row work off the single writer.

Writers are serialised where the data needs it: on SQLite every write transaction starts
with ``BEGIN IMMEDIATE`` (one writer at a time, across threads and processes, so
read-then-write decisions cannot race); on PostgreSQL the mixins take transaction-scoped
advisory locks (:meth:`StoreBase._pg_lock`) where they decide from what they read.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    Column,
    ColumnElement,
    Connection,
    CursorResult,
    Engine,
    Row,
    Select,
    Table,
    any_,
    bindparam,
    create_engine,
    event,
    func,
    literal_column,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from bangpae.adapters.datadir import create_private_file, sqlite_file
from bangpae.adapters.store import schema as s
from bangpae.domain.errors import Invalid
from bangpae.domain.model import Event

if TYPE_CHECKING:
    from bangpae.adapters.crypto import FieldCipher

# PostgreSQL advisory lock key of migrations (transaction-scoped, so a crash never leaves
# one held; the mixins hold their own keys)
_LOCK_MIGRATE = 0x62616E6770610001


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


def new_id(result: CursorResult[Any]) -> int:
    """The primary key a single-row insert generated."""
    key = result.inserted_primary_key
    if key is None:  # pragma: no cover - every table has a generated integer key
        raise RuntimeError("the database returned no generated id")
    return int(key[0])


def fits(column: Column[Any], value: str | None) -> None:
    """Refuse a string longer than its column, alike on both backends (SQLite would keep it)."""
    length = getattr(column.type, "length", None)
    if value is not None and length is not None and len(value) > length:
        raise Invalid(f"{column.name} is longer than {length} characters")


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control away from the sqlite3 module: _sqlite_begin emits BEGIN.
    dbapi_connection.isolation_level = None
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")  # an acknowledged fix survives power loss
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    # Fix batches touch one index page per device: a bigger cache and rarer checkpoints
    # (the WAL may grow to ~40 MB) roughly double bulk throughput on a large table.
    cur.execute("PRAGMA cache_size=-16384")
    cur.execute("PRAGMA wal_autocheckpoint=10000")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    # A writer takes the write lock up front: no read-then-write race, no lock-upgrade deadlock.
    immediate = conn.get_execution_options().get("bangpae_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class StoreBase:
    """The engine behind one database URL and its transactions: the base of every store
    mixin."""

    def __init__(self, url: str) -> None:
        self.url = url
        u = make_url(url)
        if u.drivername == "postgresql":  # the driver this project ships with
            u = u.set(drivername="postgresql+psycopg")
        # A failed statement's exception quotes its values (names, positions, phone
        # numbers) and is logged: they are left out of it, and out of SQL echo.
        kwargs: dict[str, Any] = {"hide_parameters": True}
        memory = False
        if u.get_backend_name() == "sqlite":
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            memory = u.database in (None, "", ":memory:") or u.query.get("mode") == "memory"
            if memory:  # one shared connection, else every connection sees its own database
                kwargs["poolclass"] = StaticPool
            elif (db := sqlite_file(u)) is not None:
                # Made here 0600 whatever the umask: SQLite gives its -wal and -shm files
                # the database file's mode (a missing directory is SQLite's to report).
                with suppress(FileNotFoundError, NotADirectoryError):
                    create_private_file(db)
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(u, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        # An in-memory database has a single connection: use it one caller at a time.
        self._serial: threading.RLock | nullcontext[None] = (
            threading.RLock() if memory else nullcontext()
        )
        # SQLite has one writer at a time, and a writer that finds the lock taken polls for
        # it with sleeps growing to 100 ms, so it may start tens of milliseconds after the
        # lock is free (the group commit of fixes behind an audit record, or the reverse).
        # The process's own writers queue here instead: each starts as the previous commits.
        self._writers: threading.RLock | nullcontext[None] = (
            threading.RLock() if self.dialect == "sqlite" and not memory else nullcontext()
        )

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._serial, self.engine.connect() as c:
            yield c

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._serial, self._writers, self.engine.connect() as c:
            c.execution_options(bangpae_write=True)
            with c.begin():
                yield c

    def _pg_lock(self, c: Connection, key: int) -> None:
        if self.dialect == "postgresql":
            c.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent; concurrent runs wait)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        with self._write() as conn:
            self._pg_lock(conn, _LOCK_MIGRATE)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def close(self) -> None:
        """Release connections."""
        self.engine.dispose()

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

    if TYPE_CHECKING:  # set by Store, or provided by other mixins of it
        cipher: FieldCipher | None

        def _incidents_moved(self, incident_ids: Iterable[int]) -> None: ...
        def _seal(self, column: Column[Any], value: Any) -> Any: ...
        def _open(self, column: Column[Any], value: Any, row_id: Any) -> Any: ...
        def _seal_in(self, data: Any, key: str) -> Any: ...
        def _open_in(self, data: Any, key: str, what: str) -> Any: ...
        def _open_place(self, data: Any, what: str) -> Any: ...
        def _insert_events(self, c: Connection, events: Sequence[Event]) -> list[Event]: ...
        def _queue_reactions(self, c: Connection, events: Sequence[Event]) -> None: ...
        def _event_of(self, r: Row[Any]) -> Event: ...
        def _stored(self, r: Row[Any]) -> Any: ...
