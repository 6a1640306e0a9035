"""The proximity engine: live state per person and per order, decided batch by batch.

A batch of fixes is applied exactly as if its fixes had arrived one at a time,
in arrival order: every fix of either party re-evaluates each of that party's
orders against the partner's latest fix *as of that moment*. The work is done
with numpy over the whole batch; evaluations that touch the same order are
split into rounds so each round sees the tier the previous one left.

The engine does no I/O and reads no clock: callers pass ``now``. Late fixes
(older than the newest applied fix of their device) never touch live state;
they are handed back through :meth:`Engine.drain_late` for retrospective
evaluation against stored history.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bangpae.domain import coarse, geodesy, tiers, track
from bangpae.domain.approach import APPROACH_HORIZON_S, APPROACH_REARM_S
from bangpae.domain.batch import FixBatch
from bangpae.domain.disclosure import MISUSE_CLOSE_M, MISUSE_STEP_M, MISUSE_STEPS
from bangpae.domain.health import JUMP_SPEED_MPS, HealthState, HealthThresholds, step_health
from bangpae.domain.model import (
    Device,
    Event,
    EventKind,
    Fix,
    Order,
    Person,
    Tier,
    make_event,
)
from bangpae.domain.zones import CompiledZone, ZoneState, compile_zone, step_zones

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

# Jumps are found on the columns for every fix; the per-device health step only sees
# messages with alarms or battery, so it must not judge jumps against a stale fix.
_HEALTH = HealthThresholds(jump_speed_mps=math.inf)
UNCERTAIN = int(Tier.UNCERTAIN)
REVEAL = int(Tier.REVEAL)
BREACH = int(Tier.BREACH)
# The grid key of an engine built without one (tests, benchmarks): the server passes a
# key derived from its secret, so that the grid's lines are not known to anyone.
TEST_GRID_KEY = b"bangpae-test-grid"


@dataclass(frozen=True, slots=True)
class OrderView:
    """What the engine knows of one order now: tier, distance and both latest fixes."""

    order_id: int
    tier: Tier
    base_tier: Tier
    distance_m: float | None
    offender: Fix | None
    victim: Fix | None
    offender_stale: bool
    victim_stale: bool
    misuse_paused: bool
    since: float | None
    shown_tier: Tier = Tier.CLEAR  # what she is shown (docs/disclosure.md)
    victim_trusted: Fix | None = None  # the newest fix of her trusted track
    victim_confirmed: bool = False  # whether that track may disclose
    grid: tuple[float, float] = (0.0, 0.0)  # his grid's secret offset, in cells
    reveal_radius_m: float = 600.0
    notify_radius_m: float = 2000.0


def _grow(a: npt.NDArray[np.generic], n: int, fill: object) -> npt.NDArray[np.generic]:
    if len(a) >= n:
        return a
    out = np.full(max(n, 2 * len(a)), fill, dtype=a.dtype)
    out[: len(a)] = a
    return out


class _Columns:
    """Per-slot numpy columns that grow as slots are added."""

    def __init__(self, spec: dict[str, tuple[type, object]]) -> None:
        self._spec = spec
        self.n = 0
        for name, (dtype, fill) in spec.items():
            setattr(self, name, np.full(0, fill, dtype=dtype))

    def add(self) -> int:
        slot = self.n
        self.n += 1
        for name, (_dtype, fill) in self._spec.items():
            setattr(self, name, _grow(getattr(self, name), self.n, fill))
        return slot

    def nbytes(self) -> int:
        return sum(getattr(self, name)[: self.n].nbytes for name in self._spec)


_NAN = float("nan")

PERSON_COLUMNS: dict[str, tuple[type, object]] = {
    "lat": (np.float64, _NAN),
    "lon": (np.float64, _NAN),
    "acc": (np.float64, _NAN),  # as reported (NaN: unknown)
    "t": (np.float64, -math.inf),  # fix time of the latest applied fix
    "vt": (np.float64, -math.inf),  # fix time of the latest fix with a position
    "valid": (np.bool_, False),  # latest message had a GPS fix
    "vx": (np.float64, 0.0),  # velocity east, m/s
    "vy": (np.float64, 0.0),  # velocity north, m/s
    "speed": (np.float64, _NAN),
    "heading": (np.float64, _NAN),
    "device": (np.int64, -1),  # device id of the latest fix
    "victim": (np.bool_, False),  # protected by some order: her track is kept
    "flagged": (np.bool_, False),  # her latest fix was implausible (flag raised once a run)
    **{f"tr_{k}": spec for k, spec in track.COLUMNS.items()},  # her trusted track
}

DEVICE_COLUMNS: dict[str, tuple[type, object]] = {
    "person": (np.int64, -1),
    "last_t": (np.float64, -math.inf),  # newest applied fix time (late detection)
    "lat": (np.float64, _NAN),
    "lon": (np.float64, _NAN),
    "acc": (np.float64, _NAN),
    "last_msg": (np.float64, _NAN),  # time of the last message of any kind
    "last_valid": (np.float64, _NAN),  # time of the last valid fix
    "invalid_since": (np.float64, _NAN),  # first message without a GPS fix, in a row
    "offline_flag": (np.bool_, False),
    "nofix_flag": (np.bool_, False),
    "offline_after": (np.float64, 300.0),
    "no_fix_after": (np.float64, 300.0),
}

ORDER_COLUMNS: dict[str, tuple[type, object]] = {
    "id": (np.int64, -1),
    "off": (np.int64, -1),  # person slots
    "vic": (np.int64, -1),
    "notify": (np.float64, 2000.0),
    "reveal": (np.float64, 600.0),
    "keep": (np.float64, 100.0),
    "hyst": (np.float64, 50.0),
    "stale": (np.float64, 120.0),
    "valid_from": (np.float64, -math.inf),
    "valid_until": (np.float64, math.inf),
    "tier": (np.int8, 0),  # live tier, UNCERTAIN included
    "base": (np.int8, 0),  # the tier held before uncertainty
    "since": (np.float64, _NAN),
    "distance": (np.float64, _NAN),
    "approach_armed": (np.bool_, True),
    "victim_stale_flag": (np.bool_, False),
    "misuse_count": (np.int8, 0),
    "misuse_flag": (np.bool_, False),
    "misuse_paused": (np.bool_, False),
    "misuse_close": (np.float32, 0.0),  # metres her own fixes closed on him while near
    "gy": (np.float32, 0.0),  # secret offset of his told grid, in cells (row, column)
    "gx": (np.float32, 0.0),
    "told": (np.int8, 0),  # her tier from his cell (never above reveal)
    "shown": (np.int8, 0),  # what she is shown: the exact tier only while disclosed
    "disclosed": (np.bool_, False),  # his position was disclosed to her at the last decision
    "near_margin": (np.float32, _NAN),  # the margin to his cell at the last decision
}


class _Her:
    """Per fix of a batch: the protected person's trusted track as it stands after it."""

    def __init__(self, k: int) -> None:
        self.lat = np.full(k, _NAN)
        self.lon = np.full(k, _NAN)
        self.acc = np.full(k, _NAN)
        self.t = np.full(k, -math.inf)
        self.confirmed = np.zeros(k, dtype=np.bool_)
        self.own = np.zeros(k, dtype=np.bool_)  # a valid fix of a protected person
        self.plausible = np.ones(k, dtype=np.bool_)
        self.burst = np.zeros(k, dtype=np.bool_)
        self.flag_now = np.zeros(k, dtype=np.bool_)
        self.persons: I64 = np.zeros(0, dtype=np.int64)
        self.state: track.State = {}
        self.flagged = np.zeros(0, dtype=np.bool_)


