"""Workload W1 of docs/workloads.md: engine decisions per second, checked against brute force.

The fixes are generated exactly as docs/workloads.md prescribes (its SHA-256 check
is a unit test). The reference evaluates every fix against the partner's
latest fix with the full GeographicLib geodesic and the scalar tier rule; the
engine's tier transitions must equal it, or the run is reported incorrect.
"""

from __future__ import annotations

import hashlib
import os
import resource
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from geographiclib.geodesic import Geodesic

from bangpae.domain.batch import FixBatch
from bangpae.domain.geodesy import step_local
from bangpae.domain.model import Device, DeviceKind, EventKind, Order, Person, PersonKind, Tier
from bangpae.domain.tiers import next_tier
from bangpae.engine.engine import Engine

EPOCH = 1_800_000_000.0
ACCURACY_M = 5.0
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class W1Fixes:
    """All fixes of a W1 run: ``lat[t, k]`` is device k's fix at tick t (as sent)."""

    pairs: int
    lat: F64
    lon: F64

    @property
    def ticks(self) -> int:
        """Number of ticks."""
        return int(self.lat.shape[0])

    def sha256(self) -> str:
        """SHA-256 of the fixes as ``%.6f,%.6f`` lines in feed order (docs/workloads.md)."""
        h = hashlib.sha256()
        for t in range(self.ticks):
            h.update(
                "".join(
                    f"{a:.6f},{b:.6f}\n"
                    for a, b in zip(self.lat[t].tolist(), self.lon[t].tolist(), strict=True)
                ).encode()
            )
        return h.hexdigest()


