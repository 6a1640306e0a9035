"""The store: one SQLAlchemy code path for SQLite (WAL, synchronous=FULL) and PostgreSQL.

Every public method runs in its own transaction and has committed when it
returns: a caller that acknowledges after a call returns acknowledges only
what is on disk.

Writers are serialised where the data needs it: on SQLite every write
transaction starts with ``BEGIN IMMEDIATE`` (one writer at a time, across
threads and processes, so read-then-write decisions cannot race); on
PostgreSQL, incident grouping and audit appends take transaction-scoped
advisory locks, and incident actions lock their row.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import inspect
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import (
    BindParameter,
    Column,
    ColumnElement,
    Connection,
    CursorResult,
    Engine,
    Row,
    Select,
    and_,
    bindparam,
    create_engine,
    event,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import StaticPool

from bangpae.adapters.crypto import FieldCipher
from bangpae.adapters.datadir import create_private_file, sqlite_file
from bangpae.adapters.store import schema as s
from bangpae.adapters.store.access import AccessStore
from bangpae.adapters.store.auth import AuthStore
from bangpae.adapters.store.base import (
    audit_row,
    bound_list,
    insert_action_entry,
    one_of,
    sqlite_insert,
)
from bangpae.adapters.store.case import CaseStore
from bangpae.adapters.store.evidence import EvidenceStore
from bangpae.adapters.store.notices import NoticeStore
from bangpae.adapters.store.positions import packed_positions, take_ids
from bangpae.adapters.store.refuges import RefugeStore
from bangpae.adapters.store.response import ResponseStore
from bangpae.adapters.store.retention import RetentionStore
from bangpae.adapters.store.sealed import SealedFields
from bangpae.domain.batch import ALARM_TEXT, FixBatch
from bangpae.domain.errors import Conflict, Invalid, NotFound
from bangpae.domain.incidents import FINAL, PRIORITIES, advance, transition
from bangpae.domain.model import (
    Device,
    DeviceKind,
    Event,
    EventKind,
    Fix,
    Order,
    Person,
    PersonKind,
    Tier,
    WeeklyWindow,
    Zone,
)

GENESIS = "0" * 64

log = logging.getLogger("bangpae.audit")

# PostgreSQL advisory lock keys (transaction-scoped, so a crash never leaves one held).
_LOCK_MIGRATE = 0x62616E6770610001
_LOCK_INCIDENTS = 0x62616E6770610002
_LOCK_AUDIT = 0x62616E6770610003

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
_ORDERS_BY_ID = {
    name: select(s.orders).where(clause) for name, clause in one_of(s.orders.c.id, "ids").items()
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


@dataclass(frozen=True, slots=True)
class StoredFix:
    """A fix as stored, with its row id and whether it arrived late."""

    id: int
    fix: Fix
    late: bool


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A login account."""

    id: int
    username: str
    password_hash: str
    role: str
    person_id: int | None
    disabled: bool


@dataclass(frozen=True, slots=True)
class IncidentRecord:
    """An incident as the control centre sees it."""

    id: int
    kind: str
    priority: str
    status: str
    order_id: int | None
    person_id: int | None
    opened_at: float
    timeline: tuple[dict[str, Any], ...] = ()
    late: bool = False
    updated_at: float | None = None
    duress: bool = False  # she gave her duress PIN about it (docs/sos.md)


@dataclass(frozen=True, slots=True)
class AuditReport:
    """The outcome of checking the audit hash chain (docs/audit-log.md)."""

    ok: bool
    records: int
    first_bad_id: int | None
    reason: str
    legacy: int = 0  # records before the first keyed one: plain SHA-256, written without a key
    base: int | None = None  # the last record purged by retention (the chain continues after it)
    anchors: int = 0  # anchor lines checked against the chain


@dataclass(frozen=True, slots=True)
class AnchorMark:
    """An anchored head as :meth:`Store.audit_verify` checks it.

    ``at``: when the anchor was written (None: unknown); ``keyed``: whether the record
    carried a MAC then (None: unknown, a line from before the audit key); ``where``:
    where the anchor was read, for messages.
    """

    id: int
    hash: str
    at: float | None = None
    keyed: bool | None = None
    where: str = ""


class AuditKeyMissing(Exception):
    """A keyed audit chain, and no audit key in this process to extend or check it."""


# How far apart two clocks writing the chain may be: the time of a purge checkpoint is
# checked against the records around it and against anchors within this slack.
CLOCK_SLACK_S = 300.0
_MAC_CONTEXT = b"bangpae-audit-mac-1 "
_SEEN, _WRITTEN = "bangpae_audit_seen", "bangpae_audit_written"  # keys of Connection.info


def _zone_to_json(z: Zone) -> dict[str, Any]:
    return {
        "id": z.id,
        "name": z.name,
        "geometry": dict(z.geometry),
        "radius_m": z.radius_m,
        "schedule": [[w.day, w.start_min, w.end_min] for w in z.schedule],
    }


def _zone_from_json(d: dict[str, Any]) -> Zone:
    return Zone(
        id=str(d["id"]),
        name=str(d.get("name", "")),
        geometry=d["geometry"],
        radius_m=d.get("radius_m"),
        schedule=tuple(WeeklyWindow(*w) for w in d.get("schedule", [])),
    )


def audit_hash(prev_hash: str, record: dict[str, Any]) -> str:
    """The chain hash of a record: SHA-256 over the previous hash and canonical JSON."""
    body = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def audit_mac(key: bytes, digest: str) -> str:
    """A record's MAC: HMAC-SHA256 under the audit key over its chain hash.

    The chain hash covers the record and, through ``prev_hash``, every record before it,
    so the MAC vouches for the whole chain up to the record (docs/audit-log.md).
    """
    return hmac.new(key, _MAC_CONTEXT + digest.encode("ascii"), hashlib.sha256).hexdigest()


