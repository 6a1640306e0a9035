"""Red-team attacks on the disclosure boundary (docs/disclosure.md), measured.

Each test here asserts what the design claims against an attack that once broke it
(the docstring says how, and what the attacker got then); a failing assertion's message
carries the figures (metres of error, seconds, reports) the attacker would get.

The attacker holds her phone: they control the app's reports (position, accuracy and
``fix_time``, which the API accepts up to ``FUTURE_S`` = 300 s in the future) but not her
issued tracker, and not his device.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bangpae.domain import coarse, geodesy, track
from bangpae.domain.model import EventKind, Fix
from bangpae.domain.retention import MAX_FUTURE_S as FUTURE_S
from bangpae.services.queries import victim_view
from tests.unit.test_disclosure_attacks import (
    APP,
    GRID,
    HER,
    HIM,
    T0,
    TRACKER,
    Candidates,
    at,
    dist,
)


class Probe(Candidates):
    """The attack harness, with the timers (signal lost) and the misuse events recorded."""

    def __init__(self, positions: list[tuple[float, float]], grid: tuple[float, float]) -> None:
        super().__init__(positions, grid)
        self.events: list[Any] = []

    def _ingest(self, fixes: list[Fix], t: float, now: float | None = None) -> None:
        now = t if now is None else now
        found = self.engine.ingest(fixes, now)
        self._record(found, now)

    def _record(self, found: list[Any], now: float) -> None:
        self.events += found
        for e in found:
            if e.kind == EventKind.SHOWN_TIER_CHANGED:
                self.transcripts[e.order_id - 1].append(("notice", e.tier_to))
        status, _reads = victim_view(self.engine, HER, now, self.orders)
        for entry in status["orders"]:
            shown = {k: v for k, v in entry.items() if k != "order_id"}
            self.transcripts[entry["order_id"] - 1].append(shown)

    def her_at(
        self, device: int, fix_time: float, now: float, pos: tuple[float, float], acc: float | None
    ) -> None:
        """A report of hers whose fix_time the app chose (``now`` is the server's clock)."""
        self._ingest([Fix(device, fix_time, pos[0], pos[1], acc)], fix_time, now)

    def tick(self, now: float) -> None:
        self._record(self.engine.tick(now), now)

    def last_view(self, i: int = 0) -> dict[str, Any]:
        return [v for v in self.transcripts[i] if isinstance(v, dict)][-1]

    def misuse(self, order_id: int = 1) -> list[str]:
        return [
            e.data["reason"]
            for e in self.events
            if e.kind == EventKind.DISCLOSURE_MISUSE and e.order_id == order_id
        ]


def cell_of(p: tuple[float, float]) -> tuple[float, float, float, float]:
    s, n, w, e = (
        float(x[0])
        for x in coarse.cells(
            np.array([p[0]]), np.array([p[1]]), np.array([GRID[0]]), np.array([GRID[1]])
        )
    )
    return s, n, w, e


def points_in_cell(p: tuple[float, float], k: int) -> list[tuple[float, float]]:
    """p first, then a k x k lattice of points inside p's cell."""
    s, n, w, e = cell_of(p)
    out = [p]
    for i in range(k):
        for j in range(k):
            out.append((s + (n - s) * (i + 0.5) / k, w + (e - w) * (j + 0.5) / k))
    return out


def spread(pts: list[tuple[float, float]]) -> tuple[float, float]:
    """(worst-case error of the centroid estimate, error of the centroid from pts[0])."""
    lat = float(np.mean([p[0] for p in pts]))
    lon = float(np.mean([p[1] for p in pts]))
    return max(dist((lat, lon), p) for p in pts), dist((lat, lon), pts[0])


# -- 1. fix_time in the future: a forged report is "plausible" from 20 km away ----------------


def test_a_future_dated_report_from_her_app_neither_moves_her_track_nor_reveals_him() -> None:
    """Once a leak (critical). Her trusted track judges reachability with ``fix_time - track.t``,
    and the API accepts a fix_time up to 300 s ahead: one forged report is reachable
    from up to 300 s x 69.4 m/s + 50 m = 20.9 km away. It moves the trusted track, is
    never flagged, the already-confirmed track stays confirmed and fresh (a future time
    is never stale), and his live position is shown while her tracker says 1.4 km."""
    reach = FUTURE_S * track.MAX_SPEED_MPS + track.SLACK_M
    assert reach > 20_000.0  # the budget one future-dated report gets
    c = Probe([HIM], GRID)
    t = T0
    for _ in range(4):  # her tracker: 1.4 km from him, standing still, confirmed
        t += 15.0
        c.him(t)
        c.her(TRACKER, t, at(1400.0, 0.0), 5.0)
    assert c.last_view()["offender"] is None
    # ONE report from her app: 500 m from him, fix_time now + 300 s (the API's limit)
    c.her_at(APP, t + 1 + FUTURE_S, t + 1, at(500.0, 0.0), 5.0)
    view = c.last_view()
    flagged = [e for e in c.events if e.kind == EventKind.POSITION_IMPLAUSIBLE]
    learned_err = (
        None
        if view["offender"] is None
        else dist((view["offender"]["lat"], view["offender"]["lon"]), HIM)
    )
    assert view["offender"] is None, (
        f"1 forged report (fix_time +{FUTURE_S:.0f} s) while her tracker is 1400 m away: "
        f"his position shown, error {learned_err:.1f} m; flagged={len(flagged)}, "
        f"misuse={c.misuse()}"
    )


def test_a_future_dated_breach_scan_of_his_cell_finds_nothing() -> None:
    """Once a leak (critical). Knowing only his cell (what the design concedes), the prober
    steps a lattice over it with future-dated reports (each one plausible: 5 s of
    fix_time buys 397 m), claiming 100 m accuracy. The guard pauses the order on
    'approach', but breach (d - u <= 100 m, u = her claimed 100 m + his accuracy) shows
    his position even when paused. Measured over 26 candidate positions of his."""
    cands = points_in_cell(HIM, 5)
    c = Probe(cands, GRID)
    s, n, w, e = cell_of(HIM)
    t = T0
    for _ in range(3):  # her real track: 1.4 km south of the cell, confirmed
        t += 15.0
        c.him(t)
        c.her(TRACKER, t, geodesy.offset_m(s, (w + e) / 2, -1400.0, 0.0), 5.0)
    found: dict[int, int] = {}
    errs: list[float] = []
    reports = 0
    lattice = [
        (s + (n - s) * (i + 0.5) / 4, w + (e - w) * (j + 0.5) / 4)
        for i in range(4)
        for j in (range(4) if i % 2 == 0 else range(3, -1, -1))
    ]
    for p in lattice:
        t += 5.0  # 12 reports a minute: the per-person budget
        reports += 1
        if reports % 3 == 0:
            c.him(t)
        c.her_at(APP, t + FUTURE_S, t, p, 100.0)
        for i in range(len(cands)):
            seen = c.last_view(i)["offender"]
            if i not in found and seen is not None:
                found[i] = reports
                errs.append(dist((seen["lat"], seen["lon"]), cands[i]))
    paused = sum(bool(c.misuse(i + 1)) for i in range(len(cands)))
    worst = max(found.values()) if found else None
    assert not found, (
        f"his exact position shown for {len(found)}/{len(cands)} candidate positions within "
        f"{worst} reports ({5 * (worst or 0)} s), max error {max(errs, default=0):.1f} m; "
        f"{paused} orders paused by the guard meanwhile"
    )


# -- 2. the exact tier leaks through 'signal lost' ---------------------------------------------


def test_signal_lost_does_not_tell_her_the_exact_tier_from_a_forged_point() -> None:
    """Once a leak (high). She is shown ``reveal`` from his cell (told), not from the exact rule.
    When his signal is lost, the engine turns what she is shown into ``uncertain`` only
    if the EXACT tier was reveal or breach, and the exact tier is computed from her raw
    last report, forged or not (an implausible fix moves the tier, not the track). So
    each loss of his signal answers "is he within 600 m + accuracies (+50 m hysteresis)
    of a point of her choice?". Candidates: 26 positions in his cell; her trusted point
    stays > 600 m from all of them, so nothing may tell them apart."""
    cands = points_in_cell(HIM, 5)
    c = Probe(cands, GRID)
    s, n, w, e = cell_of(HIM)
    home = geodesy.offset_m(s, (w + e) / 2, -650.0, 0.0)  # told reveal: 650 m from the cell
    assert min(dist(home, p) for p in cands) > 600.0
    t = T0
    for _ in range(3):
        t += 15.0
        c.him(t)
        c.her(TRACKER, t, home, 100.0)
    assert all(c.last_view(i)["tier"] == "reveal" for i in range(len(cands)))
    assert all(c.last_view(i)["offender"] is None for i in range(len(cands)))
    # a forged (implausible) app report at his cell's south-west quarter
    probe = (s + (n - s) * 0.3, w + (e - w) * 0.3)
    c.her(APP, t + 1, probe, 100.0)
    # his signal drops (he goes indoors): the timer fires
    c.tick(t + 1 + 121.0)
    truth = c.transcripts[0]
    same = [p for p, tr in zip(cands, c.transcripts, strict=True) if tr == truth]
    worst, err = spread(same)
    assert len(same) == len(cands), (
        f"one signal loss: {len(same)}/{len(cands)} candidate positions left; the set's "
        f"worst-case error {worst:.0f} m (< {coarse.BOUND_M:.0f} m bound), centroid "
        f"{err:.0f} m from him; tiers shown: "
        f"{sorted({c.last_view(i)['tier'] for i in range(len(cands))})}"
    )


def test_repeated_signal_losses_do_not_locate_him_inside_his_cell() -> None:
    """Once a leak (high), measured. He stands still and loses his signal now and then (indoors,
    a tunnel, a flat battery). Before each loss the prober forges one report at the
    point whose disk (600 m + her claimed 100 m + his 5 m) best halves the positions
    still possible; the tier she is shown after the loss answers. Figures after 8 losses
    over a 21 x 21 lattice of his cell (441 candidates)."""
    cands = points_in_cell(HIM, 21)
    # pick a truth not on the lattice centre
    truth_pos = cands[0]
    c = Probe(cands, GRID)
    s, n, w, e = cell_of(HIM)
    home = geodesy.offset_m(s, (w + e) / 2, -650.0, 0.0)
    t = T0
    for _ in range(3):
        t += 15.0
        c.him(t)
        c.her(TRACKER, t, home, 100.0)
    radius = 600.0 + 100.0 + 5.0
    tests = [
        geodesy.offset_m(s, w, north, east)
        for north in np.arange(-800.0, 1900.0, 100.0)
        for east in np.arange(-800.0, 1900.0, 100.0)
    ]
    history = []
    for _loss in range(8):
        same = [i for i, tr in enumerate(c.transcripts) if tr == c.transcripts[0]]
        pts = [cands[i] for i in same]
        # the test point whose disk splits the remaining set most evenly
        tl, pl = np.array(tests), np.array(pts)
        inside = (
            geodesy.fast_distances_m(tl[:, 0, None], tl[:, 1, None], pl[None, :, 0], pl[None, :, 1])
            <= radius
        ).sum(axis=1)
        best = tests[int(np.argmin(np.abs(inside - len(pts) / 2)))]
        c.her(APP, t + 1, best, 100.0)
        c.tick(t + 1 + 121.0)  # his signal is lost
        t += 300.0
        c.him(t)  # back
        c.her(TRACKER, t + 1, home, 100.0)
        t += 1
        same = [cands[i] for i, tr in enumerate(c.transcripts) if tr == c.transcripts[0]]
        history.append((len(same), round(spread(same)[0])))
    same = [cands[i] for i, tr in enumerate(c.transcripts) if tr == c.transcripts[0]]
    worst, err = spread(same)
    assert truth_pos in same
    assert worst >= coarse.BOUND_M, (
        f"after 8 signal losses: {len(same)}/{len(cands)} lattice points possible, "
        f"worst-case error of the centroid {worst:.0f} m, actual error {err:.0f} m; "
        f"(left, worst m) per loss: {history}"
    )


# -- 3. the misuse pause still answers 'within 600 m?' ------------------------------------------


def test_while_paused_the_position_paused_flag_does_not_trace_the_reveal_circle() -> None:
    """Once a leak (medium). Once the guard has paused the order, his position is withheld, but
    ``position_paused: true`` appears exactly when the best estimate is within 600 m: a
    600 m-circle oracle that needs no further closing on him (the guard has fired; it
    does not fire again). A cyclist (10 m/s, a report every 5 s, the API budget) rides a
    square 700 m outside his cell's centre on each side, never within 190 m of him."""
    cands = points_in_cell(HIM, 9)
    c = Probe(cands, GRID)
    s, n, w, e = cell_of(HIM)
    centre = ((s + n) / 2, (w + e) / 2)
    t = T0
    start = geodesy.offset_m(centre[0], centre[1], -1900.0, 0.0)
    for _ in range(3):
        t += 15.0
        c.him(t)
        c.her(TRACKER, t, start, 5.0)
    c.her(APP, t + 1, centre, 5.0)  # one forged jump: the guard pauses every order
    assert all(c.misuse(i + 1) == ["jump"] for i in range(len(cands)))
    # ride in to the square (1.2 km at 10 m/s), then once round it
    path = [geodesy.offset_m(centre[0], centre[1], -1900.0 + 50.0 * k, 0.0) for k in range(25)]
    corners = [
        (-700.0, 0.0),
        (-700.0, 700.0),
        (700.0, 700.0),
        (700.0, -700.0),
        (-700.0, -700.0),
        (-700.0, 0.0),
    ]
    for (n0, e0), (n1, e1) in zip(corners, corners[1:], strict=False):
        steps = int(max(abs(n1 - n0), abs(e1 - e0)) / 50.0)
        for k in range(steps):
            f = k / steps
            path.append(
                geodesy.offset_m(centre[0], centre[1], n0 + (n1 - n0) * f, e0 + (e1 - e0) * f)
            )
    for k, p in enumerate(path):
        t += 5.0
        if k % 6 == 0:
            c.him(t)
        c.her(TRACKER, t, p, 5.0)
    shown = sum(
        any(isinstance(v, dict) and v["offender"] is not None for v in tr) for tr in c.transcripts
    )
    same = [cands[i] for i, tr in enumerate(c.transcripts) if tr == c.transcripts[0]]
    worst, err = spread(same)
    assert worst >= coarse.BOUND_M, (
        f"paused throughout ({shown} of {len(cands)} candidates ever shown): after "
        f"{len(path)} reports ({5 * len(path)} s) {len(same)}/{len(cands)} lattice points "
        f"possible, worst-case error {worst:.0f} m, actual error {err:.0f} m"
    )


# -- 4. the approach guard does not count closing while his signal is lost ---------------------


def test_closing_on_him_while_his_signal_is_lost_is_counted() -> None:
    """Once a leak (medium). The 'approach' guard counts her closing only on evaluations where
    both fixes are fresh. She closes 1.4 km while his device is silent (>120 s: a
    tunnel, indoors); when he is back she is 450 m from him and sees his live position,
    and no misuse is raised. The same walk with his signal present is paused."""

    def run(silent: bool) -> tuple[bool, list[str]]:
        c = Probe([HIM], GRID)
        t = T0
        for _ in range(3):
            t += 15.0
            c.him(t)
            c.her(TRACKER, t, at(1850.0, 30.0), 5.0)
        for k, d in enumerate(range(1800, 440, -50)):
            t += 10.0  # 5 m/s
            if not silent and k % 3 == 0:
                c.him(t)
            c.her(TRACKER, t, at(float(d), 30.0), 5.0)
        t += 10.0
        c.him(t)  # his signal is back (or simply his next fix)
        c.her(TRACKER, t + 1, at(450.0, 30.0), 5.0)
        return c.last_view()["offender"] is not None, c.misuse()

    assert run(silent=False) == (False, ["approach"])  # the guard, as designed
    seen, misuse = run(silent=True)
    assert misuse == ["approach"] and not seen, (
        f"closed 1400 m while his signal was lost (280 s): his live position shown={seen}, "
        f"misuse raised={misuse}"
    )


# -- 5. the fr profile's withheld pre-alert reaches her as her app's reporting interval --------


def test_the_fr_profile_withholds_notify_from_her_app_interval_too() -> None:
    """Once a leak (low; profile, not position). ``fr`` shows her ``clear`` in notify and reveal
    (the pre-alert is withheld), but ``run_pursuit`` sets her app's interval from the
    engine's shown tier without the profile: the ``report_interval`` frame on her
    WebSocket switches to the pursuit interval exactly when the withheld tier starts."""
    from bangpae.domain.model import Order, Tier
    from bangpae.domain.notices import victim_tier
    from bangpae.domain.pursuit import NORMAL_INTERVAL_S
    from bangpae.services.commands import victim_interval_s

    c = Probe([HIM], GRID)
    c.orders = [Order(id=1, offender_id=100, victim_id=1, profile="fr")]
    t = T0
    for _ in range(3):
        t += 15.0
        c.him(t)
        c.her(TRACKER, t, at(1500.0, 0.0), 5.0)
    shown = c.engine.shown_of(1)
    assert shown in (Tier.NOTIFY, Tier.REVEAL)
    assert c.last_view()["tier"] == "clear" and victim_tier("fr", shown) == Tier.CLEAR
    # what run_pursuit computes for her (services/commands.py)
    interval = victim_interval_s(c.engine, 1, lambda oid: "fr")
    assert interval == NORMAL_INTERVAL_S, (
        f"fr: she is shown 'clear', yet her app is told to report every {interval} s "
        f"instead of {NORMAL_INTERVAL_S} s: the withheld pre-alert, to the second"
    )


# -- 6. a paused order is unpaused by forged reports that put him in 'breach' -----------------


def test_forged_app_reports_in_breach_do_not_show_him_on_a_paused_order() -> None:
    """Once a leak (high). The order is paused (by an operator, or the guard). Her tracker is
    really 580 m from him: his position is withheld. The exact tier is computed from her
    raw last report, forged or not, and in breach the pause is ignored: a forged,
    implausible app report within about 205 m of him (d - u <= 100 m, u = her claimed
    100 m + his 5 m) shows his live position. The prober does not know where he is in
    the 600 m disk around her: a lattice of forged reports 300 m apart covers it.
    Measured over 37 candidate positions of his within 600 m of her."""
    her_pos = at(580.0, 180.0)  # 580 m south of HIM
    cands = [HIM] + [
        geodesy.offset_m(her_pos[0], her_pos[1], north, east)
        for north in np.arange(-500.0, 501.0, 166.0)
        for east in np.arange(-500.0, 501.0, 166.0)
        if 150.0 < math.hypot(north, east) <= 590.0
    ]
    c = Probe(cands, GRID)
    t = T0
    for k in range(len(cands)):
        c.engine.set_misuse_pause(k + 1, True)  # paused by hand before anything
    for _ in range(3):
        t += 15.0
        c.him(t)
        c.her(TRACKER, t, her_pos, 5.0)
    assert all(c.last_view(i)["offender"] is None for i in range(len(cands)))
    lattice = [
        geodesy.offset_m(her_pos[0], her_pos[1], north, east)
        for north in np.arange(-450.0, 451.0, 300.0)
        for east in np.arange(-450.0, 451.0, 300.0)
    ]
    found: dict[int, int] = {}
    errs = []
    for r, p in enumerate(lattice, start=1):
        t += 5.0
        if r % 3 == 0:
            c.him(t)
        c.her(TRACKER, t, her_pos, 5.0)  # her real track stays put
        # 1 s later: reachable only within 119 m of it, so every forged report but the
        # one on her own position is implausible, and the track never moves
        c.her(APP, t + 1.0, p, 100.0)
        assert dist((c.engine.persons.tr_lat[0], c.engine.persons.tr_lon[0]), her_pos) < 1.0
        for i in range(len(cands)):
            seen = c.last_view(i)["offender"]
            if i not in found and seen is not None:
                found[i] = r
                errs.append(dist((seen["lat"], seen["lon"]), cands[i]))
    flagged = sum(1 for e in c.events if e.kind == EventKind.POSITION_IMPLAUSIBLE)
    # positions shown for a forged report that moved nothing of her track
    assert not found, (
        f"paused order: his live position shown for {len(found)}/{len(cands)} candidates "
        f"within {max(found.values())} forged reports ({5 * max(found.values())} s), "
        f"error {max(errs):.1f} m; her trusted track never moved; position_implausible "
        f"events: {flagged}"
    )
