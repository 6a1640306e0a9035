"""Store methods for the register: people, their devices (with the credentials the
listeners check) and protective orders.

A mixin of :class:`~bangpae.adapters.store.store.Store`: every method runs in its own
transaction and has committed when it returns. An order's zones and curfews are sealed
at rest (see ``sealed``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Row, or_, select, update
from sqlalchemy.exc import IntegrityError

from bangpae.adapters.store import schema as s
from bangpae.adapters.store.base import StoreBase, bound_list, fits, new_id, one_of
from bangpae.domain.errors import Conflict, Invalid, NotFound
from bangpae.domain.model import (
    Device,
    DeviceCredential,
    DeviceKind,
    Order,
    Person,
    PersonKind,
    WeeklyWindow,
    Zone,
)

_ORDERS_BY_ID = {
    name: select(s.orders).where(clause) for name, clause in one_of(s.orders.c.id, "ids").items()
}


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


_CREDENTIAL = (
    s.devices.c.id,
    s.devices.c.identifier,
    s.devices.c.secret_hash,
    s.devices.c.lenient_crc,
    s.devices.c.created_at,
)


def _credential(r: Row[Any, Any, Any, Any, Any]) -> DeviceCredential:  # _CREDENTIAL's columns
    return (int(r[0]), str(r[1]), r[2], bool(r[3]), float(r[4] or 0.0))


class RegistryStore(StoreBase):
    """People, devices and orders."""

    def add_person(self, kind: str, name: str, at: float = 0.0) -> int:
        """Create a person; ``kind`` is offender, victim or officer."""
        if kind not in {k.value for k in PersonKind}:
            raise Invalid(f"unknown person kind {kind!r}")
        fits(s.people.c.name, name)
        with self._write() as c:
            r = c.execute(s.people.insert().values(kind=kind, name=name, created_at=at))
            return new_id(r)

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
        fits(s.devices.c.identifier, identifier)
        fits(s.devices.c.protocol, protocol)
        fits(s.devices.c.secret_hash, secret_hash)
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
            return new_id(r)

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
        fits(s.devices.c.secret_hash, secret_hash)
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
            return new_id(r)

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
