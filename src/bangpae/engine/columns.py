"""The engine's numpy columns: its state by slot, and the bundles its kernel passes along.

One row (slot) per person, device and order; per batch, one entry per live fix and one
per evaluation of an order by a fix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from bangpae.domain import geodesy, tiers, track

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
I16 = npt.NDArray[np.int16]
I8 = npt.NDArray[np.int8]
B = npt.NDArray[np.bool_]

NAN = float("nan")


def grow(a: npt.NDArray[np.generic], n: int, fill: object) -> npt.NDArray[np.generic]:
    """``a`` with room for at least ``n`` rows (doubling), new rows set to ``fill``."""
    if len(a) >= n:
        return a
    out = np.full(max(n, 2 * len(a)), fill, dtype=a.dtype)
    out[: len(a)] = a
    return out


def effective(acc: F64) -> F64:
    """Accuracies as a decision uses them: capped, and unknown (NaN) counting 25 m."""
    return np.asarray(tiers.effective_accuracies(acc), dtype=np.float64)


def local_vector(lat0: F64, lon0: F64, lat1: F64, lon1: F64) -> tuple[F64, F64]:
    """East and north metres from point 0 to point 1 (local ellipsoid frame)."""
    mid = np.radians((lat0 + lat1) / 2.0)
    mr = geodesy.meridional_radius(np.degrees(mid))
    nr = geodesy.prime_vertical_radius(np.degrees(mid))
    dlon = np.radians(((lon1 - lon0) + 180.0) % 360.0 - 180.0)
    return dlon * nr * np.cos(mid), np.radians(lat1 - lat0) * mr


def group_ends(sorted_keys: I64) -> I64:
    """Positions of the last entry of each run of equal keys."""
    end = np.ones(len(sorted_keys), dtype=np.bool_)
    end[:-1] = sorted_keys[1:] != sorted_keys[:-1]
    return np.flatnonzero(end)


class Columns:
    """Per-slot numpy columns that grow as slots are added (one per entry of ``SPEC``)."""

    SPEC: ClassVar[dict[str, tuple[type, object]]] = {}

    def __init__(self) -> None:
        self.n = 0
        for name, (dtype, fill) in self.SPEC.items():
            setattr(self, name, np.full(0, fill, dtype=dtype))

    def add(self) -> int:
        """Add a slot (every column at its fill value); returns its index."""
        slot = self.n
        self.n += 1
        for name, (_dtype, fill) in self.SPEC.items():
            setattr(self, name, grow(getattr(self, name), self.n, fill))
        return slot

    def nbytes(self) -> int:
        """Bytes held by the slots in use."""
        return sum(getattr(self, name)[: self.n].nbytes for name in self.SPEC)


PERSON_COLUMNS: dict[str, tuple[type, object]] = {
    "lat": (np.float64, NAN),
    "lon": (np.float64, NAN),
    "acc": (np.float64, NAN),  # as reported (NaN: unknown)
    "t": (np.float64, -math.inf),  # fix time of the latest applied fix
    "vt": (np.float64, -math.inf),  # fix time of the latest fix with a position
    "valid": (np.bool_, False),  # latest message had a GPS fix
    "vx": (np.float64, 0.0),  # velocity east, m/s
    "vy": (np.float64, 0.0),  # velocity north, m/s
    "speed": (np.float64, NAN),
    "heading": (np.float64, NAN),
    "device": (np.int64, -1),  # device id of the latest fix
    "victim": (np.bool_, False),  # protected by some order: her track is kept
    "flagged": (np.bool_, False),  # her latest fix was implausible (flag raised once a run)
    **{f"tr_{k}": spec for k, spec in track.COLUMNS.items()},  # her trusted track
}

DEVICE_COLUMNS: dict[str, tuple[type, object]] = {
    "person": (np.int64, -1),
    "last_t": (np.float64, -math.inf),  # newest applied fix time (late detection)
    "lat": (np.float64, NAN),
    "lon": (np.float64, NAN),
    "acc": (np.float64, NAN),
    "last_msg": (np.float64, NAN),  # time of the last message of any kind
    "last_valid": (np.float64, NAN),  # time of the last valid fix
    "invalid_since": (np.float64, NAN),  # first message without a GPS fix, in a row
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
    "since": (np.float64, NAN),
    "distance": (np.float64, NAN),
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
    "near_margin": (np.float32, NAN),  # the margin to his cell at the last decision
}


class PersonColumns(Columns):
    """One row per person: the latest fix applied, and her trusted track (``tr_``)."""

    SPEC = PERSON_COLUMNS
    lat: F64
    lon: F64
    acc: F64
    t: F64
    vt: F64
    valid: B
    vx: F64
    vy: F64
    speed: F64
    heading: F64
    device: I64
    victim: B
    flagged: B
    tr_lat: F64
    tr_lon: F64
    tr_acc: F32
    tr_t: F64
    tr_n: I16
    tr_span: F32
    tr_burst_n: I16


class DeviceColumns(Columns):
    """One row per device: its person, last position and the state of its timers."""

    SPEC = DEVICE_COLUMNS
    person: I64
    last_t: F64
    lat: F64
    lon: F64
    acc: F64
    last_msg: F64
    last_valid: F64
    invalid_since: F64
    offline_flag: B
    nofix_flag: B
    offline_after: F64
    no_fix_after: F64


class OrderColumns(Columns):
    """One row per order: its parameters, live tier and what she is told and shown."""

    SPEC = ORDER_COLUMNS
    id: I64
    off: I64
    vic: I64
    notify: F64
    reveal: F64
    keep: F64
    hyst: F64
    stale: F64
    valid_from: F64
    valid_until: F64
    tier: I8
    base: I8
    since: F64
    distance: F64
    approach_armed: B
    victim_stale_flag: B
    misuse_count: I8
    misuse_flag: B
    misuse_paused: B
    misuse_close: F32
    gy: F32
    gx: F32
    told: I8
    shown: I8
    disclosed: B
    near_margin: F32


@dataclass(frozen=True, slots=True)
class Fixes:
    """The live fixes of a batch, in arrival order, one entry per fix.

    ``device[idx[j]]`` is the device of fix ``j`` (``device`` is the batch's own column,
    ``idx`` the positions of the live fixes in it).
    """

    person: I64  # person slot
    deg: I64  # how many orders the person is party to
    t: F64
    lat: F64
    lon: F64
    acc: F64
    valid: B
    vx: F64  # velocity east, m/s
    vy: F64  # velocity north, m/s
    idx: I64
    device: npt.NDArray[np.generic]


class Her:
    """Per fix of a batch: the protected person's trusted track as it stands after it."""

    def __init__(self, k: int) -> None:
        self.lat = np.full(k, NAN)
        self.lon = np.full(k, NAN)
        self.acc = np.full(k, NAN)
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
class Seen:
    """Per evaluation: what she may be told (``docs/disclosure.md``)."""

    told_margin: F64  # distance from her trusted point to his cell, less every doubt
    near_margin: F64  # the same from his last known fix, fresh or not (NaN: unknown)
    told_ok: B  # both her trusted point and his fix are fresh
    disclosable: B  # confirmed track, best estimate within reveal
    best: F64  # the best estimate of the distance: his fix to her trusted point
    best_margin: F64  # the same less both accuracies (breach as she is shown it)
    own: B  # the evaluation is of her own valid fix
    plausible: B
    burst: B


@dataclass(frozen=True, slots=True)
class Evaluations:
    """One entry per evaluation: fix ``ej`` of a party re-evaluating order slot ``eo``."""

    eo: I64
    ej: I64
    both: B  # both parties' fixes are fresh: the distance is known
    off_fresh: B
    vic_fresh: B
    dist: F64  # geodesic distance of the two fixes (NaN unless ``both``)
    margin: F64  # ``dist`` less both accuracies
    ttb: F64  # seconds to a predicted breach of keep-away (inf: not closing)
    seen: Seen
