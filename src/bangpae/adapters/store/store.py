"""The store: one SQLAlchemy code path for SQLite (WAL, synchronous=FULL) and PostgreSQL.

Every public method runs in its own transaction and has committed when it
returns: a caller that acknowledges after a call returns acknowledges only
what is on disk.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, and_, create_engine, event, func, or_, select, text
from sqlalchemy.exc import IntegrityError

from bangpae.adapters.store import schema as s
from bangpae.adapters.store.errors import Conflict, Invalid, NotFound
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

FINAL = ("resolved", "false_alarm")
# action -> (statuses it may follow, status it leads to)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "acknowledge": (("open",), "acknowledged"),
    "dispatch": (("open", "acknowledged"), "dispatched"),
    "on_scene": (("dispatched",), "on_scene"),
    "resolve": (("open", "acknowledged", "dispatched", "on_scene"), "resolved"),
    "false_alarm": (("open", "acknowledged", "dispatched", "on_scene"), "false_alarm"),
}
GENESIS = "0" * 64


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


@dataclass(frozen=True, slots=True)
class AuditReport:
    """The outcome of checking the audit hash chain."""

    ok: bool
    records: int
    first_bad_id: int | None
    reason: str


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


class Store:
    """Durable state behind one database URL (``sqlite:///path`` or ``postgresql+psycopg://``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = create_engine(url, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._audit_lock = threading.Lock()

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def close(self) -> None:
        """Release connections."""
        self.engine.dispose()

    # -- people, devices, orders -------------------------------------------------------

    def add_person(self, kind: str, name: str, at: float = 0.0) -> int:
        """Create a person; ``kind`` is offender, victim or officer."""
        PersonKind(kind)
        with self.engine.begin() as c:
            return int(
                c.execute(
                    s.people.insert().values(kind=kind, name=name, created_at=at)
                ).inserted_primary_key[0]
            )

    def get_person(self, person_id: int) -> Person | None:
        """A person by id."""
        with self.engine.connect() as c:
            r = c.execute(select(s.people).where(s.people.c.id == person_id)).first()
        return None if r is None else Person(r.id, PersonKind(r.kind), r.name)

    def add_device(
        self,
        identifier: str,
        kind: str,
        protocol: str,
        person_id: int,
        secret_hash: str | None = None,
        at: float = 0.0,
    ) -> int:
        """Register a device for a person; identifiers are unique."""
        DeviceKind(kind)
        with self.engine.begin() as c:
            if c.execute(select(s.people.c.id).where(s.people.c.id == person_id)).first() is None:
                raise NotFound(f"person {person_id} does not exist")
            try:
                r = c.execute(
                    s.devices.insert().values(
                        identifier=identifier,
                        kind=kind,
                        protocol=protocol,
                        person_id=person_id,
                        secret_hash=secret_hash,
                        created_at=at,
                    )
                )
            except IntegrityError as exc:
                raise Conflict(f"device {identifier!r} exists already") from exc
            return int(r.inserted_primary_key[0])

    def get_device(self, ref: int | str) -> Device | None:
        """A device by id, or by identifier (a string is tried as identifier first)."""
        with self.engine.connect() as c:
            r = None
            if isinstance(ref, str):
                r = c.execute(select(s.devices).where(s.devices.c.identifier == ref)).first()
                if r is None and ref.isdigit():
                    ref = int(ref)
            if r is None and isinstance(ref, int):
                r = c.execute(select(s.devices).where(s.devices.c.id == ref)).first()
        if r is None:
            return None
        return Device(r.id, r.identifier, DeviceKind(r.kind), r.protocol, r.person_id)

    def device_secret_hash(self, device_id: int) -> str | None:
        """The stored hash of a device's key, if it has one."""
        with self.engine.connect() as c:
            return c.execute(
                select(s.devices.c.secret_hash).where(s.devices.c.id == device_id)
            ).scalar()

    def device_ids_of_person(self, person_id: int) -> list[int]:
        """Ids of the devices bound to a person."""
        with self.engine.connect() as c:
            return [
                int(x)
                for x in c.execute(
                    select(s.devices.c.id).where(s.devices.c.person_id == person_id)
                ).scalars()
            ]

    def add_order(self, order: Order, at: float = 0.0) -> int:
        """Create a protective order (``order.id`` is ignored)."""
        with self.engine.begin() as c:
            kinds = dict(
                c.execute(
                    select(s.people.c.id, s.people.c.kind).where(
                        s.people.c.id.in_([order.offender_id, order.victim_id])
                    )
                ).all()
            )
            if kinds.get(order.offender_id) != "offender":
                raise Invalid(f"person {order.offender_id} is not an offender")
            if kinds.get(order.victim_id) != "victim":
                raise Invalid(f"person {order.victim_id} is not a victim")
            r = c.execute(
                s.orders.insert().values(
                    offender_id=order.offender_id,
                    victim_id=order.victim_id,
                    notify_radius_m=order.notify_radius_m,
                    reveal_radius_m=order.reveal_radius_m,
                    keep_away_m=order.keep_away_m,
                    hysteresis_m=order.hysteresis_m,
                    zones=[_zone_to_json(z) for z in order.zones],
                    curfews=[_zone_to_json(z) for z in order.curfews],
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
            return int(r.inserted_primary_key[0])

    @staticmethod
    def _order(r: Any) -> Order:
        return Order(
            id=r.id,
            offender_id=r.offender_id,
            victim_id=r.victim_id,
            notify_radius_m=r.notify_radius_m,
            reveal_radius_m=r.reveal_radius_m,
            keep_away_m=r.keep_away_m,
            hysteresis_m=r.hysteresis_m,
            zones=tuple(_zone_from_json(z) for z in r.zones),
            curfews=tuple(_zone_from_json(z) for z in r.curfews),
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
        with self.engine.connect() as c:
            r = c.execute(select(s.orders).where(s.orders.c.id == order_id)).first()
        return None if r is None else self._order(r)

    def orders_for_person(self, person_id: int) -> list[Order]:
        """Orders in which a person is the offender or the victim."""
        with self.engine.connect() as c:
            rows = c.execute(
                select(s.orders)
                .where(or_(s.orders.c.offender_id == person_id, s.orders.c.victim_id == person_id))
                .order_by(s.orders.c.id)
            ).all()
        return [self._order(r) for r in rows]

    def load_all(self) -> tuple[list[Person], list[Device], list[Order]]:
        """Everyone, every device and every order: what the engine needs to start."""
        with self.engine.connect() as c:
            people = [Person(r.id, PersonKind(r.kind), r.name) for r in c.execute(select(s.people))]
            devices = [
                Device(r.id, r.identifier, DeviceKind(r.kind), r.protocol, r.person_id)
                for r in c.execute(select(s.devices))
            ]
            orders = [self._order(r) for r in c.execute(select(s.orders))]
        return people, devices, orders

    # -- fixes -------------------------------------------------------------------------

    @staticmethod
    def _fix_row(f: Fix, late: bool) -> dict[str, Any]:
        return {
            "device_id": f.device_id,
            "fix_time": f.fix_time,
            "received_at": f.received_at if f.received_at is not None else f.fix_time,
            "lat": f.lat,
            "lon": f.lon,
            "accuracy_m": f.accuracy_m,
            "speed_mps": f.speed_mps,
            "heading_deg": f.heading_deg,
            "battery_pct": f.battery_pct,
            "valid": f.valid,
            "alarms": ",".join(sorted(f.alarms)),
            "late": late,
            "hold": False,
        }

    def _insert_fixes(self, c: Connection, fixes: Sequence[Fix], late: Sequence[bool]) -> list[int]:
        if not fixes:
            return []
        rows = [self._fix_row(f, bool(x)) for f, x in zip(fixes, late, strict=True)]
        stmt = s.fixes.insert().returning(s.fixes.c.id, sort_by_parameter_order=True)
        return [int(x) for x in c.execute(stmt, rows).scalars()]

    def append_fixes(self, fixes: Sequence[Fix], late: Sequence[bool] | None = None) -> list[int]:
        """Append fixes in one transaction; committed (durable) when this returns."""
        with self.engine.begin() as c:
            return self._insert_fixes(c, fixes, late or [False] * len(fixes))

    def append_fix_columns(
        self, device_id: Any, fix_time: Any, lat: Any, lon: Any, accuracy: Any, received_at: Any
    ) -> None:
        """Bulk-append valid fixes given as numpy columns (NaN accuracy: unknown)."""
        acc = np.asarray(accuracy, dtype=np.float64)
        rows = list(
            zip(
                np.asarray(device_id).tolist(),
                np.asarray(fix_time).tolist(),
                np.asarray(received_at).tolist(),
                np.asarray(lat).tolist(),
                np.asarray(lon).tolist(),
                np.where(np.isnan(acc), None, acc).tolist(),
                strict=True,
            )
        )
        sql = (
            "INSERT INTO fixes (device_id, fix_time, received_at, lat, lon, accuracy_m, "
            "valid, alarms, late, hold) VALUES (%s, %s, %s, %s, %s, %s, TRUE, '', FALSE, FALSE)"
        )
        with self.engine.begin() as c:
            raw = c.connection.dbapi_connection
            assert raw is not None
            cur = raw.cursor()
            if self.dialect == "sqlite":
                cur.executemany(
                    sql.replace("%s", "?").replace("TRUE", "1").replace("FALSE", "0"), rows
                )
            else:
                cur.executemany(sql, rows)
            cur.close()

    @staticmethod
    def _stored(r: Any) -> StoredFix:
        return StoredFix(
            r.id,
            Fix(
                device_id=r.device_id,
                fix_time=r.fix_time,
                lat=r.lat,
                lon=r.lon,
                accuracy_m=r.accuracy_m,
                speed_mps=r.speed_mps,
                heading_deg=r.heading_deg,
                battery_pct=r.battery_pct,
                valid=bool(r.valid),
                alarms=frozenset(a for a in r.alarms.split(",") if a),
                received_at=r.received_at,
            ),
            bool(r.late),
        )

    def fixes_for_device(
        self, device_id: int, limit: int = 100, before_id: int | None = None
    ) -> list[StoredFix]:
        """A device's fixes, newest first; ``before_id`` continues from a cursor."""
        q = select(s.fixes).where(s.fixes.c.device_id == device_id)
        if before_id is not None:
            q = q.where(s.fixes.c.id < before_id)
        with self.engine.connect() as c:
            rows = c.execute(q.order_by(s.fixes.c.id.desc()).limit(limit)).all()
        return [self._stored(r) for r in rows]

    def latest_fixes(self) -> dict[int, Fix]:
        """The newest live (not late) fix of every device, for rebuilding the engine."""
        newest = (
            select(func.max(s.fixes.c.id).label("id"))
            .where(s.fixes.c.late.is_(False))
            .group_by(s.fixes.c.device_id)
            .subquery()
        )
        with self.engine.connect() as c:
            rows = c.execute(select(s.fixes).join(newest, s.fixes.c.id == newest.c.id)).all()
        return {r.device_id: self._stored(r).fix for r in rows}

    def fix_at_or_before(self, device_ids: Sequence[int], t: float, window_s: float) -> Fix | None:
        """The newest valid fix of these devices at or before ``t``, within the window."""
        if not device_ids:
            return None
        with self.engine.connect() as c:
            r = c.execute(
                select(s.fixes)
                .where(
                    and_(
                        s.fixes.c.device_id.in_(list(device_ids)),
                        s.fixes.c.fix_time <= t,
                        s.fixes.c.fix_time >= t - window_s,
                        s.fixes.c.valid.is_(True),
                    )
                )
                .order_by(s.fixes.c.fix_time.desc())
                .limit(1)
            ).first()
        return None if r is None else self._stored(r).fix

    def count_fixes(self) -> int:
        """How many fixes are stored."""
        with self.engine.connect() as c:
            return int(c.execute(select(func.count()).select_from(s.fixes)).scalar_one())

    def purge_fixes(self, before: float) -> int:
        """Delete fixes older than ``before``, except those under a legal hold."""
        with self.engine.begin() as c:
            r = c.execute(
                s.fixes.delete().where(and_(s.fixes.c.fix_time < before, s.fixes.c.hold.is_(False)))
            )
            return int(r.rowcount)

    def hold_fixes(self, device_ids: Sequence[int], t0: float, t1: float) -> int:
        """Put a legal hold on these devices' fixes between t0 and t1."""
        with self.engine.begin() as c:
            r = c.execute(
                s.fixes.update()
                .where(
                    and_(
                        s.fixes.c.device_id.in_(list(device_ids)),
                        s.fixes.c.fix_time >= t0,
                        s.fixes.c.fix_time <= t1,
                    )
                )
                .values(hold=True)
            )
            return int(r.rowcount)

    # -- events and incidents ----------------------------------------------------------

    @staticmethod
    def _event_row(e: Event) -> dict[str, Any]:
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
            "late": e.late,
            "data": dict(e.data),
        }

    def _insert_events(self, c: Connection, events: Sequence[Event]) -> list[Event]:
        if not events:
            return []
        unique = list({e.id: e for e in events}.values())
        have = set(
            c.execute(
                select(s.events.c.id).where(s.events.c.id.in_([e.id for e in unique]))
            ).scalars()
        )
        new = [e for e in unique if e.id not in have]
        if new:
            c.execute(s.events.insert(), [self._event_row(e) for e in new])
        return new

    def add_events(self, events: Sequence[Event]) -> list[Event]:
        """Insert events, ignoring ids already stored; return the new ones."""
        with self.engine.begin() as c:
            return self._insert_events(c, events)

    def _record_incident(
        self, c: Connection, kind: str, priority: str, e: Event
    ) -> tuple[int, bool]:
        i = s.incidents
        scope = (
            (i.c.order_id == e.order_id)
            if e.order_id is not None
            else and_(i.c.order_id.is_(None), i.c.person_id == e.person_id)
        )
        row = c.execute(
            select(i.c.id).where(and_(scope, i.c.kind == kind, i.c.status.not_in(FINAL))).limit(1)
        ).first()
        created = row is None
        if created:
            iid = int(
                c.execute(
                    i.insert().values(
                        kind=kind,
                        priority=priority,
                        status="open",
                        order_id=e.order_id,
                        person_id=e.person_id,
                        opened_at=e.at,
                        updated_at=e.at,
                        late=e.late,
                    )
                ).inserted_primary_key[0]
            )
        else:
            iid = int(row.id)
            c.execute(i.update().where(i.c.id == iid).values(updated_at=e.at))
        seen = c.execute(
            select(s.incident_entries.c.id).where(
                and_(s.incident_entries.c.incident_id == iid, s.incident_entries.c.event_id == e.id)
            )
        ).first()
        if seen is None:
            c.execute(
                s.incident_entries.insert().values(
                    incident_id=iid,
                    at=e.at,
                    action="event",
                    actor="system",
                    note=e.kind.value,
                    event_id=e.id,
                    data=self._event_row(e),
                )
            )
        return iid, created

    def record_incident(self, kind: str, priority: str, event: Event) -> tuple[int, bool]:
        """Join the open incident of this kind for the event's order (or person), or open one."""
        with self.engine.begin() as c:
            return self._record_incident(c, kind, priority, event)

    def record_batch(
        self,
        fixes: Sequence[Fix],
        late: Sequence[bool],
        plans: Sequence[tuple[Event, str | None, str | None]],
    ) -> tuple[list[int], list[Event]]:
        """One transaction: fixes, new events, and the incidents they open or join.

        ``plans`` pairs each event with its incident kind and priority (None: no incident).
        Returns the fixes' ids and the events that were new.
        """
        with self.engine.begin() as c:
            ids = self._insert_fixes(c, fixes, late)
            new = self._insert_events(c, [e for e, _, _ in plans])
            fresh = {e.id for e in new}
            for e, kind, priority in plans:
                if e.id in fresh and kind and priority:
                    self._record_incident(c, kind, priority, e)
                    fresh.discard(e.id)
            return ids, new

    def latest_tiers(self) -> dict[int, tuple[Tier, Tier, float]]:
        """Each order's live tier from its last live tier change: (tier, base tier, since)."""
        ev = s.events
        with self.engine.connect() as c:
            rows = c.execute(
                select(ev.c.order_id, ev.c.tier_from, ev.c.tier_to, ev.c.at)
                .where(and_(ev.c.kind == EventKind.TIER_CHANGED.value, ev.c.late.is_(False)))
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

    def _incident(self, c: Connection, r: Any, timeline: bool) -> IncidentRecord:
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
                    "data": x.data,
                }
                for x in c.execute(select(e).where(e.c.incident_id == r.id).order_by(e.c.id))
            )
        return IncidentRecord(
            r.id,
            r.kind,
            r.priority,
            r.status,
            r.order_id,
            r.person_id,
            r.opened_at,
            entries,
            bool(r.late),
        )

    def incidents(self, status: str | None = None, limit: int = 200) -> list[IncidentRecord]:
        """Incidents, newest first; ``status=open`` means every status not yet final."""
        i = s.incidents
        q = select(i)
        if status == "open":
            q = q.where(i.c.status.not_in(FINAL))
        elif status:
            q = q.where(i.c.status == status)
        with self.engine.connect() as c:
            return [
                self._incident(c, r, False)
                for r in c.execute(q.order_by(i.c.id.desc()).limit(limit))
            ]

    def get_incident(self, incident_id: int) -> IncidentRecord | None:
        """One incident with its timeline."""
        with self.engine.connect() as c:
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
        if action not in TRANSITIONS:
            raise Invalid(f"unknown action {action!r}")
        allowed, target = TRANSITIONS[action]
        i = s.incidents
        with self.engine.begin() as c:
            r = c.execute(select(i).where(i.c.id == incident_id)).first()
            if r is None:
                raise NotFound(f"incident {incident_id} does not exist")
            if r.status not in allowed:
                raise Invalid(f"cannot {action} an incident that is {r.status}")
            c.execute(i.update().where(i.c.id == incident_id).values(status=target, updated_at=at))
            c.execute(
                s.incident_entries.insert().values(
                    incident_id=incident_id,
                    at=at,
                    action=action,
                    actor=actor,
                    note=note,
                    event_id=None,
                    data=data or {},
                )
            )
            r = c.execute(select(i).where(i.c.id == incident_id)).one()
            return self._incident(c, r, True)

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
        with self.engine.begin() as c:
            try:
                return int(
                    c.execute(
                        s.users.insert().values(
                            username=username,
                            password_hash=password_hash,
                            role=role,
                            person_id=person_id,
                            disabled=False,
                            created_at=at,
                        )
                    ).inserted_primary_key[0]
                )
            except IntegrityError as exc:
                raise Conflict(f"user {username!r} exists already") from exc

    @staticmethod
    def _user(r: Any) -> UserRecord | None:
        if r is None:
            return None
        return UserRecord(r.id, r.username, r.password_hash, r.role, r.person_id, bool(r.disabled))

    def get_user_by_name(self, username: str) -> UserRecord | None:
        """A login by username."""
        with self.engine.connect() as c:
            return self._user(
                c.execute(select(s.users).where(s.users.c.username == username)).first()
            )

    def get_user(self, user_id: int) -> UserRecord | None:
        """A login by id."""
        with self.engine.connect() as c:
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
        """Append a hash-chained audit record; appends are serialised so the chain is linear."""
        a = s.audit
        with self._audit_lock, self.engine.begin() as c:
            if self.dialect == "postgresql":
                c.execute(text("SELECT pg_advisory_xact_lock(4242)"))
            else:
                c.execute(text("UPDATE audit SET id = id WHERE 0"))  # take SQLite's write lock now
            head = c.execute(select(a.c.id, a.c.hash).order_by(a.c.id.desc()).limit(1)).first()
            new_id = 1 if head is None else int(head.id) + 1
            prev = GENESIS if head is None else str(head.hash)
            record = {
                "id": new_id,
                "at": at,
                "actor": actor,
                "role": role,
                "action": action,
                "subject": subject,
                "purpose": purpose,
                "fields": list(fields),
                "request_id": request_id,
            }
            c.execute(
                a.insert().values(
                    id=new_id,
                    at=at,
                    actor=actor,
                    role=role,
                    action=action,
                    subject=subject,
                    purpose=purpose,
                    fields=json.dumps(list(fields)),
                    request_id=request_id,
                    prev_hash=prev,
                    hash=audit_hash(prev, record),
                )
            )
            return new_id

    @staticmethod
    def _audit_dict(r: Any) -> dict[str, Any]:
        return {
            "id": r.id,
            "at": r.at,
            "actor": r.actor,
            "role": r.role,
            "action": r.action,
            "subject": r.subject,
            "purpose": r.purpose,
            "fields": json.loads(r.fields),
            "request_id": r.request_id,
        }

    def audit_records(
        self,
        actor: str | None = None,
        subject: str | None = None,
        since_id: int | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Audit records in chain order, filtered."""
        a = s.audit
        q = select(a)
        if actor:
            q = q.where(a.c.actor == actor)
        if subject:
            q = q.where(a.c.subject == subject)
        if since_id is not None:
            q = q.where(a.c.id > since_id)
        with self.engine.connect() as c:
            return [self._audit_dict(r) for r in c.execute(q.order_by(a.c.id).limit(limit))]

    def audit_head(self) -> tuple[int, str] | None:
        """The id and hash of the newest audit record."""
        a = s.audit
        with self.engine.connect() as c:
            r = c.execute(select(a.c.id, a.c.hash).order_by(a.c.id.desc()).limit(1)).first()
        return None if r is None else (int(r.id), str(r.hash))

    def audit_verify(self) -> AuditReport:
        """Walk the chain: any edited, deleted, inserted or reordered record breaks it."""
        prev, expected, n = GENESIS, 1, 0
        with self.engine.connect() as c:
            for r in c.execute(select(s.audit).order_by(s.audit.c.id)).yield_per(1000):
                n += 1
                if r.id != expected:
                    return AuditReport(
                        False, n, int(r.id), f"record {expected} is missing (next is {r.id})"
                    )
                if r.prev_hash != prev:
                    return AuditReport(False, n, int(r.id), "link to the previous record broken")
                record = self._audit_dict(r)
                if audit_hash(prev, record) != r.hash:
                    return AuditReport(
                        False, n, int(r.id), "record content does not match its hash"
                    )
                prev, expected = r.hash, expected + 1
        return AuditReport(True, n, None, "intact")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")  # an acknowledged fix survives power loss
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