def generate(pairs: int) -> W1Fixes:
    """The W1 fixes for ``pairs`` pairs, bit for bit as docs/workloads.md prescribes."""
    m = pairs
    ticks = 10 if m >= 100_000 else 60
    rng = np.random.default_rng(42)
    vlat = rng.uniform(37.45, 37.65, m)
    vlon = rng.uniform(126.85, 127.15, m)
    dist = rng.uniform(0, 5000, m)
    bearing = rng.uniform(0, 360, m)
    olat, olon = step_local(vlat, vlon, dist, bearing)
    lat, lon = np.empty(2 * m), np.empty(2 * m)
    lat[0::2], lat[1::2], lon[0::2], lon[1::2] = olat, vlat, olon, vlon
    heading = rng.uniform(0, 360, 2 * m)
    speed = np.full(2 * m, 1.4)
    speed[rng.permutation(2 * m)[: 2 * m // 4]] = 10.0
    out_lat, out_lon = np.empty((ticks, 2 * m)), np.empty((ticks, 2 * m))
    for t in range(ticks):
        if t:
            heading = (heading + rng.normal(0, 20, 2 * m)) % 360
            lat, lon = step_local(lat, lon, speed, heading)
        out_lat[t], out_lon[t] = np.round(lat, 6), np.round(lon, 6)
    return W1Fixes(m, out_lat, out_lon)


def _evaluations(f: W1Fixes) -> Iterator[tuple[int, bool, F64, F64, F64, F64]]:
    """Each tick's two evaluation rounds: offenders vs last tick's victims, then victims."""
    for t in range(f.ticks):
        olat, olon = f.lat[t, 0::2], f.lon[t, 0::2]
        if t > 0:  # at tick 0 the offender's fix comes before any victim fix
            yield t, True, olat, olon, f.lat[t - 1, 1::2], f.lon[t - 1, 1::2]
        yield t, False, olat, olon, f.lat[t, 1::2], f.lon[t, 1::2]


def reference_distances(f: W1Fixes) -> list[tuple[int, bool, F64]]:
    """Exact GeographicLib distances of every evaluation (cached on disk: it is slow)."""
    key = hashlib.sha256(f.lat.tobytes() + f.lon.tobytes()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / f"bangpae-w1-{f.pairs}-{key}.npz"
    rounds = list(_evaluations(f))
    if cache.exists():
        data = np.load(cache)
        return [(t, off, data[f"d{i}"]) for i, (t, off, *_r) in enumerate(rounds)]
    g = Geodesic.WGS84
    out, arrays = [], {}
    for i, (t, off, a_lat, a_lon, b_lat, b_lon) in enumerate(rounds):
        d = np.fromiter(
            (
                g.Inverse(a, b, c, e, Geodesic.DISTANCE)["s12"]
                for a, b, c, e in zip(
                    a_lat.tolist(), a_lon.tolist(), b_lat.tolist(), b_lon.tolist(), strict=True
                )
            ),
            np.float64,
            len(a_lat),
        )
        out.append((t, off, d))
        arrays[f"d{i}"] = d
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, cache)
    return out


def reference_transitions(f: W1Fixes) -> tuple[Counter[tuple[int, int, bool, int, int]], int, int]:
    """Brute force: transitions (pair, tick, offender's fix?, from, to), and raw 600 m counts."""
    u = 2 * ACCURACY_M
    tier = [Tier.CLEAR] * f.pairs
    inside = [False] * f.pairs
    changes: Counter[tuple[int, int, bool, int, int]] = Counter()
    enter = leave = 0
    for t, off, d in reference_distances(f):
        for i, di in enumerate(d.tolist()):
            new = next_tier(tier[i], di - u, 2000.0, 600.0, 100.0, 50.0)
            if new != tier[i]:
                changes[(i, t, off, int(tier[i]), int(new))] += 1
                tier[i] = new
            now_in = di <= 600.0
            if now_in != inside[i]:
                enter += now_in
                leave += not now_in
                inside[i] = now_in
    return changes, enter, leave


def _build(pairs: int) -> Engine:
    """An engine with W1's people, devices (id = device index + 1) and orders (id = pair + 1)."""
    e = Engine()
    e.load(
        [
            Person(k + 1, PersonKind.OFFENDER if k % 2 == 0 else PersonKind.VICTIM, "")
            for k in range(2 * pairs)
        ],
        [Device(k + 1, f"W1-{k}", DeviceKind.PHONE, "api", k + 1) for k in range(2 * pairs)],
        [Order(id=i + 1, offender_id=2 * i + 1, victim_id=2 * i + 2) for i in range(pairs)],
    )
    return e


def run_once(f: W1Fixes, store: str) -> dict[str, Any]:
    """Feed every tick to a fresh engine (and store), timing each tick's batch."""
    engine = _build(f.pairs)
    n = 2 * f.pairs
    ids = np.arange(1, n + 1, dtype=np.int64)
    acc = np.full(n, ACCURACY_M)
    st = None
    tmpdir = None
    if store == "sqlite":
        from bangpae.adapters.crypto import FieldCipher, new_key
        from bangpae.adapters.store import Store

        tmpdir = tempfile.TemporaryDirectory(prefix="bangpae-w1-")
        # with a data key, as the service runs: positions are sealed as they are stored
        st = Store(f"sqlite:///{tmpdir.name}/w1.sqlite", cipher=FieldCipher([new_key()]))
        st.migrate()
        for k in range(1, n + 1, 5000):  # people and devices the fixes refer to
            with st.engine.begin() as c:
                c.exec_driver_sql(
                    "INSERT INTO people (id, kind, name, created_at) VALUES (?, ?, '', 0)",
                    [
                        (j, "offender" if j % 2 else "victim")
                        for j in range(k, min(k + 5000, n + 1))
                    ],
                )
                c.exec_driver_sql(
                    "INSERT INTO devices (id, identifier, kind, protocol, person_id, created_at)"
                    " VALUES (?, ?, 'phone', 'api', ?, 0)",
                    [(j, f"W1-{j}", j) for j in range(k, min(k + 5000, n + 1))],
                )
    batch_s: list[float] = []
    events = []
    cpu0 = time.process_time()
    for t in range(f.ticks):
        now = EPOCH + t
        times = np.full(n, now)
        t0 = time.perf_counter()
        batch = FixBatch.positions(ids, times, f.lat[t], f.lon[t], acc)
        if st is not None:
            st.append_fixes(batch)
        events += engine.ingest(batch, now)
        batch_s.append(time.perf_counter() - t0)
    cpu = time.process_time() - cpu0
    if st is not None:
        stored = st.count_fixes()
        st.close()
        assert tmpdir is not None
        tmpdir.cleanup()
        assert stored == n * f.ticks, f"{stored} fixes stored of {n * f.ticks}"
    got: Counter[tuple[int, int, bool, int, int]] = Counter()
    for e in events:
        if e.kind == EventKind.TIER_CHANGED:
            assert e.order_id is not None and e.device_id is not None
            assert e.tier_from is not None and e.tier_to is not None
            got[
                (
                    e.order_id - 1,
                    int(round(e.at - EPOCH)),
                    e.device_id % 2 == 1,
                    int(e.tier_from),
                    int(e.tier_to),
                )
            ] += 1
    per_fix_ms = [1000.0 * s / n for s in batch_s]
    return {
        "seconds": sum(batch_s),
        "cpu_s": cpu,
        "events": len(events),
        "transitions": got,
        "per_fix_ms": per_fix_ms,
        "batch_ms": [1000.0 * s for s in batch_s],
        "bytes_per_pair": engine.bytes_per_pair(),
    }


def bench_w1(pairs: int, store: str, runs: int = 3) -> list[dict[str, Any]]:
    """Run W1 ``runs`` times; one JSON-ready summary line (medians, with min and max)."""
    f = generate(pairs)
    ref, enter, leave = reference_transitions(f)
    results = [run_once(f, store) for _ in range(runs)]
    fixes = 2 * pairs * f.ticks
    rates = [fixes / r["seconds"] for r in results]
    med = sorted(range(runs), key=lambda i: rates[i])[runs // 2]
    r = results[med]
    correct = all(x["transitions"] == ref for x in results)
    per_fix = np.asarray(r["per_fix_ms"])
    batch = np.asarray(r["batch_ms"])
    return [
        {
            "workload": "w1",
            "store": store,
            "pairs": pairs,
            "fixes": fixes,
            "runs": runs,
            "seconds": round(r["seconds"], 4),
            "fixes_per_s": round(statistics.median(rates)),
            "fixes_per_s_min": round(min(rates)),
            "fixes_per_s_max": round(max(rates)),
            "p50_ms": round(float(np.percentile(per_fix, 50)), 6),
            "p99_ms": round(float(np.percentile(per_fix, 99)), 6),
            "batch_p50_ms": round(float(np.percentile(batch, 50)), 3),
            "batch_p99_ms": round(float(np.percentile(batch, 99)), 3),
            "events": r["events"],
            "tier_transitions": sum(r["transitions"].values()),
            "reference_transitions": sum(ref.values()),
            "raw600_transitions": enter + leave,
            "raw600_enter": enter,
            "raw600_exit": leave,
            "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
            "cpu_s": round(r["cpu_s"], 3),
            "bytes_per_pair": round(r["bytes_per_pair"], 1),
            "sha256": f.sha256() if pairs <= 10_000 else None,
            "correct": correct,
        }
    ]
