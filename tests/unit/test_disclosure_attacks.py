"""Attacks on the disclosure boundary, by whoever holds her phone (docs/disclosure.md).

Each attacker controls her reported positions and accuracies. What they learn is
measured, not just whether a request is refused: every probe runs against many
*candidate* positions of his at once (one order per candidate, one engine), and the
candidates whose transcript (everything she was shown, and every notice she got)
matches the true one are the positions the attacker cannot rule out. The best any
estimator can do is the centre of that set; its worst-case error is at least half
the set's diameter.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
from geographiclib.geodesic import Geodesic
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bangpae.domain import coarse, geodesy
from bangpae.domain.model import Device, DeviceKind, EventKind, Fix, Order, Person, PersonKind, Tier
from bangpae.engine.engine import Engine
from bangpae.services.auth import Principal
from bangpae.services.queries import victim_view
from tests.scenario import T0

HIM = (37.5663, 126.9779)
VICTIM = 1
TRACKER, APP = 10, 11  # her issued tracker and her phone's app
HER = Principal(1, "her", "victim", VICTIM)


def at(distance_m: float, bearing: float, origin: tuple[float, float] = HIM) -> tuple[float, float]:
    g = Geodesic.WGS84.Direct(origin[0], origin[1], bearing, distance_m)
    return g["lat2"], g["lon2"]


def dist(a: tuple[float, float], b: tuple[float, float]) -> float:
    return geodesy.geodesic_distance_m(a[0], a[1], b[0], b[1])


class Candidates:
    """One engine holding one order per candidate position of his, all against her."""

    def __init__(self, positions: list[tuple[float, float]], grid: tuple[float, float]) -> None:
        self.positions = positions
        self.engine = Engine()
        people = [Person(VICTIM, PersonKind.VICTIM, "v")]
        devices = [
            Device(TRACKER, "T", DeviceKind.WATCH, "api", VICTIM),
            Device(APP, "P", DeviceKind.PHONE, "api", VICTIM),
        ]
        self.orders = []
        for i in range(len(positions)):
            off = 100 + i
            people.append(Person(off, PersonKind.OFFENDER, "o"))
            devices.append(Device(1000 + i, f"A{i}", DeviceKind.ANKLE_MONITOR, "api", off))
            self.orders.append(Order(id=1 + i, offender_id=off, victim_id=VICTIM))
        self.engine.load(people, devices, self.orders)
        # Every candidate on the true offender's grid: the attacker is given its offset.
        n = len(positions)
        self.engine.orders.gy[:n], self.engine.orders.gx[:n] = grid
        self.transcripts: list[list[Any]] = [[] for _ in positions]

    def him(self, t: float) -> None:
        """Each candidate reports where he is (they stand still)."""
        fixes = [Fix(1000 + i, t, p[0], p[1], 5.0) for i, p in enumerate(self.positions)]
        self._ingest(fixes, t)

    def her(self, device: int, t: float, pos: tuple[float, float], acc: float | None) -> None:
        """A report of hers (forged or real), then what she reads."""
        self._ingest([Fix(device, t, pos[0], pos[1], acc)], t)

    def _ingest(self, fixes: list[Fix], t: float) -> None:
        for e in self.engine.ingest(fixes, t):
            if e.kind == EventKind.SHOWN_TIER_CHANGED:  # the notices on her lock screen
                self.transcripts[e.order_id - 1].append(("notice", e.tier_to))
        status, _reads = victim_view(self.engine, HER, t, self.orders)
        for entry in status["orders"]:
            shown = {k: v for k, v in entry.items() if k != "order_id"}
            self.transcripts[entry["order_id"] - 1].append(shown)

    def consistent(self, truth: int) -> list[tuple[float, float]]:
        """The candidates the attacker cannot tell from the truth."""
        return [
            p
            for p, tr in zip(self.positions, self.transcripts, strict=True)
            if tr == self.transcripts[truth]
        ]


def candidate_grid(spacing_m: float, half_m: float) -> list[tuple[float, float]]:
    """Positions on a square grid around HIM (HIM itself first)."""
    steps = np.arange(-half_m, half_m + 1e-6, spacing_m)
    out = [HIM]
    for north in steps:
        for east in steps:
            if north or east:
                out.append(geodesy.offset_m(HIM[0], HIM[1], float(north), float(east)))
    return out


def learned(c: Candidates) -> tuple[float, float]:
    """(worst-case error of the best estimate, error of the centroid estimate), metres."""
    pts = c.consistent(0)
    lat = float(np.mean([p[0] for p in pts]))
    lon = float(np.mean([p[1] for p in pts]))
    worst = max(dist((lat, lon), p) for p in pts)
    return worst, dist((lat, lon), HIM)


GRID = coarse.grid_offset(b"attack-test", 7)


def test_teleporting_prober_learns_no_finer_than_his_cell() -> None:
    # ~90 forged reports in 7 s, rings of distances and every bearing, any accuracy
    c = Candidates(candidate_grid(200.0, 1400.0), GRID)
    t = T0
    c.him(t)
    rng = np.random.default_rng(1)
    for k in range(90):
        t += 0.08
        d = float(rng.uniform(700.0, 2600.0))
        pos = at(d, float(rng.uniform(0, 360)))
        c.her(APP if k % 2 else TRACKER, t, pos, float(rng.choice([3.0, 50.0, 5000.0])))
    worst, centroid = learned(c)
    # every position of his cell stays possible: no estimate is surely within 500 m
    assert worst >= coarse.BOUND_M, (worst, centroid)


def test_cycling_prober_loops_and_learns_no_finer_than_his_cell() -> None:
    # a realistic loop at 5 m/s around him at about 1.3 km, a report every 0.5 s, 193 s
    c = Candidates(candidate_grid(200.0, 1400.0), GRID)
    t = T0
    c.him(t)
    radius, speed = 1300.0, 5.0
    for k in range(386):
        t += 0.5
        angle = math.degrees(speed * (t - T0) / radius)
        if k % 40 == 0:
            c.him(t)  # he keeps reporting, standing still
        c.her(TRACKER, t, at(radius, angle), 5.0)
    worst, _centroid = learned(c)
    assert worst >= coarse.BOUND_M


def test_a_prober_claiming_very_poor_accuracy_never_sees_him_beyond_the_reveal_radius() -> None:
    for d, acc in itertools.product(
        (900.0, 800.0, 770.0, 724.0, 650.0, 601.0, 590.0), (5.0, 5000.0)
    ):
        c = Candidates([HIM], GRID)
        for k in range(3):  # a confirmed, still track of hers at d
            c.him(T0 + 15 * k)
            c.her(TRACKER, T0 + 15 * k + 1, at(d, 200.0), acc)
        view = c.transcripts[0][-1]
        assert (view["offender"] is not None) is (d <= 600.0), (d, acc, view)
        if acc > 100 and 600 < d <= 705:  # warned all the same: doubt counts toward danger
            assert c.engine.tier_of(1) == Tier.REVEAL and view["tier"] == "reveal"


def test_one_forged_jump_from_her_app_reveals_nothing_and_pauses_the_disclosure() -> None:
    c = Candidates([HIM], GRID)
    t = T0
    for _ in range(4):  # her tracker: 1.5 km from him, walking
        t += 15.0
        c.him(t)
        c.her(TRACKER, t, at(1500.0, 0.0), 5.0)
    events = c.engine.ingest([Fix(APP, t + 1, *at(500.0, 0.0), 5.0)], t + 1)
    status, reads = victim_view(c.engine, HER, t + 1, c.orders)
    assert status["orders"][0]["offender"] is None and reads == []
    misuse = [e for e in events if e.kind == EventKind.DISCLOSURE_MISUSE]
    assert [e.data["reason"] for e in misuse] == ["jump"]
    flagged = [e for e in events if e.kind == EventKind.POSITION_IMPLAUSIBLE]
    assert [e.device_id for e in flagged] == [APP]
    assert c.engine.order_view(1).misuse_paused  # type: ignore[union-attr]
    # walking on from there fools nothing either: still judged against her track
    for k in range(3):
        c.her(APP, t + 2 + k, at(480.0 - 10 * k, 0.0), 5.0)
        assert c.transcripts[0][-1]["offender"] is None


def test_a_real_walk_in_reveals_him_and_her_tracker_and_app_agree_as_one_track() -> None:
    c = Candidates([HIM], GRID)
    t = T0
    c.him(t)
    shown, events = [], []
    for k, d in enumerate(range(1510, 400, -20)):  # 20 m every 15 s: a brisk walk
        t += 15.0
        if k % 4 == 0:
            c.him(t)
        events += c.engine.ingest([Fix(APP if k % 3 else TRACKER, t, *at(float(d), 10.0), 8.0)], t)
        status, _ = victim_view(c.engine, HER, t, c.orders)
        shown.append((d, status["orders"][0]["offender"] is not None))
    assert not any(s for d, s in shown if d > 600)
    # shown from the first report within 600 m; her third step closing in while she sees
    # him pauses it (the guard: following him is not what the view is for)
    assert [d for d, s in shown if s] == [590, 570, 550]
    misuse = [e for e in events if e.kind == EventKind.DISCLOSURE_MISUSE]
    assert [e.data["reason"] for e in misuse] == ["approach"]
    assert not [e for e in events if e.kind == EventKind.POSITION_IMPLAUSIBLE]


def test_an_operators_pause_hides_a_revealed_position_at_once_and_a_lift_shows_it_again() -> None:
    c = Candidates([HIM], GRID)
    t = T0
    for _ in range(3):  # she stands 400 m from him: shown
        t += 15.0
        c.him(t)
        c.her(TRACKER, t, at(400.0, 0.0), 5.0)
    assert c.transcripts[0][-1]["offender"] is not None
    c.engine.set_misuse_pause(1, True)  # no fix in between: the very next read
    status, reads = victim_view(c.engine, HER, t, c.orders)
    [entry] = status["orders"]
    assert entry["offender"] is None and entry["position_paused"] and reads == []
    assert entry["tier"] == "reveal" and entry["distance_m"] % 500 == 0
    c.engine.set_misuse_pause(1, False)
    t += 15.0
    c.him(t)  # shown again from the next decision
    assert c.transcripts[0][-1]["offender"] is not None


def test_a_burst_of_reports_while_near_pauses_the_disclosure() -> None:
    c = Candidates([HIM], GRID)
    t = T0
    c.him(t)
    found = []
    for k in range(120):  # two a second, from 1.2 km: beyond any tracker's pace
        t += 0.5
        found += c.engine.ingest([Fix(TRACKER, t, *at(1200.0 - k * 0.5, 90.0), 5.0)], t)
    reasons = [e.data["reason"] for e in found if e.kind == EventKind.DISCLOSURE_MISUSE]
    assert reasons == ["burst"]


def test_a_tracker_reporting_every_second_is_no_burst() -> None:
    c = Candidates([HIM], GRID)
    t = T0
    c.him(t)
    found = []
    for k in range(120):
        t += 1.0
        found += c.engine.ingest([Fix(TRACKER, t, *at(1200.0 + (k % 2), 90.0), 5.0)], t)
    assert [e for e in found if e.kind == EventKind.DISCLOSURE_MISUSE] == []


def test_closing_on_him_by_her_own_movement_while_near_pauses_the_disclosure() -> None:
    c = Candidates([HIM], GRID)
    t = T0
    found = []
    for k, d in enumerate(range(1900, 600, -50)):  # a steady approach from 1.9 km
        t += 10.0
        if k % 6 == 0:
            c.him(t)
        found += c.engine.ingest([Fix(TRACKER, t, *at(float(d), 45.0), 5.0)], t)
    misuse = [e for e in found if e.kind == EventKind.DISCLOSURE_MISUSE]
    assert [e.data["reason"] for e in misuse] == ["approach"]
    assert misuse[0].data["closed_m"] >= 1000.0


# -- the property: beyond the reveal radius, she cannot tell his positions in a cell apart --

Step = tuple[int, float, float, float | None, float]  # device, north, east, accuracy, dt


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[tuple[float, float], tuple[float, float], list[Step]]:
    """Two positions of his in one cell at least 500 m apart, and a track of her reports."""
    ox, oy = draw(st.floats(0.05, 0.95)), draw(st.floats(0.05, 0.95))
    lat0, lon0 = HIM
    s, n, w, e = (
        float(x[0])
        for x in coarse.cells(
            np.array([lat0]), np.array([lon0]), np.array([GRID[0]]), np.array([GRID[1]])
        )
    )
    p = (s + (n - s) * oy, w + (e - w) * ox)
    qy, qx = draw(st.floats(0.01, 0.99)), draw(st.floats(0.01, 0.99))
    q = (s + (n - s) * qy, w + (e - w) * qx)
    assume(dist(p, q) >= coarse.BOUND_M)
    steps = draw(
        st.lists(
            st.tuples(
                st.sampled_from([TRACKER, APP]),
                st.floats(-4000.0, 4000.0),
                st.floats(-4000.0, 4000.0),
                st.one_of(st.none(), st.floats(0.0, 10_000.0)),
                st.sampled_from([0.5, 1.0, 5.0, 15.0, 60.0]),
            ),
            min_size=5,
            max_size=40,
        )
    )
    return p, q, steps


@given(scenarios())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
def test_beyond_the_reveal_radius_nothing_she_receives_tells_two_positions_in_his_cell_apart(
    scenario: tuple[tuple[float, float], tuple[float, float], list[Step]],
) -> None:
    p, q, steps = scenario
    positions = []
    for _dev, north, east, _acc, _dt in steps:
        positions.append(geodesy.offset_m(HIM[0], HIM[1], north, east))
    # keep the true distance beyond the reveal radius (and its hysteresis) for both
    assume(all(min(dist(x, p), dist(x, q)) > 650.0 for x in positions))
    c = Candidates([p, q], GRID)
    t = T0
    c.him(t)
    for (dev, _n, _e, acc, dt), pos in zip(steps, positions, strict=True):
        t += dt
        if dt >= 5.0:
            c.him(t)
        c.her(dev, t, pos, acc)
    assert c.transcripts[0] == c.transcripts[1]
    assert all(v["offender"] is None for v in c.transcripts[0] if isinstance(v, dict))