def _iso_time(value: str) -> float | None:
    try:
        return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _new_id(result: CursorResult[Any]) -> int:
    """The primary key a single-row insert generated."""
    key = result.inserted_primary_key
    if key is None:  # pragma: no cover - every table has a generated integer key
        raise RuntimeError("the database returned no generated id")
    return int(key[0])


@dataclass
class _AuditAppend:
    """One audit record waiting for the group commit, and how it went."""

    args: tuple[str, str, str, str, str, tuple[str, ...]]
    at: float
    request_id: str | None
    done: bool = False
    id: int | None = None
    error: BaseException | None = None


@functools.cache
def _signature(fn: Any) -> inspect.Signature:
    return inspect.signature(fn)


def _audit_fits(
    actor: str, role: str, action: str, subject: str, purpose: str, request_id: str | None
) -> None:
    """Refuse an audit record a column cannot hold, before it joins anyone's transaction."""
    a = s.audit
    for column, value in (
        (a.c.actor, actor),
        (a.c.role, role),
        (a.c.action, action),
        (a.c.subject, subject),
        (a.c.purpose, purpose),
        (a.c.request_id, request_id),
    ):
        _fits(column, value)


def _fits(column: Column[Any], value: str | None) -> None:
    """Refuse a string longer than its column, alike on both backends (SQLite would keep it)."""
    length = getattr(column.type, "length", None)
    if value is not None and length is not None and len(value) > length:
        raise Invalid(f"{column.name} is longer than {length} characters")


# a fix row's columns, in the order of _SQLITE_FIX_INSERT's parameters
_FIX_ROW = (
    "id",
    "device_id",
    "fix_time",
    "received_at",
    "position",
    "accuracy_m",
    "battery_pct",
    "valid",
    "alarms",
    "late",
    "hold",
)


def _batch_of(fixes: Sequence[Fix]) -> FixBatch:
    try:
        return FixBatch.of(fixes)
    except ValueError as exc:  # an alarm the store does not know
        raise Invalid(str(exc)) from exc


def _or_none(column: npt.NDArray[np.float64]) -> list[float | None]:
    """A column's values with None for NaN (an unknown value is NULL)."""
    missing = np.isnan(column)
    if not missing.any():
        return column.tolist()  # type: ignore[no-any-return]
    values = column.astype(object)
    values[missing] = None
    return values.tolist()  # type: ignore[no-any-return]


def _fix_rows(
    batch: FixBatch, late: npt.NDArray[np.bool_], ids: list[int], positions: list[bytes]
) -> list[tuple[Any, ...]]:
    """The batch's rows as the driver binds them, columns in the order of _FIX_ROW."""
    alarms = batch.alarms
    text = [ALARM_TEXT[m] for m in alarms.tolist()] if alarms.any() else [""] * len(batch)
    return list(
        zip(
            ids,
            batch.device.tolist(),
            batch.t.tolist(),
            batch.received_or_fix_time().tolist(),
            positions,
            _or_none(batch.acc),
            _or_none(batch.battery),
            batch.valid.tolist(),
            text,
            late.tolist(),
            [False] * len(batch),  # not under a legal hold
            strict=True,
        )
    )


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


DeviceCredential = tuple[int, str, str | None, bool, float]
_CREDENTIAL = (
    s.devices.c.id,
    s.devices.c.identifier,
    s.devices.c.secret_hash,
    s.devices.c.lenient_crc,
    s.devices.c.created_at,
)


def _credential(r: Row[Any]) -> DeviceCredential:
    return (int(r[0]), str(r[1]), r[2], bool(r[3]), float(r[4] or 0.0))