@dataclass(frozen=True, slots=True)
class _Seen:
    """Per evaluation: what she may be told (``docs/disclosure.md``)."""

    told_margin: F64  # distance from her trusted point to his cell, less every doubt
    near_margin: F64  # the same from his last known fix, fresh or not (NaN: unknown)
    told_ok: npt.NDArray[np.bool_]  # both her trusted point and his fix are fresh
    disclosable: npt.NDArray[np.bool_]  # confirmed track, best estimate within reveal
    best: F64  # the best estimate of the distance: his fix to her trusted point
    best_margin: F64  # the same less both accuracies (breach as she is shown it)
    own: npt.NDArray[np.bool_]  # the evaluation is of her own valid fix
    plausible: npt.NDArray[np.bool_]
    burst: npt.NDArray[np.bool_]


def _effective(acc: F64) -> F64:
    return np.asarray(tiers.effective_accuracies(acc), dtype=np.float64)


def _local_vector(lat0: F64, lon0: F64, lat1: F64, lon1: F64) -> tuple[F64, F64]:
    """East and north metres from point 0 to point 1 (local ellipsoid frame)."""
    mid = np.radians((lat0 + lat1) / 2.0)
    mr = geodesy.meridional_radius(np.degrees(mid))
    nr = geodesy.prime_vertical_radius(np.degrees(mid))
    dlon = np.radians(((lon1 - lon0) + 180.0) % 360.0 - 180.0)
    return dlon * nr * np.cos(mid), np.radians(lat1 - lat0) * mr


