"""A batch of fixes as columns: how fixes travel from intake through the engine to the store.

A busy gateway hands the core thousands of fixes a second. As ``Fix`` objects each
would be built, read field by field into the engine's columns, and read again for
the store; as a ``FixBatch`` they stay columns from the intake channel to the
database, and a ``Fix`` is made only for the few that need one (a late fix, an
alarm, a battery level).

Optional values are NaN where unknown. Alarms are a bit set over ``ALARMS``; the
time of receipt is NaN where unknown (the fix time then counts).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bangpae.domain.model import Alarm, Fix

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

ALARMS = tuple(a.value for a in Alarm)  # bit i of a mask is ALARMS[i]
_ALARM_BIT = {name: 1 << i for i, name in enumerate(ALARMS)}
# every mask's alarms, and their text as the store keeps it (sorted, comma-separated)
ALARM_SETS = tuple(
    frozenset(name for i, name in enumerate(ALARMS) if mask >> i & 1)
    for mask in range(1 << len(ALARMS))
)
ALARM_TEXT = tuple(",".join(sorted(names)) for names in ALARM_SETS)
_NAN = math.nan

# A fix as a packed little-endian record, for fixes that cross between processes: device,
# fix time, position, then the optional values (NaN: unknown), valid (0 or 1), alarms,
# and the time of receipt (NaN: unknown).
RECORD = np.dtype(
    [
        ("device", "<i8"),
        ("t", "<f8"),
        ("lat", "<f8"),
        ("lon", "<f8"),
        ("acc", "<f8"),
        ("speed", "<f8"),
        ("heading", "<f8"),
        ("battery", "<f8"),
        ("valid", "u1"),
        ("alarms", "<u2"),
        ("received", "<f8"),
    ]
)


def alarm_mask(alarms: Iterable[str]) -> int:
    """The bit set of alarm names; ValueError for a name that is not a domain alarm."""
    mask = 0
    for name in alarms:
        bit = _ALARM_BIT.get(name)
        if bit is None:
            raise ValueError(f"unknown alarm {name!r}")
        mask |= bit
    return mask


@dataclass(frozen=True, slots=True)
class PackedFixes:
    """Fixes as packed records (``RECORD``), already checked by whoever received them.

    They become columns when the batch they join is put together: one conversion for
    the whole batch rather than one for every small message.
    """

    data: bytes

    def __post_init__(self) -> None:
        if len(self.data) % RECORD.itemsize:
            raise ValueError("packed fixes of a wrong size")

    def __len__(self) -> int:
        return len(self.data) // RECORD.itemsize


def _opt(x: float) -> float | None:
    return None if x != x else x


@dataclass(frozen=True, slots=True, eq=False)
class FixBatch:
    """Fixes in arrival order, one numpy column per field."""

    device: I64
    t: F64
    lat: F64
    lon: F64
    acc: F64
    speed: F64
    heading: F64
    battery: F64
    valid: npt.NDArray[np.bool_]
    alarms: npt.NDArray[np.uint16]
    received: F64

    def __post_init__(self) -> None:
        n = len(self.device)
        for name in self.__slots__:
            if len(getattr(self, name)) != n:
                raise ValueError(f"column {name} has {len(getattr(self, name))} rows, not {n}")

    def __len__(self) -> int:
        return len(self.device)

    @classmethod
    def empty(cls) -> FixBatch:
        """No fixes."""
        return cls.of(())

    @classmethod
    def of(cls, fixes: Sequence[Fix]) -> FixBatch:
        """Fix objects as columns; ValueError for an alarm that is not a domain alarm."""
        n = len(fixes)

        def floats(values: Iterable[float | None]) -> F64:
            return np.fromiter((_NAN if v is None else v for v in values), np.float64, n)

        return cls(
            device=np.fromiter((f.device_id for f in fixes), np.int64, n),
            t=np.fromiter((f.fix_time for f in fixes), np.float64, n),
            lat=np.fromiter((f.lat for f in fixes), np.float64, n),
            lon=np.fromiter((f.lon for f in fixes), np.float64, n),
            acc=floats(f.accuracy_m for f in fixes),
            speed=floats(f.speed_mps for f in fixes),
            heading=floats(f.heading_deg for f in fixes),
            battery=floats(f.battery_pct for f in fixes),
            valid=np.fromiter((bool(f.valid) for f in fixes), np.bool_, n),
            alarms=np.fromiter((alarm_mask(f.alarms) for f in fixes), np.uint16, n),
            received=floats(f.received_at for f in fixes),
        )

    @classmethod
    def positions(
        cls,
        device: npt.ArrayLike,
        t: npt.ArrayLike,
        lat: npt.ArrayLike,
        lon: npt.ArrayLike,
        acc: npt.ArrayLike,
    ) -> FixBatch:
        """Valid positions with nothing else known (NaN accuracy: unknown), received on time."""
        times = np.asarray(t, dtype=np.float64)
        n = len(times)
        nan = np.full(n, _NAN)
        return cls(
            device=np.asarray(device, dtype=np.int64),
            t=times,
            lat=np.asarray(lat, dtype=np.float64),
            lon=np.asarray(lon, dtype=np.float64),
            acc=np.asarray(acc, dtype=np.float64),
            speed=nan,
            heading=nan,
            battery=nan,
            valid=np.ones(n, dtype=np.bool_),
            alarms=np.zeros(n, dtype=np.uint16),
            received=times,
        )

    @classmethod
    def from_records(cls, data: bytes) -> FixBatch:
        """Packed records (``RECORD``) as columns; nothing is checked here."""
        r = np.frombuffer(data, dtype=RECORD)
        return cls(
            device=r["device"].astype(np.int64),
            t=r["t"].astype(np.float64),
            lat=r["lat"].astype(np.float64),
            lon=r["lon"].astype(np.float64),
            acc=r["acc"].astype(np.float64),
            speed=r["speed"].astype(np.float64),
            heading=r["heading"].astype(np.float64),
            battery=r["battery"].astype(np.float64),
            valid=r["valid"] != 0,
            alarms=r["alarms"].astype(np.uint16),
            received=r["received"].astype(np.float64),
        )

    @classmethod
    def concat(cls, parts: Sequence[FixBatch | PackedFixes]) -> FixBatch:
        """The parts one after another (packed parts next to each other converted at once)."""
        batches: list[FixBatch] = []
        packed: list[bytes] = []
        for part in parts:
            if isinstance(part, PackedFixes):
                packed.append(part.data)
                continue
            if packed:
                batches.append(cls.from_records(b"".join(packed)))
                packed = []
            batches.append(part)
        if packed:
            batches.append(cls.from_records(b"".join(packed)))
        if len(batches) == 1:
            return batches[0]
        if not batches:
            return cls.empty()
        return cls(*(np.concatenate([getattr(b, name) for b in batches]) for name in cls.__slots__))

    def take(self, idx: npt.ArrayLike) -> FixBatch:
        """The fixes at these positions (indices or a mask), in that order."""
        return FixBatch(*(getattr(self, name)[idx] for name in self.__slots__))

    def fix(self, i: int) -> Fix:
        """The ``i``-th fix as a ``Fix``."""
        return Fix(
            device_id=int(self.device[i]),
            fix_time=float(self.t[i]),
            lat=float(self.lat[i]),
            lon=float(self.lon[i]),
            accuracy_m=_opt(float(self.acc[i])),
            speed_mps=_opt(float(self.speed[i])),
            heading_deg=_opt(float(self.heading[i])),
            battery_pct=_opt(float(self.battery[i])),
            valid=bool(self.valid[i]),
            alarms=ALARM_SETS[int(self.alarms[i])],
            received_at=_opt(float(self.received[i])),
        )

    def __iter__(self) -> Iterator[Fix]:
        return (self.fix(i) for i in range(len(self)))

    def received_or_fix_time(self) -> F64:
        """When each fix was received, its fix time where that is unknown."""
        return np.where(np.isnan(self.received), self.t, self.received)