class Store(
    EvidenceStore,
    SealedFields,
    ResponseStore,
    NoticeStore,
    AuthStore,
    RetentionStore,
    CaseStore,
    AccessStore,
    RefugeStore,
):
    """Durable state behind one database URL (``sqlite:///path`` or ``postgresql+psycopg://``).

    ``cipher`` seals phone numbers, order zones (see ``sealed``) and fix positions (see
    ``positions``) at rest; without one they are written in plaintext, for tools and
    tests that do not care.
    """

    def __init__(
        self, url: str, cipher: FieldCipher | None = None, audit_key: bytes | None = None
    ) -> None:
        self.url = url
        self.cipher = cipher
        # Audit records get a MAC under this key (docs/audit-log.md); without it they are
        # written as before the key existed, and a keyed chain is neither extended nor
        # vouched for.
        self.audit_key = audit_key
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
        self._audit_lock = threading.Lock()
        self._audit_pending: list[_AuditAppend] = []  # appends waiting for a group commit
        self._audit_queue = threading.Lock()
        # (id, hash) of the newest record this process's group commit wrote: checked at the
        # next one, so records cut from the tail before they were anchored still show
        self._audit_written: tuple[int, str] | None = None
        self.audit_tail_losses = 0
        # SQLite has one writer at a time, and a writer that finds the lock taken polls for
        # it with sleeps growing to 100 ms, so it may start tens of milliseconds after the
        # lock is free (the group commit of fixes behind an audit record, or the reverse).
        # The process's own writers queue here instead: each starts as the previous commits.
        self._writers: threading.RLock | nullcontext[None] = (
            threading.RLock() if self.dialect == "sqlite" and not memory else nullcontext()
        )
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
        """Bring the schema to the newest Alembic revision (idempotent; concurrent runs wait);
        with a cipher, then seal the plaintext positions left (once the keys are known to
        open what is sealed already: DataKeyError otherwise, and nothing sealed)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        with self._write() as conn:
            self._pg_lock(conn, _LOCK_MIGRATE)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        if self.cipher is not None:
            self.check_keys()
            self.seal_positions()

    def close(self) -> None:
        """Release connections."""
        self.engine.dispose()

    # -- people, devices, orders -------------------------------------------------------

    def add_person(self, kind: str, name: str, at: float = 0.0) -> int:
        """Create a person; ``kind`` is offender, victim or officer."""
        if kind not in {k.value for k in PersonKind}:
            raise Invalid(f"unknown person kind {kind!r}")
        _fits(s.people.c.name, name)
        with self._write() as c:
            r = c.execute(s.people.insert().values(kind=kind, name=name, created_at=at))
            return _new_id(r)

    def get_person(self, person_id: int) -> Person | None:
        """A person by id."""
        with self._read() as c:
            r = c.execute(select(s.people).where(s.people.c.id == person_id)).first()
        return None if r is None else Person(int(r.id), PersonKind(r.kind), r.name)

    def add_device(
        self,
        identifier: str,
        kind: str,
        protocol: str,
        person_id: int,
        secret_hash: str | None = None,
        at: float = 0.0,
        lenient_crc: bool = False,
    ) -> int:
        """Register a device for a person; identifiers are unique."""
        if kind not in {k.value for k in DeviceKind}:
            raise Invalid(f"unknown device kind {kind!r}")
        if not identifier:
            raise Invalid("a device needs an identifier")
        _fits(s.devices.c.identifier, identifier)
        _fits(s.devices.c.protocol, protocol)
        _fits(s.devices.c.secret_hash, secret_hash)
        with self._write() as c:
            if c.execute(select(s.people.c.id).where(s.people.c.id == person_id)).first() is None:
                raise NotFound(f"person {person_id} does not exist")
            if (
                c.execute(
                    select(s.devices.c.id).where(s.devices.c.identifier == identifier)
                ).first()
                is not None
            ):
                raise Conflict(f"device {identifier!r} exists already")
            try:
                r = c.execute(
                    s.devices.insert().values(
                        identifier=identifier,
                        kind=kind,
                        protocol=protocol,
                        person_id=person_id,
                        secret_hash=secret_hash,
                        created_at=at,
                        lenient_crc=lenient_crc,
                    )
                )
            except IntegrityError as exc:  # a concurrent registration won the race
                raise Conflict(f"device {identifier!r} exists already") from exc
            return _new_id(r)

    @staticmethod
    def _device(r: Row[Any]) -> Device:
        return Device(int(r.id), r.identifier, DeviceKind(r.kind), r.protocol, int(r.person_id))

    def get_device(self, ref: int | str) -> Device | None:
        """A device by id, or by identifier (a string of digits: identifier first, then id)."""
        d = s.devices
        with self._read() as c:
            r = None
            if isinstance(ref, str):
                r = c.execute(select(d).where(d.c.identifier == ref)).first()
                if r is None and ref.isdigit() and len(ref) <= 18:
                    r = c.execute(select(d).where(d.c.id == int(ref))).first()
            else:
                r = c.execute(select(d).where(d.c.id == int(ref))).first()
        return None if r is None else self._device(r)

    def device_lenient_crc(self, device_id: int) -> bool:
        """Whether frames with a wrong CRC are accepted from this device."""
        with self._read() as c:
            value = c.execute(
                select(s.devices.c.lenient_crc).where(s.devices.c.id == device_id)
            ).scalar()
        return bool(value)

    def device_secret_hash(self, device_id: int) -> str | None:
        """The stored hash of a device's key, if it has one."""
        with self._read() as c:
            value = c.execute(
                select(s.devices.c.secret_hash).where(s.devices.c.id == device_id)
            ).scalar()
        return None if value is None else str(value)

    def device_credentials(self, after_id: int = 0) -> list[DeviceCredential]:
        """Every device's id, identifier, key hash, CRC leniency and registration time (the
        listeners' registry); ``after_id``: only devices registered after that one."""
        with self._read() as c:
            rows = c.execute(select(*_CREDENTIAL).where(s.devices.c.id > after_id))
            return [_credential(r) for r in rows]

    def device_credential(self, identifier: str) -> DeviceCredential | None:
        """One device's credentials by its exact identifier."""
        d = s.devices
        with self._read() as c:
            r = c.execute(select(*_CREDENTIAL).where(d.c.identifier == identifier)).first()
        return None if r is None else _credential(r)

    def set_device_secret_hash(self, device_id: int, secret_hash: str) -> None:
        """Replace a device's stored key hash (a legacy hash upgraded after a good check)."""
        _fits(s.devices.c.secret_hash, secret_hash)
        with self._write() as c:
            c.execute(
                update(s.devices).where(s.devices.c.id == device_id).values(secret_hash=secret_hash)
            )

    def device_ids_of_person(self, person_id: int) -> list[int]:
        """Ids of the devices bound to a person."""
        d = s.devices
        with self._read() as c:
            rows = c.execute(select(d.c.id).where(d.c.person_id == person_id).order_by(d.c.id))
            return [int(x) for x in rows.scalars()]

    def add_order(self, order: Order, at: float = 0.0) -> int:
        """Create a protective order (``order.id`` ignored); parties must be of the right kind."""
        p = s.people
        with self._write() as c:
            kinds = {
                int(r.id): r.kind
                for r in c.execute(
                    select(p.c.id, p.c.kind).where(p.c.id.in_([order.offender_id, order.victim_id]))
                )
            }
            if kinds.get(order.offender_id) != PersonKind.OFFENDER.value:
                raise Invalid(f"person {order.offender_id} is not an offender")
            if kinds.get(order.victim_id) != PersonKind.VICTIM.value:
                raise Invalid(f"person {order.victim_id} is not a victim")
            r = c.execute(
                s.orders.insert().values(
                    offender_id=order.offender_id,
                    victim_id=order.victim_id,
                    notify_radius_m=order.notify_radius_m,
                    reveal_radius_m=order.reveal_radius_m,
                    keep_away_m=order.keep_away_m,
                    hysteresis_m=order.hysteresis_m,
                    zones=self._seal(s.orders.c.zones, [_zone_to_json(z) for z in order.zones]),
                    curfews=self._seal(
                        s.orders.c.curfews, [_zone_to_json(z) for z in order.curfews]
                    ),
                    stale_after_s=order.stale_after_s,
                    offline_after_s=order.offline_after_s,
                    no_fix_after_s=order.no_fix_after_s,
                    valid_from=order.valid_from,
                    valid_until=order.valid_until,
                    profile=order.profile,
                    timezone=order.timezone,
                    created_at=at,
                )
            )
            return _new_id(r)

    def _order(self, r: Row[Any]) -> Order:
        zones = self._open(s.orders.c.zones, r.zones, r.id)
        curfews = self._open(s.orders.c.curfews, r.curfews, r.id)
        return Order(
            id=int(r.id),
            offender_id=int(r.offender_id),
            victim_id=int(r.victim_id),
            notify_radius_m=r.notify_radius_m,
            reveal_radius_m=r.reveal_radius_m,
            keep_away_m=r.keep_away_m,
            hysteresis_m=r.hysteresis_m,
            zones=tuple(_zone_from_json(z) for z in zones),
            curfews=tuple(_zone_from_json(z) for z in curfews),
            stale_after_s=r.stale_after_s,
            offline_after_s=r.offline_after_s,
            no_fix_after_s=r.no_fix_after_s,
            valid_from=r.valid_from,
            valid_until=r.valid_until,
            profile=r.profile,
            timezone=r.timezone,
        )

    def get_order(self, order_id: int) -> Order | None:
        """An order by id."""
        with self._read() as c:
            r = c.execute(select(s.orders).where(s.orders.c.id == order_id)).first()
        return None if r is None else self._order(r)

    def get_orders(self, order_ids: Iterable[int]) -> dict[int, Order]:
        """Orders by id, in one query (an id not found is left out)."""
        ids = bound_list(self.dialect, sorted(set(order_ids)))
        with self._read() as c:
            rows = c.execute(_ORDERS_BY_ID[self.dialect], {"ids": ids})
            return {int(r.id): self._order(r) for r in rows}

    def orders_for_person(self, person_id: int) -> list[Order]:
        """Orders in which a person is the offender or the victim."""
        o = s.orders
        with self._read() as c:
            rows = c.execute(
                select(o)
                .where(or_(o.c.offender_id == person_id, o.c.victim_id == person_id))
                .order_by(o.c.id)
            ).all()
        return [self._order(r) for r in rows]

    def load_all(self) -> tuple[list[Person], list[Device], list[Order]]:
        """Everyone, every device and every order: what the engine needs to start."""
        with self._read() as c:
            people = [
                Person(int(r.id), PersonKind(r.kind), r.name)
                for r in c.execute(select(s.people).order_by(s.people.c.id))
            ]
            devices = [
                self._device(r) for r in c.execute(select(s.devices).order_by(s.devices.c.id))
            ]
            orders = [self._order(r) for r in c.execute(select(s.orders).order_by(s.orders.c.id))]
        return people, devices, orders

    # -- fixes -------------------------------------------------------------------------

    def _insert_fixes(
        self,
        c: Connection,
        fixes: Sequence[Fix] | FixBatch,
        late: Sequence[bool] | npt.NDArray[np.bool_] | None,
    ) -> list[int]:
        batch = fixes if isinstance(fixes, FixBatch) else _batch_of(fixes)
        n = len(batch)
        if not n:
            return []
        flags = np.zeros(n, dtype=np.bool_) if late is None else np.asarray(late, dtype=np.bool_)
        if len(flags) != n:
            raise Invalid(f"{n} fixes but {len(flags)} late flags")
        # A sealed position is bound to its row's id: the ids are taken first.
        ids = take_ids(c, self.dialect, n)
        devices, times = batch.device.tolist(), batch.t.tolist()
        positions = self._position_records(ids, devices, times, packed_positions(batch))
        rows = _fix_rows(batch, flags, ids, positions)
        if self.dialect == "sqlite":
            try:
                sqlite_insert(c, "fixes", _FIX_ROW, rows, ids=False)
            except sqlite3.IntegrityError as exc:  # the only constraint a fix can break
                raise NotFound("a fix refers to a device that does not exist") from exc
            return ids
        try:
            c.execute(s.fixes.insert(), [dict(zip(_FIX_ROW, r, strict=True)) for r in rows])
        except IntegrityError as exc:  # the only constraint a fix can break: its device
            raise NotFound("a fix refers to a device that does not exist") from exc
        return ids

    def append_fixes(
        self, fixes: Sequence[Fix] | FixBatch, late: Sequence[bool] | None = None
    ) -> list[int]:
        """Append fixes in one transaction; committed (durable) when this returns."""
        if not len(fixes):
            return []
        with self._write() as c:
            return self._insert_fixes(c, fixes, late)

    def _stored(self, r: Row[Any]) -> StoredFix:
        """A fix row with its position opened (DataKeyError if it cannot be)."""
        row_id, device_id = int(r.id), int(r.device_id)
        lat, lon, speed, heading = self._opened_position(row_id, device_id, r.fix_time, r.position)
        return StoredFix(
            row_id,
            Fix(
                device_id=device_id,
                fix_time=r.fix_time,
                lat=lat,
                lon=lon,
                accuracy_m=r.accuracy_m,
                speed_mps=speed,
                heading_deg=heading,
                battery_pct=r.battery_pct,
                valid=bool(r.valid),
                alarms=frozenset(a for a in r.alarms.split(",") if a),
                received_at=r.received_at,
            ),
            bool(r.late),
        )

    def fixes_for_device(
        self,
        device_id: int,
        limit: int = 100,
        before_id: int | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[StoredFix]:
        """A device's fixes, newest first; ``before_id`` (the last id seen) continues a page;
        ``since`` / ``until`` bound the fix times (both included)."""
        f = s.fixes
        q = select(f).where(f.c.device_id == device_id)
        if before_id is not None:
            q = q.where(f.c.id < before_id)
        if since is not None:
            q = q.where(f.c.fix_time >= since)
        if until is not None:
            q = q.where(f.c.fix_time <= until)
        with self._read() as c:
            rows = c.execute(q.order_by(f.c.id.desc()).limit(max(0, limit))).all()
        return [self._stored(r) for r in rows]

    def latest_fixes(self) -> dict[int, Fix]:
        """The newest live (not late) fix of every device, for rebuilding the engine."""
        f = s.fixes
        # One index seek per device on (device_id, fix_time): no scan of the whole log.
        newest = (
            select(f)
            .where(and_(f.c.device_id == bindparam("device"), f.c.late.is_(False)))
            .order_by(f.c.fix_time.desc(), f.c.id.desc())
            .limit(1)
        )
        out: dict[int, Fix] = {}
        with self._read() as c:
            for device in c.execute(select(s.devices.c.id)).scalars().all():
                r = c.execute(newest, {"device": device}).first()
                if r is not None:
                    out[int(device)] = self._stored(r).fix
        return out

    def fix_at_or_before(self, device_ids: Sequence[int], t: float, window_s: float) -> Fix | None:
        """The newest valid fix of these devices at or before ``t``, no older than the window."""
        if not device_ids:
            return None
        f = s.fixes
        with self._read() as c:
            r = c.execute(
                select(f)
                .where(
                    and_(
                        f.c.device_id.in_(list(device_ids)),
                        f.c.fix_time <= t,
                        f.c.fix_time >= t - window_s,
                        f.c.valid.is_(True),
                    )
                )
                .order_by(f.c.fix_time.desc(), f.c.id.desc())
                .limit(1)
            ).first()
        return None if r is None else self._stored(r).fix

    def count_fixes(self) -> int:
        """How many fixes are stored."""
        with self._read() as c:
            return int(c.execute(select(func.count()).select_from(s.fixes)).scalar_one())

    def purge_fixes(self, before: float) -> int:
        """Delete fixes whose fix time is before ``before``, except those under a legal hold."""
        f = s.fixes
        with self._write() as c:
            r = c.execute(f.delete().where(and_(f.c.fix_time < before, f.c.hold.is_(False))))
            return int(r.rowcount)

    def hold_fixes(self, device_ids: Sequence[int], t0: float, t1: float) -> int:
        """Put a legal hold on these devices' fixes with t0 <= fix time <= t1; return how many."""
        if not device_ids:
            return 0
        f = s.fixes
        with self._write() as c:
            r = c.execute(
                f.update()
                .where(
                    and_(
                        f.c.device_id.in_(list(device_ids)),
                        f.c.fix_time >= t0,
                        f.c.fix_time <= t1,
                    )
                )
                .values(hold=True)
            )
            return int(r.rowcount)

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
            return self._insert_events(c, events)

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
            _fits(s.incidents.c.kind, kind)
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

    def record_batch(
        self,
        fixes: Sequence[Fix] | FixBatch,
        late: Sequence[bool] | npt.NDArray[np.bool_],
        plans: Sequence[tuple[Event, str | None, str | None]],
        audits: Sequence[dict[str, Any]] = (),
    ) -> tuple[list[int], list[Event]]:
        """One transaction: fixes, new events, the incidents they open or join, and the
        audit records of the reads the batch's news will be shown in (live streams).

        ``plans`` pairs each event with its incident kind and priority. An event with a
        priority opens an incident of its kind or joins the open one; an event without
        (a zone exit, a step out of breach, the signal back) joins the open incident of
        its kind when there is one, so its timeline shows how it ended. ``audits`` hold
        the keyword arguments of :meth:`audit_append`, checked with :meth:`check_audit`.
        Returns the fixes' ids and the events that were new.
        """
        if not len(fixes) and not plans and not audits:
            return [], []
        for a in audits:
            self.check_audit(a)
        with self._write() as c:
            ids = self._insert_fixes(c, fixes, late)
            new = self._insert_events(c, [e for e, _, _ in plans])
            fresh = {e.id for e in new}
            grouped: list[tuple[Event, str, str | None]] = []
            for e, kind, priority in plans:
                if e.id in fresh and kind:
                    grouped.append((e, kind, priority))
                    fresh.discard(e.id)
            moved: list[int] = []
            if grouped:
                results = self._record_incidents(c, grouped)
                moved = [
                    r[0]
                    for r, (_, kind, _) in zip(results, grouped, strict=True)
                    if r is not None and kind == "sos"  # her SOS loop (docs/sos.md)
                ]
            for a in audits:
                self._audit_insert(c, **a)
        self._incidents_moved(moved)
        return ids, new

    def latest_tiers(self) -> dict[int, tuple[Tier, Tier, float]]:
        """Each order's live tier from its last live tier change: (tier, base tier, since)."""
        ev = s.events
        with self._read() as c:
            rows = c.execute(
                select(ev.c.order_id, ev.c.tier_from, ev.c.tier_to, ev.c.at)
                .where(
                    and_(
                        ev.c.kind == EventKind.TIER_CHANGED.value,
                        ev.c.late.is_(False),
                        ev.c.order_id.is_not(None),
                    )
                )
                .order_by(ev.c.at, ev.c.id)
            ).all()
        out: dict[int, tuple[Tier, Tier, float]] = {}
        for r in rows:
            tier = Tier(r.tier_to)
            base = Tier(r.tier_from) if tier == Tier.UNCERTAIN else tier
            if tier == Tier.UNCERTAIN and r.tier_from == Tier.UNCERTAIN and r.order_id in out:
                base = out[r.order_id][1]
            out[int(r.order_id)] = (tier, base, float(r.at))
        return out

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
        return [
            Event(
                id=r.id,
                kind=EventKind(r.kind),
                at=r.at,
                order_id=r.order_id,
                person_id=r.person_id,
                device_id=r.device_id,
                distance_m=r.distance_m,
                data=self._open_place(r.data, f"events {r.id}"),
            )
            for r in rows
        ]

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
        _fits(s.incident_entries.c.actor, actor)
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
        _fits(s.incident_entries.c.actor, actor)
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

    # -- users -------------------------------------------------------------------------

    def add_user(
        self,
        username: str,
        password_hash: str,
        role: str,
        person_id: int | None = None,
        at: float = 0.0,
    ) -> int:
        """Create a login; usernames are unique."""
        u = s.users
        if not username:
            raise Invalid("a user needs a username")
        _fits(u.c.username, username)
        _fits(u.c.password_hash, password_hash)
        _fits(u.c.role, role)
        with self._write() as c:
            if person_id is not None and (
                c.execute(select(s.people.c.id).where(s.people.c.id == person_id)).first() is None
            ):
                raise NotFound(f"person {person_id} does not exist")
            if c.execute(select(u.c.id).where(u.c.username == username)).first() is not None:
                raise Conflict(f"user {username!r} exists already")
            try:
                r = c.execute(
                    u.insert().values(
                        username=username,
                        password_hash=password_hash,
                        role=role,
                        person_id=person_id,
                        disabled=False,
                        created_at=at,
                    )
                )
            except IntegrityError as exc:  # a concurrent creation won the race
                raise Conflict(f"user {username!r} exists already") from exc
            return _new_id(r)

    @staticmethod
    def _user(r: Row[Any] | None) -> UserRecord | None:
        if r is None:
            return None
        return UserRecord(
            int(r.id),
            r.username,
            r.password_hash,
            r.role,
            None if r.person_id is None else int(r.person_id),
            bool(r.disabled),
        )

    def get_user_by_name(self, username: str) -> UserRecord | None:
        """A login by username."""
        with self._read() as c:
            return self._user(
                c.execute(select(s.users).where(s.users.c.username == username)).first()
            )

    def get_user(self, user_id: int) -> UserRecord | None:
        """A login by id."""
        with self._read() as c:
            return self._user(c.execute(select(s.users).where(s.users.c.id == user_id)).first())

    # -- audit -------------------------------------------------------------------------

    def audit_append(
        self,
        actor: str,
        role: str,
        action: str,
        subject: str,
        purpose: str,
        fields: Sequence[str] = (),
        *,
        at: float,
        request_id: str | None = None,
    ) -> int:
        """Append a hash-chained audit record once it is durably stored; return its id.

        Appends are serialised so the chain is linear. Appends made at the same time share
        one transaction (group commit): whoever takes the lock first commits every record
        waiting, and the others find theirs stored. Twenty open apps disclosing a position
        after one batch of fixes cost one or two commits, not twenty in front of the next
        batch.
        """
        _audit_fits(actor, role, action, subject, purpose, request_id)
        mine = _AuditAppend((actor, role, action, subject, purpose, tuple(fields)), at, request_id)
        with self._audit_queue:
            self._audit_pending.append(mine)
        with self._audit_lock:
            if not mine.done:
                with self._audit_queue:
                    batch, self._audit_pending = self._audit_pending, []
                try:
                    with self._write() as c:
                        c.info.pop(_SEEN, None)
                        for a in batch:
                            a.id = self._audit_insert(
                                c, *a.args[:5], a.args[5], at=a.at, request_id=a.request_id
                            )
                        self._check_own_tail(c, c.info.pop(_SEEN))
                        written = c.info.pop(_WRITTEN)
                    self._audit_written = written
                except BaseException as exc:
                    for a in batch:
                        a.id, a.error = None, exc
                    raise
                finally:
                    for a in batch:
                        a.done = True
        if mine.error is not None:
            raise mine.error
        assert mine.id is not None
        return mine.id

    def _check_own_tail(self, c: Connection, head: tuple[int, str] | None) -> None:
        """Log (critical) when the newest record this process wrote is gone or changed:
        the log was cut or rewritten since, perhaps before an anchor could name it.
        ``head``: the chain's head this transaction found (usually that very record, and
        then nothing more is read)."""
        mine = self._audit_written
        if mine is None or head == mine:
            return
        stored = c.execute(select(s.audit.c.hash).where(s.audit.c.id == mine[0])).scalar()
        if stored == mine[1]:
            return
        if stored is None:
            base = self._audit_base(c)
            if base is not None and mine[0] <= base[0]:
                return  # purged by retention
        self.audit_tail_losses += 1
        log.critical(
            "audit record %d (hash %s) written by this process is %s: the audit log was "
            "cut or rewritten since; run bangpae audit verify",
            mine[0],
            mine[1],
            "gone" if stored is None else "changed",
        )

    def check_audit(self, record: dict[str, Any]) -> None:
        """Invalid (TypeError for a wrong set of keys) unless :meth:`audit_append` would
        take this record as its keyword arguments."""
        a = _signature(type(self).audit_append).bind(self, **record).arguments
        _audit_fits(
            a["actor"], a["role"], a["action"], a["subject"], a["purpose"], a.get("request_id")
        )

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
    ) -> int:
        """Append inside the caller's write transaction (the chain stays linear: SQLite
        has one writer at a time, and on PostgreSQL the audit lock is taken here)."""
        a = s.audit
        _audit_fits(actor, role, action, subject, purpose, request_id)
        names = [str(x) for x in fields]
        self._pg_lock(c, _LOCK_AUDIT)
        head = c.execute(select(a.c.id, a.c.hash, a.c.mac).order_by(a.c.id.desc()).limit(1)).first()
        if self.audit_key is None and head is not None and head.mac is not None:
            raise AuditKeyMissing(
                "the audit chain is keyed and this process has no audit key "
                "(BANGPAE_AUDIT_KEY, or audit-key in the data dir)"
            )
        new_id = 1 if head is None else int(head.id) + 1
        prev = GENESIS if head is None else str(head.hash)
        # Hash exactly what the database will give back (a float time, a list of names).
        record = {
            "id": new_id,
            "at": float(at),
            "actor": actor,
            "role": role,
            "action": action,
            "subject": subject,
            "purpose": purpose,
            "fields": names,
            "request_id": request_id,
        }
        digest = audit_hash(prev, record)
        # for audit_append's check of its own tail: the head the transaction found first,
        # and the record written last (on the connection: other threads write too)
        c.info.setdefault(_SEEN, None if head is None else (int(head.id), str(head.hash)))
        c.info[_WRITTEN] = (new_id, digest)
        c.execute(
            a.insert().values(
                **{**record, "fields": json.dumps(names)},
                prev_hash=prev,
                hash=digest,
                mac=None if self.audit_key is None else audit_mac(self.audit_key, digest),
            )
        )
        return new_id

    _audit_dict = staticmethod(audit_row)

    def audit_records(
        self,
        actor: str | None = None,
        subject: str | None = None,
        since_id: int | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Audit records in chain order, filtered by actor, subject and ``id > since_id``."""
        a = s.audit
        q = select(a)
        if actor:
            q = q.where(a.c.actor == actor)
        if subject:
            q = q.where(a.c.subject == subject)
        if since_id is not None:
            q = q.where(a.c.id > since_id)
        with self._read() as c:
            rows = c.execute(q.order_by(a.c.id).limit(max(0, limit))).all()
        return [self._audit_dict(r) for r in rows]

    def audit_about(
        self,
        subjects: Sequence[str],
        person_id: int | None = None,
        exclude_actor: str | None = None,
        action: str | None = None,
        limit: int = 200,
    ) -> list[dict[str, Any]]:
        """Audit records whose subject is one of ``subjects`` (exactly, or as its first part
        before a ``/``), or names ``person:<person_id>`` last; newest first."""
        a = s.audit
        clauses = [a.c.subject.in_(list(subjects))]
        clauses += [a.c.subject.like(f"{x}/%", escape="\\") for x in subjects]
        if person_id is not None:
            clauses.append(a.c.subject.like(f"%/person:{int(person_id)}", escape="\\"))
        q = select(a).where(or_(*clauses))
        if exclude_actor is not None:
            q = q.where(a.c.actor != exclude_actor)
        if action is not None:
            q = q.where(a.c.action == action)
        with self._read() as c:
            rows = c.execute(q.order_by(a.c.id.desc()).limit(max(0, limit))).all()
        return [self._audit_dict(r) for r in rows]

    def audit_head(self) -> tuple[int, str] | None:
        """The id and hash of the newest audit record (to anchor outside the database)."""
        head = self.audit_tip()
        return None if head is None else (head[0], head[1])

    def audit_tip(self) -> tuple[int, str, bool] | None:
        """The id and hash of the newest audit record, and whether it carries a MAC."""
        a = s.audit
        with self._read() as c:
            r = c.execute(
                select(a.c.id, a.c.hash, a.c.mac).order_by(a.c.id.desc()).limit(1)
            ).first()
        return None if r is None else (int(r.id), str(r.hash), r.mac is not None)

    def check_audit_key(self) -> None:
        """AuditKeyMissing unless this store's key (or its lack) fits the chain: a keyed
        chain needs the key, and the key must confirm the newest keyed record's MAC (a
        second host with a key of its own would otherwise write records nobody can
        verify). Reads one record."""
        a = s.audit
        with self._read() as c:
            r = c.execute(
                select(a.c.id, a.c.hash, a.c.mac)
                .where(a.c.mac.is_not(None))
                .order_by(a.c.id.desc())
                .limit(1)
            ).first()
        if r is None:
            return
        if self.audit_key is None:
            raise AuditKeyMissing(
                f"the audit chain is keyed (record {r.id}) and there is no audit key here: "
                "copy the audit-key file of the first host, or set BANGPAE_AUDIT_KEY"
            )
        if not hmac.compare_digest(str(r.mac), audit_mac(self.audit_key, str(r.hash))):
            raise AuditKeyMissing(
                f"the audit key does not confirm record {r.id}, the newest keyed one: it is "
                "not the key the chain was written with, or the record was forged (run "
                "bangpae audit verify)"
            )

    def audit_verify(
        self,
        anchor: tuple[int, str] | None = None,
        *,
        anchors: Sequence[AnchorMark] = (),
        audit_days: float | None = None,
        now: float | None = None,
    ) -> AuditReport:
        """Walk the chain; any edited, deleted, inserted or reordered record breaks it.

        The rules are those of docs/audit-log.md. Each record must link to the one before
        and match its hash; from the first record with a MAC on, every record must carry
        a MAC that the audit key confirms (the records before it are the legacy prefix,
        written before the key existed). After a purge the chain starts where the newest
        purge checkpoint says; each checkpoint must be a record like any other, cut no
        record younger than ``audit_days`` before its time, and have a time consistent
        with the records around it (and not after ``now``).

        ``anchors`` are the anchored heads, oldest first: each one still in the chain
        must match its record (and the record must still carry its MAC if it did); the
        newest must still be in the chain (a tail cut short shows); one naming a
        record purged since is accepted only if no purged record was written after the
        cut-off of the purge. ``anchor``: one more anchored head, taken as the newest.
        """
        marks = list(anchors)
        if anchor is not None:
            marks.append(AnchorMark(int(anchor[0]), str(anchor[1])))
        key = self.audit_key
        prev, expected, n, legacy = GENESIS, 1, 0, 0
        last_keyed: int | None = None
        prev_at: float | None = None
        checkpoints: list[tuple[int, int, float]] = []  # (id, through, cut-off)
        after_checkpoint: tuple[int, float] | None = None
        with self._read() as c:
            base = self._audit_base(c)
            cut = 0 if base is None else base[0]
            if base is not None:  # records up to the checkpoint were purged on purpose
                expected, prev = base[0] + 1, base[1]

            def bad(rid: int | None, reason: str) -> AuditReport:
                return AuditReport(False, n, rid, reason, legacy, cut or None, len(marks))

            if marks and marks[-1].id < cut:
                m = marks[-1]
                return bad(
                    m.id,
                    f"the anchored record {m.id}{_at(m)} was purged (the chain now starts "
                    f"after {cut}); anchor the head again after a purge",
                )
            pending = [m for m in marks if m.id > cut]
            k = 0
            rows = c.execute(select(s.audit).order_by(s.audit.c.id)).yield_per(1000)
            for r in rows:
                n += 1
                rid = int(r.id)
                if rid != expected:
                    if rid > expected:
                        return bad(rid, f"record {expected} is missing (next is {rid})")
                    return bad(rid, f"record {rid} is out of place (expected {expected})")
                if r.prev_hash != prev:
                    return bad(rid, "link to the previous record broken")
                if audit_hash(prev, self._audit_dict(r)) != r.hash:
                    return bad(rid, "record content does not match its hash")
                if r.mac is None:
                    if last_keyed is not None:
                        return bad(
                            rid,
                            f"record has no MAC but follows the keyed record {last_keyed}: "
                            "written without the audit key",
                        )
                    legacy += 1
                elif key is None:
                    return bad(rid, "record is keyed and there is no audit key to check it")
                elif not hmac.compare_digest(str(r.mac), audit_mac(key, str(r.hash))):
                    return bad(rid, "MAC does not match: forged or rewritten without the audit key")
                else:
                    last_keyed = rid
                at = float(r.at)
                if after_checkpoint is not None and at < after_checkpoint[1] - CLOCK_SLACK_S:
                    cp = after_checkpoint[0]
                    return bad(cp, f"purge checkpoint is dated after the record {rid} after it")
                after_checkpoint = None
                if r.action == "purge" and r.subject == "audit":
                    problem = self._checkpoint_problem(
                        r, prev_at, checkpoints, audit_days, now, keyed=r.mac is not None
                    )
                    if problem is not None:
                        return bad(rid, f"purge checkpoint: {problem}")
                    after_checkpoint = (rid, at)
                while k < len(pending) and pending[k].id == rid:
                    m = pending[k]
                    if m.hash != r.hash:
                        return bad(rid, f"record differs from the anchored head{_at(m)}")
                    if m.keyed and r.mac is None:
                        return bad(rid, f"record had a MAC when anchored{_at(m)} and has none")
                    k += 1
                prev, expected, prev_at = r.hash, expected + 1, at
        if k < len(pending):
            m = pending[k]
            return bad(
                expected, f"chain ends at {expected - 1} before the anchored record {m.id}{_at(m)}"
            )
        for m in marks:
            if m.id > cut:
                break
            if m.id == cut and base is not None and m.hash != base[1]:
                return bad(m.id, f"the anchored record{_at(m)} differs from the purged one")
            for cp, through, before in checkpoints:
                if m.id < through and m.at is not None and m.at >= before + CLOCK_SLACK_S:
                    return bad(
                        cp,
                        f"purge checkpoint cut records up to {through}, but the anchor naming "
                        f"{m.id}{_at(m)} is later than its cut-off {_iso(before)}: records "
                        "after it were purged before their time",
                    )
        return AuditReport(True, n, None, "intact", legacy, cut or None, len(marks))

    @staticmethod
    def _checkpoint_problem(
        r: Row[Any],
        prev_at: float | None,
        checkpoints: list[tuple[int, int, float]],
        audit_days: float | None,
        now: float | None,
        *,
        keyed: bool,
    ) -> str | None:
        """Why a purge checkpoint (already checked as a record) cannot be right, if it
        cannot; a good one is added to ``checkpoints``.

        A keyed checkpoint's cut-off is checked against the retention it records, the one
        in force when it was written (the key vouches for it; a retention lengthened
        since must not make past purges look early); any other against ``audit_days``.
        """
        notes = {}
        for item in json.loads(r.fields):
            name, sep, value = str(item).partition("=")
            if sep:
                notes[name] = value
        through_s, before = notes.get("through_id", ""), _iso_time(notes.get("before", ""))
        if not through_s.isdigit() or before is None:
            return "no cut-off or last record purged in its fields"
        through, at = int(through_s), float(r.at)
        if keyed and notes.get("days"):
            try:
                audit_days = float(notes["days"])
            except ValueError:
                return f"retention days {notes['days']!r} unreadable"
        if through >= int(r.id):
            return f"claims to have purged records up to {through}, at or after itself"
        if checkpoints and through < checkpoints[-1][1]:
            return f"cuts less ({through}) than the checkpoint {checkpoints[-1][0]} before it"
        if audit_days is not None and before > at - audit_days * 86400 + 1e-3:
            return (
                f"cut-off {_iso(before)} is later than the retention of {audit_days:g} days "
                f"allows at its time {_iso(at)}"
            )
        if prev_at is not None and at < prev_at - CLOCK_SLACK_S:
            return f"dated {_iso(at)}, before the record ahead of it ({_iso(prev_at)})"
        if now is not None and at > now + CLOCK_SLACK_S:
            return f"dated {_iso(at)}, in the future"
        checkpoints.append((int(r.id), through, before))
        return None


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _at(m: AnchorMark) -> str:
    return f" ({m.where})" if m.where else ""
