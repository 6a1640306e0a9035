"""Who the engine knows: people, devices and orders, their slots and the indexes between them.

Registration keeps live state: loading an order again updates its parameters, never its
tier. Lookups by id answer from the slots without touching any decision.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping

import numpy as np

from bangpae.domain import coarse
from bangpae.domain.health import HealthState
from bangpae.domain.model import Device, Fix, Order, Person, Tier
from bangpae.domain.zones import CompiledZone, ZoneState, compile_zone
from bangpae.engine.columns import (
    I64,
    NAN,
    DeviceColumns,
    OrderColumns,
    PersonColumns,
    grow,
)

REVEAL = int(Tier.REVEAL)
# The grid key of an engine built without one (tests, benchmarks): the server passes a
# key derived from its secret, so that the grid's lines are not known to anyone.
TEST_GRID_KEY = b"bangpae-test-grid"


class Registry:
    """People, devices and orders by slot, with the columns of their live state."""

    def __init__(self, grid_key: bytes = TEST_GRID_KEY) -> None:
        self.grid_key = grid_key
        self.persons = PersonColumns()
        self.devices = DeviceColumns()
        self.orders = OrderColumns()
        self._person_slot: dict[int, int] = {}
        self._device_slot = np.full(0, -1, dtype=np.int32)  # indexed by device id
        self._device_ids: list[int] = []
        self._order_slot: dict[int, int] = {}
        self._orders_of_person: list[list[int]] = []
        self._csr: tuple[I64, I64] | None = None
        self._devices_csr: tuple[I64, I64] | None = None  # device slots by person slot
        self._late: list[Fix] = []
        self._person_ids: list[int] = []
        self._health: dict[int, HealthState] = {}  # only devices that ever reported alarms
        # Orders with zones or curfews: their compiled geometry, time zone and state.
        self.zoned: dict[int, tuple[list[CompiledZone], list[CompiledZone], str]] = {}
        self.zone_state: dict[int, ZoneState] = {}
        self.zoned_by_offender: dict[int, list[int]] = {}

    # -- registration -------------------------------------------------------------------

    def load(
        self, people: Iterable[Person], devices: Iterable[Device], orders: Iterable[Order]
    ) -> None:
        """Register (or update) people, devices and orders; existing state is kept."""
        for person in people:
            self._person(person.id)
        for device in devices:
            self.add_device(device)
        for order in orders:
            self.add_order(order)

    def _person(self, person_id: int) -> int:
        slot = self._person_slot.get(person_id)
        if slot is None:
            slot = self.persons.add()
            self._person_slot[person_id] = slot
            self._orders_of_person.append([])
            # The orders-by-person index covers every slot: a new person (an officer going
            # on duty) reporting in the next batch would otherwise index past its end.
            self._csr = None
        return slot

    def add_device(self, device: Device) -> None:
        """Register a device and bind it to its person."""
        if device.id < 0:
            raise ValueError("device ids are non-negative")
        if device.id >= len(self._device_slot):
            self._device_slot = grow(self._device_slot, device.id + 1, -1)  # type: ignore[assignment]
        slot = int(self._device_slot[device.id])
        if slot < 0:
            slot = self.devices.add()
            self._device_slot[device.id] = slot
            self._device_ids.append(device.id)
        person = self._person(device.person_id)
        if self.devices.person[slot] != person:
            self.devices.person[slot] = person
            self._devices_csr = None

    def add_order(self, order: Order) -> None:
        """Register an order, or update its parameters while keeping its live tier."""
        o = self.orders
        slot = self._order_slot.get(order.id)
        if slot is None:
            slot = o.add()
            self._order_slot[order.id] = slot
            off, vic = self._person(order.offender_id), self._person(order.victim_id)
            o.off[slot], o.vic[slot] = off, vic
            self.persons.victim[vic] = True
            o.gy[slot], o.gx[slot] = coarse.grid_offset(self.grid_key, order.offender_id)
            self._orders_of_person[off].append(slot)
            self._orders_of_person[vic].append(slot)
            self._csr = None
        o.id[slot] = order.id
        o.notify[slot] = order.notify_radius_m
        o.reveal[slot] = order.reveal_radius_m
        o.keep[slot] = order.keep_away_m
        o.hyst[slot] = order.hysteresis_m
        o.stale[slot] = order.stale_after_s
        o.valid_from[slot] = -math.inf if order.valid_from is None else order.valid_from
        o.valid_until[slot] = math.inf if order.valid_until is None else order.valid_until
        off_slot = int(o.off[slot])
        listed = self.zoned_by_offender.setdefault(off_slot, [])
        if order.zones or order.curfews:
            self.zoned[slot] = (
                [compile_zone(z) for z in order.zones],
                [compile_zone(z) for z in order.curfews],
                order.timezone,
            )
            if slot not in listed:
                listed.append(slot)
        else:
            self.zoned.pop(slot, None)
            if slot in listed:
                listed.remove(slot)
        # The offender's devices registered so far take the order's tighter health timers
        # (devices bound to him later keep theirs until the order is loaded again).
        d = self.devices
        for ds in self._devices_of(off_slot):
            d.offline_after[ds] = min(float(d.offline_after[ds]), order.offline_after_s)
            d.no_fix_after[ds] = min(float(d.no_fix_after[ds]), order.no_fix_after_s)

    def knows_device(self, device_id: int) -> bool:
        """Whether a device is registered."""
        return 0 <= device_id < len(self._device_slot) and self._device_slot[device_id] >= 0

    def _devices_of(self, person_slot: int) -> list[int]:
        """Slots of the devices bound to a person, in registration order."""
        if self._devices_csr is None:
            # Rebuilt only after a device is added or re-bound: a load adds every device
            # before any order, so each order then looks up its offender's devices alone.
            person = self.devices.person[: self.devices.n]
            by_person = np.argsort(person, kind="stable").astype(np.int64)
            start = np.zeros(self.persons.n + 1, dtype=np.int64)
            np.cumsum(np.bincount(person, minlength=self.persons.n), out=start[1:])
            self._devices_csr = (start, by_person)
        start, by_person = self._devices_csr
        if person_slot + 1 >= len(start):  # a person added since, with no device yet
            return []
        return by_person[start[person_slot] : start[person_slot + 1]].tolist()  # type: ignore[no-any-return]

    def _orders_csr(self) -> tuple[I64, I64]:
        """The order slots of each person slot ``p``: ``flat[start[p] : start[p + 1]]``."""
        if self._csr is None:
            counts = np.array([len(x) for x in self._orders_of_person], dtype=np.int64)
            start = np.zeros(len(counts) + 1, dtype=np.int64)
            np.cumsum(counts, out=start[1:])
            flat = np.array([s for x in self._orders_of_person for s in x], dtype=np.int64)
            self._csr = (start, flat)
        return self._csr

    def restore(
        self,
        latest: dict[int, Fix],
        tiers_by_order: dict[int, tuple[Tier, Tier, float]],
        shown_by_order: Mapping[int, Tier] | None = None,
    ) -> None:
        """Rebuild live state after a restart: latest fixes, each order's last tier and
        what she was last shown (her pursuit interval and her screen follow it; her view
        still discloses his position only by its own rule, docs/disclosure.md)."""
        for fix in sorted(latest.values(), key=lambda f: f.fix_time):
            if not self.knows_device(fix.device_id):
                continue
            ds = int(self._device_slot[fix.device_id])
            d = self.devices
            d.last_t[ds] = fix.fix_time
            d.last_msg[ds] = fix.received_at if fix.received_at is not None else fix.fix_time
            if fix.valid:
                d.lat[ds], d.lon[ds] = fix.lat, fix.lon
                d.acc[ds] = NAN if fix.accuracy_m is None else fix.accuracy_m
                d.last_valid[ds] = fix.fix_time
            self._set_person(int(d.person[ds]), fix, 0.0, 0.0)
        for order_id, (tier, base, since) in tiers_by_order.items():
            slot = self._order_slot.get(order_id)
            if slot is not None:
                self.orders.tier[slot], self.orders.base[slot] = int(tier), int(base)
                self.orders.since[slot] = since
        for order_id, shown in (shown_by_order or {}).items():
            slot = self._order_slot.get(order_id)
            if slot is not None:
                self.orders.shown[slot] = int(shown)

    def _set_person(self, p: int, fix: Fix, vx: float, vy: float) -> None:
        ps = self.persons
        ps.t[p], ps.valid[p], ps.device[p] = fix.fix_time, fix.valid, fix.device_id
        if fix.valid:
            ps.vt[p] = fix.fix_time
            ps.lat[p], ps.lon[p] = fix.lat, fix.lon
            ps.acc[p] = NAN if fix.accuracy_m is None else fix.accuracy_m
            ps.vx[p], ps.vy[p] = vx, vy
            ps.speed[p] = NAN if fix.speed_mps is None else fix.speed_mps
            ps.heading[p] = NAN if fix.heading_deg is None else fix.heading_deg

    # -- lookups ------------------------------------------------------------------------

    def person_id(self, slot: int) -> int:
        """The id of the person in a slot."""
        if len(self._person_ids) != self.persons.n:
            ids = [0] * self.persons.n
            for pid, s in self._person_slot.items():
                ids[s] = pid
            self._person_ids = ids
        return self._person_ids[slot]

    def device_id(self, slot: int) -> int:
        """The id of the device in a slot."""
        return self._device_ids[slot]

    def tier_of(self, order_id: int) -> Tier | None:
        """An order's live tier (None: unknown order), without building its whole view."""
        slot = self._order_slot.get(order_id)
        return None if slot is None else Tier(int(self.orders.tier[slot]))

    def shown_of(self, order_id: int) -> Tier | None:
        """What the protected person of an order is shown (None: unknown order)."""
        slot = self._order_slot.get(order_id)
        return None if slot is None else Tier(int(self.orders.shown[slot]))

    def parties(self, order_id: int) -> tuple[int, int] | None:
        """The person ids of an order's offender and victim (None: unknown order)."""
        slot = self._order_slot.get(order_id)
        if slot is None:
            return None
        return self.person_id(int(self.orders.off[slot])), self.person_id(
            int(self.orders.vic[slot])
        )

    def person_of_device(self, device_id: int) -> int | None:
        """The person a registered device is bound to (None: unknown device)."""
        if not self.knows_device(device_id):
            return None
        return self.person_id(int(self.devices.person[int(self._device_slot[device_id])]))

    def devices_of_person(self, person_id: int) -> list[int]:
        """Ids of the devices bound to a person, in registration order."""
        slot = self._person_slot.get(person_id)
        if slot is None:
            return []
        return [self._device_ids[ds] for ds in self._devices_of(slot)]

    def orders_of_person(self, person_id: int) -> list[int]:
        """Ids of the orders a person is party to."""
        slot = self._person_slot.get(person_id)
        if slot is None:
            return []
        return [int(self.orders.id[s]) for s in self._orders_of_person[slot]]

    def orders_touched(self, device_ids: Iterable[int] | I64) -> set[int]:
        """Ids of the orders whose parties include these devices' people."""
        ids = np.unique(
            np.fromiter(device_ids, np.int64)
            if not isinstance(device_ids, np.ndarray)
            else device_ids
        )
        ids = ids[(ids >= 0) & (ids < len(self._device_slot))]
        slots = self._device_slot[ids]
        person = np.unique(self.devices.person[slots[slots >= 0]])
        start, flat = self._orders_csr()
        person = person[person + 1 < len(start)]  # people added since the index was built
        deg = start[person + 1] - start[person]
        offs = np.arange(int(deg.sum())) - np.repeat(np.cumsum(deg) - deg, deg)
        return set(self.orders.id[flat[np.repeat(start[person], deg) + offs]].tolist())

    def set_misuse_pause(self, order_id: int, paused: bool) -> None:
        """Pause (or resume) the disclosure of an order: the guard's decision, or an operator's.

        A pause takes effect at once (a revealed position is shown as told from his cell);
        a lifted pause at her or his next fix.
        """
        slot = self._order_slot.get(order_id)
        if slot is None:
            return
        o = self.orders
        o.misuse_paused[slot] = paused
        if paused and o.shown[slot] == REVEAL:
            o.shown[slot] = o.told[slot]
            o.disclosed[slot] = False
        if not paused:
            o.misuse_flag[slot] = False
            o.misuse_count[slot] = 0
            o.misuse_close[slot] = 0.0

    def bytes_per_pair(self) -> float:
        """Memory held per order for its state (columns plus registry), in bytes."""
        n = max(self.orders.n, 1)
        columns = self.persons.nbytes() + self.devices.nbytes() + self.orders.nbytes()
        ints = {
            id(x): x
            for d in (self._person_slot, self._order_slot)
            for kv in d.items()
            for x in kv
            if isinstance(x, int) and not -5 <= x <= 256
        }
        registry = (
            self._device_slot.nbytes
            + sys.getsizeof(self._device_ids)
            + sys.getsizeof(self._person_slot)
            + sys.getsizeof(self._order_slot)
            + sum(sys.getsizeof(x) for x in ints.values())
            + sys.getsizeof(self._orders_of_person)
            + sum(sys.getsizeof(x) for x in self._orders_of_person)
            + sys.getsizeof(self._person_ids)
        )
        return (columns + registry) / n