class Engine:
    """Per-person and per-order proximity state, with the tier machine of DESIGN §2."""

    def __init__(self, grid_key: bytes = TEST_GRID_KEY) -> None:
        self.grid_key = grid_key
        self.persons = _Columns(PERSON_COLUMNS)
        self.devices = _Columns(DEVICE_COLUMNS)
        self.orders = _Columns(ORDER_COLUMNS)
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
        self._zoned: dict[int, tuple[list[CompiledZone], list[CompiledZone], str]] = {}
        self._zone_state: dict[int, ZoneState] = {}
        self._zoned_by_offender: dict[int, list[int]] = {}

    # -- registry -----------------------------------------------------------------------

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
            self._device_slot = _grow(self._device_slot, device.id + 1, -1)  # type: ignore[assignment]
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
        listed = self._zoned_by_offender.setdefault(off_slot, [])
        if order.zones or order.curfews:
            self._zoned[slot] = (
                [compile_zone(z) for z in order.zones],
                [compile_zone(z) for z in order.curfews],
                order.timezone,
            )
            if slot not in listed:
                listed.append(slot)
        else:
            self._zoned.pop(slot, None)
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
        if self._csr is None:
            counts = np.array([len(x) for x in self._orders_of_person], dtype=np.int64)
            start = np.zeros(len(counts) + 1, dtype=np.int64)
            np.cumsum(counts, out=start[1:])
            flat = np.array([s for x in self._orders_of_person for s in x], dtype=np.int64)
            self._csr = (start, flat)
        return self._csr

    def restore(
        self, latest: dict[int, Fix], tiers_by_order: dict[int, tuple[Tier, Tier, float]]
    ) -> None:
        """Rebuild live state after a restart: latest fixes and each order's last tier."""
        for fix in sorted(latest.values(), key=lambda f: f.fix_time):
            if not self.knows_device(fix.device_id):
                continue
            ds = int(self._device_slot[fix.device_id])
            d = self.devices
            d.last_t[ds] = fix.fix_time
            d.last_msg[ds] = fix.received_at if fix.received_at is not None else fix.fix_time
            if fix.valid:
                d.lat[ds], d.lon[ds] = fix.lat, fix.lon
                d.acc[ds] = _NAN if fix.accuracy_m is None else fix.accuracy_m
                d.last_valid[ds] = fix.fix_time
            self._set_person(int(d.person[ds]), fix, 0.0, 0.0)
        for order_id, (tier, base, since) in tiers_by_order.items():
            slot = self._order_slot.get(order_id)
            if slot is not None:
                self.orders.tier[slot], self.orders.base[slot] = int(tier), int(base)
                self.orders.since[slot] = since

    def _set_person(self, p: int, fix: Fix, vx: float, vy: float) -> None:
        ps = self.persons
        ps.t[p], ps.valid[p], ps.device[p] = fix.fix_time, fix.valid, fix.device_id
        if fix.valid:
            ps.vt[p] = fix.fix_time
            ps.lat[p], ps.lon[p] = fix.lat, fix.lon
            ps.acc[p] = _NAN if fix.accuracy_m is None else fix.accuracy_m
            ps.vx[p], ps.vy[p] = vx, vy
            ps.speed[p] = _NAN if fix.speed_mps is None else fix.speed_mps
            ps.heading[p] = _NAN if fix.heading_deg is None else fix.heading_deg

    # -- ingest -------------------------------------------------------------------------

    def ingest(self, fixes: Sequence[Fix] | FixBatch, now: float) -> list[Event]:
        """Apply decoded fixes in arrival order; return the events they cause."""
        return self.ingest_batch(fixes if isinstance(fixes, FixBatch) else FixBatch.of(fixes), now)[
            0
        ]

    def ingest_batch(
        self, batch: FixBatch, now: float
    ) -> tuple[list[Event], npt.NDArray[np.bool_]]:
        """Apply a batch in arrival order: the events it causes, and which fixes were late.

        Late fixes are also kept for :meth:`drain_late`.
        """
        n = len(batch)
        if n == 0:
            return [], np.zeros(0, dtype=np.bool_)
        cols = {
            "device": batch.device,
            "t": batch.t,
            "lat": batch.lat,
            "lon": batch.lon,
            "acc": batch.acc,
            "speed": batch.speed,
            "heading": batch.heading,
            "valid": batch.valid,
            "received": batch.received_or_fix_time(),
        }
        events, live, late = self._apply(cols, now)
        if late.any():
            self._late.extend(batch.fix(int(i)) for i in np.flatnonzero(late))
        # The health step sees fixes with alarms or a battery level, and every fix of a
        # device whose health state is active: only devices with one of those are looked at.
        dev = batch.device[live]
        marked = (batch.alarms[live] != 0) | ~np.isnan(batch.battery[live])
        watched = [d for d, state in self._health.items() if state.active]
        if marked.any() or watched:
            look = np.isin(dev, np.concatenate([dev[marked], np.asarray(watched, np.int64)]))
            for j in live[look].tolist():
                f = batch.fix(j)
                state = self._health.get(f.device_id)
                if f.alarms or f.battery_pct is not None or (state is not None and state.active):
                    slot = int(self._device_slot[f.device_id])
                    pid = self._person_id(int(self.devices.person[slot]))
                    new, found = step_health(state or HealthState(), f, now, _HEALTH, person_id=pid)
                    self._health[f.device_id] = new
                    events.extend(found)
        return events, late

    def drain_late(self) -> list[Fix]:
        """Late fixes set aside since the last call, for retrospective evaluation."""
        late, self._late = self._late, []
        return late

    def _apply(
        self, c: dict[str, npt.NDArray[np.generic]], now: float
    ) -> tuple[list[Event], I64, npt.NDArray[np.bool_]]:
        """Route late and duplicate fixes aside, decide on the live ones.

        Returns the events, the indices of the live fixes and the mask of the late ones.
        """
        dev_ids = c["device"].astype(np.int64)
        n = len(dev_ids)
        known = (dev_ids >= 0) & (dev_ids < len(self._device_slot))
        dslot = np.full(n, -1, dtype=np.int64)
        dslot[known] = self._device_slot[dev_ids[known]]
        t = c["t"].astype(np.float64)
        # Route late and duplicate fixes: compare each fix with the newest earlier one of
        # its device (stored state, or an earlier fix of this batch).
        order = np.lexsort((np.arange(n), dslot))
        sd, st = dslot[order], t[order]
        prev_t = np.where(sd >= 0, self.devices.last_t[np.maximum(sd, 0)], -math.inf)
        same = np.zeros(n, dtype=np.bool_)
        same[1:] = sd[1:] == sd[:-1]
        prev_t[1:] = np.where(same[1:], st[:-1], prev_t[1:])
        if np.all(st > prev_t) or n == 0:
            live_sorted = np.ones(n, dtype=np.bool_)
            late_sorted = np.zeros(n, dtype=np.bool_)
        else:  # rare: out-of-order fixes within the batch need a running maximum
            live_sorted = np.zeros(n, dtype=np.bool_)
            late_sorted = np.zeros(n, dtype=np.bool_)
            newest = -math.inf
            for i in range(n):
                if i == 0 or not same[i]:
                    newest = float(self.devices.last_t[sd[i]]) if sd[i] >= 0 else -math.inf
                if st[i] > newest:
                    live_sorted[i] = True
                    newest = float(st[i])
                elif st[i] < newest:
                    late_sorted[i] = True
        live = np.zeros(n, dtype=np.bool_)
        live[order] = live_sorted & (sd >= 0)
        late = np.zeros(n, dtype=np.bool_)
        late[order] = late_sorted & (sd >= 0)
        idx = np.flatnonzero(live)
        if len(idx) == 0:
            return [], idx, late
        return self._apply_live(c, idx, dslot[idx], now), idx, late

    def _apply_live(
        self,
        c: dict[str, npt.NDArray[np.generic]],
        idx: I64,
        ds: I64,
        now: float,
    ) -> list[Event]:
        events: list[Event] = []
        d, ps = self.devices, self.persons
        t = c["t"][idx].astype(np.float64)
        lat = c["lat"][idx].astype(np.float64)
        lon = c["lon"][idx].astype(np.float64)
        acc = c["acc"][idx].astype(np.float64)
        speed = c["speed"][idx].astype(np.float64)
        heading = c["heading"][idx].astype(np.float64)
        valid = c["valid"][idx].astype(np.bool_)
        received = c["received"][idx].astype(np.float64)
        k = len(idx)
        person = d.person[ds]

        # Previous valid position of each fix's device (stored, or earlier in this batch).
        order = np.lexsort((np.arange(k), ds))
        plat, plon = d.lat[ds].copy(), d.lon[ds].copy()
        pacc, pt = d.acc[ds].copy(), d.last_valid[ds].copy()
        run_lat, run_lon, run_acc, run_t = plat[order], plon[order], pacc[order], pt[order]
        if k > 1:
            sdev = ds[order]
            vo = valid[order]
            # A device with several fixes in the batch: carry the last valid one forward.
            for j in np.flatnonzero(sdev[1:] == sdev[:-1]) + 1:
                i = j - 1
                if vo[i]:
                    run_lat[j], run_lon[j] = lat[order[i]], lon[order[i]]
                    run_acc[j], run_t[j] = acc[order[i]], t[order[i]]
                else:
                    run_lat[j], run_lon[j] = run_lat[i], run_lon[i]
                    run_acc[j], run_t[j] = run_acc[i], run_t[i]
        plat[order], plon[order], pacc[order], pt[order] = run_lat, run_lon, run_acc, run_t

        # Velocity: reported speed and heading where given, else from the previous fix.
        has_prev = np.isfinite(pt) & valid & (t > pt)
        dt = np.where(has_prev, t - pt, 1.0)
        ex, ny = _local_vector(
            np.where(has_prev, plat, lat), np.where(has_prev, plon, lon), lat, lon
        )
        vx = np.where(has_prev, ex / dt, 0.0)
        vy = np.where(has_prev, ny / dt, 0.0)
        reported = np.isfinite(speed) & np.isfinite(heading)
        hr = np.radians(np.where(reported, heading, 0.0))
        vx = np.where(reported, speed * np.sin(hr), vx)
        vy = np.where(reported, speed * np.cos(hr), vy)

        # Position jumps: implied speed beyond what accuracy can explain.
        if has_prev.any():
            hop = np.hypot(ex, ny)
            slack = _effective(pacc) + _effective(acc)
            implied = (hop - slack) / dt
            for j in np.flatnonzero(has_prev & (implied > JUMP_SPEED_MPS)):
                dev = int(c["device"][idx[j]])
                events.append(
                    make_event(
                        EventKind.POSITION_JUMP,
                        float(t[j]),
                        dev,
                        person_id=self._person_id(int(person[j])),
                        device_id=dev,
                        data={"implied_speed_mps": round(float(implied[j]), 1)},
                    )
                )

        # Device columns take each device's last fix of the batch (live fixes of one
        # device are in increasing time, so the last is the newest).
        last = order[self._group_ends(ds[order])]
        dl = ds[last]
        d.last_t[dl], d.last_msg[dl] = t[last], received[last]
        d.offline_flag[dl] = False
        lv = last[valid[last]]
        d.lat[ds[lv]], d.lon[ds[lv]] = lat[lv], lon[lv]
        d.acc[ds[lv]], d.last_valid[ds[lv]] = acc[lv], t[lv]
        d.invalid_since[ds[lv]] = _NAN
        d.nofix_flag[ds[lv]] = False
        li = last[~valid[last]]
        if len(li):
            keep = np.isfinite(d.invalid_since[ds[li]])
            d.invalid_since[ds[li]] = np.where(keep, d.invalid_since[ds[li]], received[li])

        # Her trusted track, fix by fix (docs/disclosure.md); written back after evaluation.
        her = self._track(person, t, lat, lon, acc, valid, now)
        for j in np.flatnonzero(her.flag_now).tolist():
            dev = int(c["device"][idx[j]])
            events.append(
                make_event(
                    EventKind.POSITION_IMPLAUSIBLE,
                    float(t[j]),
                    dev,
                    person_id=self._person_id(int(person[j])),
                    device_id=dev,
                )
            )

        # Evaluations: every fix re-evaluates each order of its person, in arrival order.
        start, flat = self._orders_csr()
        deg = start[person + 1] - start[person]
        if deg.sum() > 0:
            events.extend(
                self._evaluate(
                    person, deg, start, flat, t, lat, lon, acc, valid, vx, vy, idx, c, now, her
                )
            )
        self._track_store(her)

        # Zones and curfews of offenders who have them (few): fix by fix, in order.
        if self._zoned:
            for j in range(k):
                slots = self._zoned_by_offender.get(int(person[j]))
                if slots and valid[j]:
                    dev = int(c["device"][idx[j]])
                    events.extend(
                        self._zones_for(
                            slots,
                            float(lat[j]),
                            float(lon[j]),
                            float(acc[j]),
                            float(t[j]),
                            dev,
                            now,
                        )
                    )

        # Person columns take the batch's last fix of each person (arrival order).
        by_person = np.lexsort((np.arange(k), person))
        pj = by_person[self._group_ends(person[by_person])]
        pp = person[pj]
        ps.t[pp], ps.valid[pp], ps.device[pp] = t[pj], valid[pj], c["device"][idx[pj]]
        vm = valid[pj]
        pv, jv = pp[vm], pj[vm]
        ps.lat[pv], ps.lon[pv], ps.acc[pv], ps.vt[pv] = lat[jv], lon[jv], acc[jv], t[jv]
        ps.vx[pv], ps.vy[pv] = vx[jv], vy[jv]
        ps.speed[pv], ps.heading[pv] = speed[jv], heading[jv]
        return events

    def _track(
        self,
        person: I64,
        t: F64,
        lat: F64,
        lon: F64,
        acc: F64,
        valid: npt.NDArray[np.bool_],
        now: float,
    ) -> _Her:
        """Step the trusted tracks of the protected people in a batch, in arrival order.

        Returns, for every fix, the track as it stands after it (others' fixes: their
        stored track), and whether it was plausible; the new state is written back by
        :meth:`_track_store` once the batch has been evaluated against the old one.
        """
        ps = self.persons
        her = _Her(len(person))
        vi = np.flatnonzero(ps.victim[person])  # fixes of protected people, arrival order
        if len(vi) == 0:
            return her
        up, row = np.unique(person[vi], return_inverse=True)
        state = {n: getattr(ps, f"tr_{n}")[up] for n in track.COLUMNS}  # copies
        prev_t, flagged = ps.t[up], ps.flagged[up]
        if len(up) == len(vi):  # one fix each (the common case): one round
            rounds = [np.arange(len(vi))]
        else:  # the r-th fix of each person in round r
            order = np.lexsort((np.arange(len(vi)), row))
            first = np.ones(len(vi), dtype=np.bool_)
            first[1:] = row[order][1:] != row[order][:-1]
            rank = np.empty(len(vi), dtype=np.int64)
            start = np.maximum.accumulate(np.where(first, np.arange(len(vi)), 0))
            rank[order] = np.arange(len(vi)) - start
            rounds = [np.flatnonzero(rank == r) for r in range(int(rank.max()) + 1)]
        for sel in rounds:
            v = sel[valid[vi[sel]]]
            if len(v):
                rows, j = row[v], vi[v]
                new, ok = track.step(
                    {n: a[rows] for n, a in state.items()},
                    prev_t[rows],
                    lat[j],
                    lon[j],
                    acc[j],
                    t[j],
                    now,
                )
                for n, a in new.items():
                    state[n][rows] = a
                prev_t[rows] = np.minimum(t[j], now)
                her.plausible[j], her.own[j] = ok, True
                # the first implausible fix of a run is flagged (each is kept anyway)
                her.flag_now[j] = ~ok & ~flagged[rows]
                flagged[rows] = ~ok
            rows, j = row[sel], vi[sel]
            her.lat[j], her.lon[j] = state["lat"][rows], state["lon"][rows]
            her.acc[j], her.t[j] = state["acc"][rows], state["t"][rows]
            her.confirmed[j] = track.confirmed({n: state[n][rows] for n in ("n", "span")})
            her.burst[j] = track.bursting({"burst_n": state["burst_n"][rows]})
        her.persons, her.state, her.flagged = up, state, flagged
        return her

    def _track_store(self, her: _Her) -> None:
        if not len(her.persons):
            return
        ps = self.persons
        for n, a in her.state.items():
            getattr(ps, f"tr_{n}")[her.persons] = a
        ps.flagged[her.persons] = her.flagged

    @staticmethod
    def _group_ends(sorted_keys: I64) -> I64:
        end = np.ones(len(sorted_keys), dtype=np.bool_)
        end[:-1] = sorted_keys[1:] != sorted_keys[:-1]
        return np.flatnonzero(end)

    def _person_id(self, slot: int) -> int:
        if len(self._person_ids) != self.persons.n:
            ids = [0] * self.persons.n
            for pid, s in self._person_slot.items():
                ids[s] = pid
            self._person_ids = ids
        return self._person_ids[slot]

    def _evaluate(
        self,
        person: I64,
        deg: I64,
        start: I64,
        flat: I64,
        t: F64,
        lat: F64,
        lon: F64,
        acc: F64,
        valid: npt.NDArray[np.bool_],
        vx: F64,
        vy: F64,
        idx: I64,
        c: dict[str, npt.NDArray[np.generic]],
        now: float,
        her: _Her,
    ) -> list[Event]:
        o, ps = self.orders, self.persons
        k = len(person)
        # One evaluation per (fix j, order of its person).
        ej = np.repeat(np.arange(k), deg)
        offs = np.arange(len(ej)) - np.repeat(np.cumsum(deg) - deg, deg)
        eo = flat[start[person[ej]] + offs]
        active = (o.valid_from[eo] <= now) & (now < o.valid_until[eo])
        ej, eo = ej[active], eo[active]
        if len(ej) == 0:
            return []
        self_is_off = o.off[eo] == person[ej]
        partner = np.where(self_is_off, o.vic[eo], o.off[eo])

        # The partner's latest fix as of evaluation j: its last fix earlier in this batch,
        # else its stored state.
        key_sorted_order = np.lexsort((np.arange(k), person))
        keys = person[key_sorted_order] * (k + 1) + np.arange(k)[key_sorted_order]
        q = partner * (k + 1) + ej
        pos = np.searchsorted(keys, q) - 1
        in_batch = pos >= 0
        cand = key_sorted_order[np.maximum(pos, 0)]
        in_batch &= person[cand] == partner
        # The partner's batch fix may be invalid (no GPS): its position is then the last
        # valid one, which for the batch is not tracked per fix; fall back to stored state.
        pj = np.where(in_batch, cand, -1)
        b = pj >= 0
        p_lat = np.where(b, lat[np.maximum(pj, 0)], ps.lat[partner])
        p_lon = np.where(b, lon[np.maximum(pj, 0)], ps.lon[partner])
        p_acc = np.where(b, acc[np.maximum(pj, 0)], ps.acc[partner])
        p_t = np.where(b, t[np.maximum(pj, 0)], ps.t[partner])
        p_valid = np.where(b, valid[np.maximum(pj, 0)], ps.valid[partner])
        p_vx = np.where(b, vx[np.maximum(pj, 0)], ps.vx[partner])
        p_vy = np.where(b, vy[np.maximum(pj, 0)], ps.vy[partner])

        s_lat, s_lon, s_acc, s_t, s_valid = lat[ej], lon[ej], acc[ej], t[ej], valid[ej]
        off_lat = np.where(self_is_off, s_lat, p_lat)
        off_lon = np.where(self_is_off, s_lon, p_lon)
        vic_lat = np.where(self_is_off, p_lat, s_lat)
        vic_lon = np.where(self_is_off, p_lon, s_lon)
        off_t = np.where(self_is_off, s_t, p_t)
        vic_t = np.where(self_is_off, p_t, s_t)
        off_valid = np.where(self_is_off, s_valid, p_valid)
        vic_valid = np.where(self_is_off, p_valid, s_valid)
        stale = o.stale[eo]
        off_fresh = off_valid & (now - off_t <= stale) & np.isfinite(off_lat)
        vic_fresh = vic_valid & (now - vic_t <= stale) & np.isfinite(vic_lat)
        both = off_fresh & vic_fresh

        u = _effective(s_acc) + _effective(p_acc)
        thresholds = tiers.decision_thresholds(
            u, o.notify[eo], o.reveal[eo], o.keep[eo], o.hyst[eo]
        )
        dist = np.full(len(ej), _NAN)
        if both.any():
            dist[both] = geodesy.distances_m(
                off_lat[both], off_lon[both], vic_lat[both], vic_lon[both], thresholds[both]
            )
        margin = dist - u
        seen = self._seen(
            eo,
            ej,
            self_is_off,
            partner,
            pj,
            her,
            off_lat,
            off_lon,
            np.where(self_is_off, s_acc, p_acc),
            off_fresh,
            vic_lat,
            vic_lon,
            both,
            dist,
            now,
        )

        # Closing speed toward keep-away, for approach prediction.
        ex, ny = _local_vector(vic_lat, vic_lon, off_lat, off_lon)
        rvx = np.where(self_is_off, vx[ej] - p_vx, p_vx - vx[ej])
        rvy = np.where(self_is_off, vy[ej] - p_vy, p_vy - vy[ej])
        with np.errstate(invalid="ignore", divide="ignore"):
            closing = -(ex * rvx + ny * rvy) / np.where(dist > 0, dist, 1.0)
            ttb = np.where(closing > 0, (margin - o.keep[eo]) / closing, np.inf)

        # Rounds: the r-th evaluation of each order in the batch goes into round r.
        srt = np.lexsort((ej, eo))
        eo_s = eo[srt]
        first = np.ones(len(srt), dtype=np.bool_)
        first[1:] = eo_s[1:] != eo_s[:-1]
        group_start = np.maximum.accumulate(np.where(first, np.arange(len(srt)), 0))
        rank = np.empty(len(srt), dtype=np.int64)
        rank[srt] = np.arange(len(srt)) - group_start
        events: list[Event] = []
        for r in range(int(rank.max()) + 1):
            sel = np.flatnonzero(rank == r)
            events.extend(
                self._round(
                    sel,
                    eo,
                    ej,
                    both,
                    off_fresh,
                    vic_fresh,
                    margin,
                    dist,
                    ttb,
                    self_is_off,
                    t,
                    idx,
                    c,
                    now,
                    seen,
                )
            )
        return events

    def _seen(
        self,
        eo: I64,
        ej: I64,
        self_is_off: npt.NDArray[np.bool_],
        partner: I64,
        pj: I64,
        her: _Her,
        off_lat: F64,
        off_lon: F64,
        off_acc: F64,
        off_fresh: npt.NDArray[np.bool_],
        vic_lat: F64,
        vic_lon: F64,
        both: npt.NDArray[np.bool_],
        dist: F64,
        now: float,
    ) -> _Seen:
        """Per evaluation: her trusted point, the margin to his cell, and disclosure."""
        o, ps = self.orders, self.persons
        mine = ~self_is_off
        b = pj >= 0
        at = np.where(mine, ej, np.maximum(pj, 0))
        in_batch = mine | b

        def pick(batch: npt.NDArray[np.generic], stored: npt.NDArray[np.generic]) -> F64:
            return np.where(in_batch, batch[at], stored[partner])  # type: ignore[no-any-return]

        h_lat, h_lon = pick(her.lat, ps.tr_lat), pick(her.lon, ps.tr_lon)
        h_acc, h_t = pick(her.acc, ps.tr_acc), pick(her.t, ps.tr_t)
        stored_conf = track.confirmed({"n": ps.tr_n[partner], "span": ps.tr_span[partner]})
        conf = np.where(in_batch, her.confirmed[at], stored_conf)
        her_fresh = np.isfinite(h_t) & (now - h_t <= o.stale[eo]) & ~np.isnan(h_lat)
        told_ok = off_fresh & her_fresh
        # The margin to his cell, also from his last known fix while his signal is lost
        # (the misuse guard counts her closing in then too).
        known = her_fresh & np.isfinite(off_lat)
        margin = np.full(len(eo), _NAN)
        if known.any():
            # 1 m for the local-ellipsoid distance's error: doubt counts toward danger
            margin[known] = (
                coarse.told_margins(
                    h_lat[known],
                    h_lon[known],
                    _effective(h_acc[known]),
                    off_lat[known],
                    off_lon[known],
                    o.gy[eo[known]].astype(np.float64),
                    o.gx[eo[known]].astype(np.float64),
                )
                - 1.0
            )
        # The best estimate of the distance: his fix to her trusted point, no accuracy.
        # Decisions on it (disclosure, and breach as she is shown it) are exact.
        u_best = _effective(h_acc) + _effective(off_acc)
        keep = o.keep[eo] + u_best
        thresholds = np.stack([o.reveal[eo], keep, keep + o.hyst[eo]], axis=1)
        best = np.full(len(eo), _NAN)
        same = both & told_ok & (h_lat == vic_lat) & (h_lon == vic_lon)
        same &= (np.abs(dist[:, None] - thresholds) > geodesy.FAST_ERROR_BOUND_M).all(axis=1)
        best[same] = dist[same]
        other = told_ok & ~same
        if other.any():
            best[other] = geodesy.distances_m(
                off_lat[other], off_lon[other], h_lat[other], h_lon[other], thresholds[other]
            )
        disclosable = told_ok & conf & (best <= o.reveal[eo])
        own = mine & her.own[ej]
        return _Seen(
            np.where(told_ok, margin, _NAN),
            margin,
            told_ok,
            disclosable,
            best,
            best - u_best,
            own,
            her.plausible[ej] | ~own,
            her.burst[ej] & own,
        )

    def _round(
        self,
        sel: I64,
        eo: I64,
        ej: I64,
        both: npt.NDArray[np.bool_],
        off_fresh: npt.NDArray[np.bool_],
        vic_fresh: npt.NDArray[np.bool_],
        margin: F64,
        dist: F64,
        ttb: F64,
        self_is_off: npt.NDArray[np.bool_],
        t: F64,
        idx: I64,
        c: dict[str, npt.NDArray[np.generic]],
        now: float,
        seen: _Seen,
    ) -> list[Event]:
        o = self.orders
        os_ = eo[sel]
        before = o.distance[os_].copy()
        cur = o.tier[os_].astype(np.int8)
        base = np.where(cur == UNCERTAIN, o.base[os_], cur).astype(np.int8)
        ok = both[sel]
        new = cur.copy()
        if ok.any():
            s_ok = sel[ok]
            new[ok] = tiers.next_tiers(
                base[ok],
                margin[s_ok],
                o.notify[os_[ok]],
                o.reveal[os_[ok]],
                o.keep[os_[ok]],
                o.hyst[os_[ok]],
            )
        # Offender's position unknown to us while he was close: uncertain.
        lost = ~off_fresh[sel] & ((cur == int(Tier.REVEAL)) | (cur == int(Tier.BREACH)))
        new[lost] = UNCERTAIN
        o.base[os_[lost]] = cur[lost]
        o.base[os_[ok]] = new[ok]
        events: list[Event] = []
        changed = np.flatnonzero(new != cur)
        for i in changed.tolist():
            e = int(sel[i])
            slot = int(os_[i])
            j = int(ej[e])
            dev = int(c["device"][idx[j]])
            at = float(t[j])
            d = float(dist[e]) if ok[i] else None
            events.append(
                make_event(
                    EventKind.TIER_CHANGED,
                    at,
                    int(o.id[slot]),
                    dev,
                    int(cur[i]),
                    int(new[i]),
                    order_id=int(o.id[slot]),
                    person_id=self._person_id(int(o.off[slot])),
                    device_id=dev,
                    tier_from=Tier(int(cur[i])),
                    tier_to=Tier(int(new[i])),
                    distance_m=None if d is None else round(d, 2),
                    data={"margin_m": round(float(margin[e]), 2)} if ok[i] else {"signal": "lost"},
                )
            )
            o.since[slot] = at
        o.tier[os_] = new
        o.distance[os_[ok]] = dist[sel[ok]]

        # The victim's own location is missing or stale: ask her app to resume sharing.
        vstale = ~vic_fresh[sel] & ~o.victim_stale_flag[os_]
        for i in np.flatnonzero(vstale).tolist():
            slot, j = int(os_[i]), int(ej[sel[i]])
            dev = int(c["device"][idx[j]])
            events.append(
                make_event(
                    EventKind.VICTIM_LOCATION_STALE,
                    float(t[j]),
                    int(o.id[slot]),
                    dev,
                    order_id=int(o.id[slot]),
                    person_id=self._person_id(int(o.vic[slot])),
                )
            )
        o.victim_stale_flag[os_[vstale]] = True
        o.victim_stale_flag[os_[vic_fresh[sel]]] = False

        # Approach prediction: a breach predicted within the horizon, once per episode.
        tt = ttb[sel]
        fire = (
            ok
            & o.approach_armed[os_]
            & (tt >= 0)
            & (tt <= APPROACH_HORIZON_S)
            & (new != int(Tier.BREACH))
        )
        for i in np.flatnonzero(fire).tolist():
            e, slot = int(sel[i]), int(os_[i])
            j = int(ej[e])
            dev = int(c["device"][idx[j]])
            events.append(
                make_event(
                    EventKind.APPROACH_FAST,
                    float(t[j]),
                    int(o.id[slot]),
                    dev,
                    order_id=int(o.id[slot]),
                    person_id=self._person_id(int(o.off[slot])),
                    device_id=dev,
                    distance_m=round(float(dist[e]), 2),
                    data={"seconds_to_breach": round(float(tt[i]), 1)},
                )
            )
        o.approach_armed[os_[fire]] = False
        rearm = ok & ((tt > APPROACH_REARM_S) | (new < int(Tier.NOTIFY)))
        o.approach_armed[os_[rearm]] = True

        # What she is told from his cell (never above reveal), with its own hysteresis.
        tok = seen.told_ok[sel]
        told_cur = o.told[os_].astype(np.int8)
        told_new = told_cur.copy()
        if tok.any():
            s_t = sel[tok]
            told_new[tok] = np.minimum(
                tiers.next_tiers(
                    told_cur[tok],
                    seen.told_margin[s_t],
                    o.notify[os_[tok]],
                    o.reveal[os_[tok]],
                    np.full(len(s_t), -math.inf),
                    o.hyst[os_[tok]],
                ),
                REVEAL,
            )
        o.told[os_] = told_new

        events.extend(
            self._misuse(sel, os_, ok, new, told_cur, told_new, before, dist, seen, ej, t, idx, c)
        )

        # What she is shown: while his position may be disclosed, reveal or breach as her
        # trusted point (not her last report, which may be forged) stands to his fix;
        # else the told tier. His signal lost is shown as such only if she saw him.
        shown_cur = o.shown[os_].astype(np.int8)
        close = (new == REVEAL) | (new == BREACH)
        was_breach = shown_cur == BREACH
        # doubt counts toward danger here: inside the reveal radius, on her trusted point
        in_breach = seen.best_margin[sel] <= o.keep[os_] + np.where(was_breach, o.hyst[os_], 0.0)
        exact = np.where(in_breach, BREACH, REVEAL).astype(np.int8)
        held = o.misuse_paused[os_] & ~in_breach  # in breach, her getting away comes first
        disclosed = close & seen.disclosable[sel] & ~held
        shown_new = np.where(disclosed, exact, told_new)
        lost = (new == UNCERTAIN) & (o.disclosed[os_] | (shown_cur == UNCERTAIN))
        shown_new = np.where(lost, UNCERTAIN, shown_new).astype(np.int8)
        o.disclosed[os_] = np.where(new == UNCERTAIN, o.disclosed[os_], disclosed)
        for i in np.flatnonzero(shown_new != shown_cur).tolist():
            slot, j = int(os_[i]), int(ej[sel[i]])
            dev = int(c["device"][idx[j]])
            events.append(self._shown_event(slot, float(t[j]), dev, shown_cur[i], shown_new[i]))
        o.shown[os_] = shown_new
        return events

    def _shown_event(self, slot: int, at: float, cause: object, old: int, new: int) -> Event:
        o = self.orders
        return make_event(
            EventKind.SHOWN_TIER_CHANGED,
            at,
            int(o.id[slot]),
            cause,
            int(old),
            int(new),
            order_id=int(o.id[slot]),
            person_id=self._person_id(int(o.vic[slot])),
            tier_from=Tier(int(old)),
            tier_to=Tier(int(new)),
        )

    def _misuse(
        self,
        sel: I64,
        os_: I64,
        ok: npt.NDArray[np.bool_],
        new: npt.NDArray[np.int8],
        told_cur: npt.NDArray[np.int8],
        told_new: npt.NDArray[np.int8],
        before: F64,
        dist: F64,
        seen: _Seen,
        ej: I64,
        t: F64,
        idx: I64,
        c: dict[str, npt.NDArray[np.generic]],
    ) -> list[Event]:
        """The misuse guard (docs/disclosure.md): her reports closing on him, bursts, jumps.

        On detection the disclosure of that order is paused at once and the control centre
        gets ``disclosure_misuse`` with the evidence; an operator keeps or lifts the pause.
        """
        o = self.orders
        own = seen.own[sel]
        near = (told_cur >= int(Tier.NOTIFY)) | (told_new >= int(Tier.NOTIFY))
        plausible = seen.plausible[sel]
        # Everything here but the closing steps is judged on what she is told (his cell),
        # so that whether the guard fires tells her nothing finer than the cell.
        # Closing steps while she sees him: her own plausible fix shrank the distance.
        seeing = o.disclosed[os_] & (new == REVEAL)
        o.misuse_count[os_[ok & ~seeing]] = 0
        step = np.flatnonzero(own & ok & plausible & seeing)
        if len(step):
            slots = os_[step]
            closing = before[step] - dist[sel[step]]  # NaN (no distance before): no step
            counts = o.misuse_count[slots].astype(np.int64)
            counts = np.where(closing > MISUSE_STEP_M, counts + 1, counts - 1)
            o.misuse_count[slots] = np.clip(counts, 0, 100)
        # Closing on his cell by her own movement while near (notify included), net; from
        # his last known fix while his signal is lost, so silence does not reset it.
        cur = seen.near_margin[sel]
        known = ~np.isnan(cur)
        walk = np.flatnonzero(own & plausible & near & known)
        if len(walk):
            slots = os_[walk]
            prev = o.near_margin[slots].astype(np.float64)
            gained = np.where(np.isnan(prev), 0.0, prev - cur[walk])
            o.misuse_close[slots] = np.maximum(o.misuse_close[slots] + gained, 0.0)
        o.misuse_close[os_[~near]] = 0.0
        o.near_margin[os_[known]] = cur[known]
        # The episode ends when she is told nothing is near any more.
        calm = os_[ok & (new == int(Tier.CLEAR)) & (told_new == int(Tier.CLEAR))]
        if not own.any():
            o.misuse_flag[calm] = False
            return []
        counts = o.misuse_count[os_]
        closed = o.misuse_close[os_]
        reasons = (
            ("approach", own & ((counts >= MISUSE_STEPS) | (closed >= MISUSE_CLOSE_M))),
            ("jump", own & ~plausible & near),
            ("burst", own & seen.burst[sel] & near),
        )
        events: list[Event] = []
        fired = np.zeros(len(sel), dtype=np.bool_)
        for reason, hit in reasons:
            for i in np.flatnonzero(hit & ~fired & ~o.misuse_flag[os_]).tolist():
                slot, e = int(os_[i]), int(sel[i])
                j = int(ej[e])
                dev = int(c["device"][idx[j]])
                fired[i] = True
                events.append(
                    make_event(
                        EventKind.DISCLOSURE_MISUSE,
                        float(t[j]),
                        int(o.id[slot]),
                        dev,
                        reason,
                        order_id=int(o.id[slot]),
                        person_id=self._person_id(int(o.vic[slot])),
                        device_id=dev,
                        distance_m=round(float(dist[e]), 2) if ok[i] else None,
                        data={
                            "reason": reason,
                            "closing_steps": int(counts[i]),
                            "closed_m": round(float(closed[i]), 1),
                            "tier": Tier(int(new[i])).label,
                            "plausible": bool(seen.plausible[e]),
                            "paused": True,
                        },
                    )
                )
        o.misuse_flag[os_[fired]] = True
        o.misuse_paused[os_[fired]] = True
        o.misuse_flag[calm] = False
        return events

    def _zones_for(
        self,
        slots: list[int],
        lat: float,
        lon: float,
        acc: float,
        at: float,
        device_id: int | None,
        now: float,
    ) -> list[Event]:
        o = self.orders
        events: list[Event] = []
        eff = float(_effective(np.array([acc]))[0])
        for slot in slots:
            if not (o.valid_from[slot] <= now < o.valid_until[slot]):
                continue
            zones, curfews, tz = self._zoned[slot]
            state, found = step_zones(
                self._zone_state.get(slot, ZoneState()),
                zones,
                curfews,
                lat,
                lon,
                eff,
                at,
                tz,
                int(o.id[slot]),
                self._person_id(int(o.off[slot])),
                device_id,
            )
            self._zone_state[slot] = state
            events.extend(found)
        return events

    # -- timers -------------------------------------------------------------------------

    def tick(self, now: float) -> list[Event]:
        """Fire the timers due at ``now``: signal lost, offline, no GPS fix, curfew windows."""
        events: list[Event] = []
        # Schedules open and close with time alone: re-check zoned orders with the last
        # known position, at the minute (schedules are minute-grained, ids stay stable).
        minute = math.floor(now / 60.0) * 60.0
        for off_slot, slots in self._zoned_by_offender.items():
            ps = self.persons
            if slots and math.isfinite(ps.lat[off_slot]):
                events.extend(
                    self._zones_for(
                        slots,
                        float(ps.lat[off_slot]),
                        float(ps.lon[off_slot]),
                        float(ps.acc[off_slot]),
                        minute,
                        None,
                        now,
                    )
                )
        o, ps, d = self.orders, self.persons, self.devices
        n = o.n
        if n:
            tier = o.tier[:n]
            off = o.off[:n]
            close = (tier == int(Tier.REVEAL)) | (tier == int(Tier.BREACH))
            active = (o.valid_from[:n] <= now) & (now < o.valid_until[:n])
            gone = active & close & (now - ps.t[off] > o.stale[:n])
            for slot in np.flatnonzero(gone).tolist():
                deadline = float(ps.t[off[slot]] + o.stale[slot])
                events.append(
                    make_event(
                        EventKind.TIER_CHANGED,
                        deadline,
                        int(o.id[slot]),
                        "stale",
                        int(tier[slot]),
                        UNCERTAIN,
                        order_id=int(o.id[slot]),
                        person_id=self._person_id(int(off[slot])),
                        tier_from=Tier(int(tier[slot])),
                        tier_to=Tier.UNCERTAIN,
                        data={"signal": "stale", "last_fix_time": float(ps.t[off[slot]])},
                    )
                )
                o.base[slot] = tier[slot]
                o.tier[slot] = UNCERTAIN
                o.since[slot] = deadline
                if o.disclosed[slot]:  # she saw him: she is told it is lost
                    events.append(
                        self._shown_event(slot, deadline, "stale", int(o.shown[slot]), UNCERTAIN)
                    )
                    o.shown[slot] = UNCERTAIN
        m = d.n
        if m:
            last = d.last_msg[:m]
            seen = np.isfinite(last)
            offline = seen & ~d.offline_flag[:m] & (now - last > d.offline_after[:m])
            for slot in np.flatnonzero(offline).tolist():
                deadline = float(last[slot] + d.offline_after[slot])
                dev = self._device_ids[slot]
                events.append(
                    make_event(
                        EventKind.OFFLINE,
                        deadline,
                        dev,
                        device_id=dev,
                        person_id=self._person_id(int(d.person[slot])),
                        data={"last_message_at": float(last[slot])},
                    )
                )
            d.offline_flag[:m] |= offline
            inv = d.invalid_since[:m]
            nofix = (
                np.isfinite(inv)
                & ~d.offline_flag[:m]
                & ~d.nofix_flag[:m]
                & (now - inv > d.no_fix_after[:m])
            )
            for slot in np.flatnonzero(nofix).tolist():
                deadline = float(inv[slot] + d.no_fix_after[slot])
                dev = self._device_ids[slot]
                lv = float(d.last_valid[slot])
                events.append(
                    make_event(
                        EventKind.NO_FIX,
                        deadline,
                        dev,
                        device_id=dev,
                        person_id=self._person_id(int(d.person[slot])),
                        data={"last_valid_at": None if math.isnan(lv) else lv},
                    )
                )
            d.nofix_flag[:m] |= nofix
        return events

    # -- reads --------------------------------------------------------------------------

    def _fix_of(self, p: int) -> Fix | None:
        ps = self.persons
        if not math.isfinite(ps.vt[p]) or not math.isfinite(ps.lat[p]):
            return None

        def opt(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        return Fix(
            device_id=int(ps.device[p]),
            fix_time=float(ps.vt[p]),  # when he was last seen there, not the last message
            lat=float(ps.lat[p]),
            lon=float(ps.lon[p]),
            accuracy_m=opt(ps.acc[p]),
            speed_mps=opt(ps.speed[p]),
            heading_deg=opt(ps.heading[p]),
        )

    def order_view(self, order_id: int, now: float | None = None) -> OrderView | None:
        """The live state of one order (positions unfiltered: callers apply disclosure)."""
        slot = self._order_slot.get(order_id)
        if slot is None:
            return None
        o, ps = self.orders, self.persons
        off, vic = int(o.off[slot]), int(o.vic[slot])
        stale = float(o.stale[slot])
        trusted = None
        if math.isfinite(ps.tr_t[vic]) and not math.isnan(ps.tr_lat[vic]):
            trusted = Fix(
                device_id=-1,
                fix_time=float(ps.tr_t[vic]),
                lat=float(ps.tr_lat[vic]),
                lon=float(ps.tr_lon[vic]),
                accuracy_m=None if math.isnan(ps.tr_acc[vic]) else float(ps.tr_acc[vic]),
            )
        confirmed = bool(
            track.confirmed({"n": ps.tr_n[vic : vic + 1], "span": ps.tr_span[vic : vic + 1]})[0]
        )
        at = now if now is not None else -math.inf
        dist = float(o.distance[slot])
        return OrderView(
            order_id=order_id,
            tier=Tier(int(o.tier[slot])),
            base_tier=Tier(int(o.base[slot])),
            distance_m=None if math.isnan(dist) else dist,
            offender=self._fix_of(off),
            victim=self._fix_of(vic),
            offender_stale=not (ps.valid[off] and at - ps.t[off] <= stale),
            victim_stale=not (ps.valid[vic] and at - ps.t[vic] <= stale),
            misuse_paused=bool(o.misuse_paused[slot]),
            since=None if math.isnan(o.since[slot]) else float(o.since[slot]),
            shown_tier=Tier(int(o.shown[slot])),
            victim_trusted=trusted,
            victim_confirmed=confirmed,
            grid=(float(o.gy[slot]), float(o.gx[slot])),
            reveal_radius_m=float(o.reveal[slot]),
            notify_radius_m=float(o.notify[slot]),
        )

    def evaluate_orders(self, order_ids: Iterable[int], now: float) -> list[Event]:
        """Decide orders just registered from what is known of both parties now.

        Each order is evaluated as if his latest fix had just arrived (her side from her
        stored state), so a new order is not shown ``clear`` until one of them next
        reports; only these orders are evaluated, and no device or person state moves.
        """
        ps = self.persons
        events: list[Event] = []
        for oid in order_ids:
            slot = self._order_slot.get(oid)
            if slot is None:
                continue
            off = int(self.orders.off[slot])
            if not math.isfinite(ps.t[off]):
                continue  # he never reported: nothing to decide yet
            person = np.array([off], dtype=np.int64)
            start = np.zeros(off + 1, dtype=np.int64)  # his orders here: this one alone
            flat = np.array([slot], dtype=np.int64)

            def col(a: F64) -> F64:
                return np.array([a[off]], dtype=np.float64)  # noqa: B023 - used at once

            events.extend(
                self._evaluate(
                    person,
                    np.ones(1, dtype=np.int64),
                    start,
                    flat,
                    col(ps.t),
                    col(ps.lat),
                    col(ps.lon),
                    col(ps.acc),
                    np.array([bool(ps.valid[off])]),
                    col(ps.vx),
                    col(ps.vy),
                    np.zeros(1, dtype=np.int64),
                    {"device": np.array([int(ps.device[off])], dtype=np.int64)},
                    now,
                    _Her(1),
                )
            )
        return events

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
        return self._person_id(int(self.orders.off[slot])), self._person_id(
            int(self.orders.vic[slot])
        )

    def person_of_device(self, device_id: int) -> int | None:
        """The person a registered device is bound to (None: unknown device)."""
        if not self.knows_device(device_id):
            return None
        return self._person_id(int(self.devices.person[int(self._device_slot[device_id])]))

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
