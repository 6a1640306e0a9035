"""Her positions are evidence, not claims: one trusted track per person, across her devices.

A fix of hers is *plausible* when it is reachable from her trusted track at a speed a
person can travel (``MAX_SPEED_MPS`` after a fixed ``SLACK_M``; her claimed accuracy
never widens it). Plausible fixes extend the track; the others are kept with the fixes
and flagged (``position_implausible``) but never move it, so they are never used to
disclose his position. Every device of hers (the app, an issued watch or tracker)
feeds the same track: a forged report from the app is judged against where her
tracker says she is. A track is *confirmed* once it holds ``CONFIRM_FIXES`` fixes at
least ``CONFIRM_S`` apart, and only a confirmed, fresh track can disclose his position
(``docs/disclosure.md``). Her report rate is watched too (``BURST_MAX`` a minute).

The engine steps every protected person's track with :func:`step`, vectorised over a
batch: the r-th fix of each person in round r, so a batch decides what one fix at a
time would.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from bangpae.domain import geodesy

F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

MAX_SPEED_MPS = 250.0 / 3.6  # as the device jump rule: faster is a jump, not travel
SLACK_M = 50.0  # fixed allowance for GPS noise; never her claimed accuracy
MIN_DT_S = 1.0  # two fixes less than a second apart count as a second apart
# A fix dated further ahead of the server's clock than this is not plausible: its time is a
# claim too, and a future time would buy distance (300 s of it: 20 km) and never go stale.
MAX_AHEAD_S = 5.0
CONFIRM_FIXES = 2
CONFIRM_S = 5.0
# Report-rate guard: more fixes than this in one minute (of the clock), all her devices.
# Above one a second: a tracker or watch may report every second while he is near; her
# app is budgeted far below this by the API (12 a minute).
BURST_WINDOW_S = 60.0
BURST_MAX = 90

_NAN = math.nan
# The state of a person's track, one numpy column each (the engine keeps them per person;
# narrow types where precision allows, since every person has a row).
COLUMNS: dict[str, tuple[type, object]] = {
    "lat": (np.float64, _NAN),  # newest point of the trusted track
    "lon": (np.float64, _NAN),
    "acc": (np.float32, _NAN),
    "t": (np.float64, -math.inf),
    "n": (np.int16, 0),  # plausible fixes in the track (counted up to CONFIRM_FIXES)
    "span": (np.float32, 0.0),  # seconds from its first fix to its newest
    "burst_n": (np.int16, 0),  # her fixes in the minute of her latest report
}
State = dict[str, npt.NDArray[Any]]


def empty(n: int) -> State:
    """The state of ``n`` people with no fix yet."""
    return {k: np.full(n, fill, dtype=dt) for k, (dt, fill) in COLUMNS.items()}


def confirmed(state: State) -> B:
    """Whether each track may disclose: enough agreeing fixes, far enough apart."""
    return np.asarray((state["n"] >= CONFIRM_FIXES) & (state["span"] >= CONFIRM_S), dtype=np.bool_)


def reachable(lat0: F64, lon0: F64, t0: F64, lat: F64, lon: F64, t: F64) -> B:
    """Whether each ``(lat, lon)`` at ``t`` can be reached from ``(lat0, lon0)`` at ``t0``."""
    known = np.isfinite(t0) & ~np.isnan(lat0)
    hop = geodesy.fast_distances_m(np.where(known, lat0, lat), np.where(known, lon0, lon), lat, lon)
    dt = np.maximum(np.where(known, t - t0, MIN_DT_S), MIN_DT_S)
    return np.asarray(~known | ((hop - SLACK_M) / dt <= MAX_SPEED_MPS), dtype=np.bool_)


def step(
    state: State, prev_t: F64, lat: F64, lon: F64, acc: F64, t: F64, now: float
) -> tuple[State, B]:
    """One valid fix for each of several people (state rows aligned with the fixes).

    ``prev_t`` is the time of each person's previous report, ``now`` the server's clock:
    a fix counts at its own time or now, whichever is earlier, and one dated more than
    ``MAX_AHEAD_S`` ahead is not plausible. Returns the new state rows and whether each
    fix was plausible. One person must not appear twice in one call: feed a person's
    fixes in order, one call per fix.

    A track that a person has left (her phone really is elsewhere, or the track began
    on a glitch) is never stuck: the time since its newest point grows, and with it the
    distance reachable from there.
    """
    s = {k: v.copy() for k, v in state.items()}
    ahead = t > now + MAX_AHEAD_S
    t = np.minimum(t, now)
    same_minute = np.floor(t / BURST_WINDOW_S) == np.floor(prev_t / BURST_WINDOW_S)
    s["burst_n"] = np.where(same_minute, np.minimum(s["burst_n"] + 1, 10_000), 1)
    ok = reachable(s["lat"], s["lon"], s["t"], lat, lon, t) & ~ahead
    started = (s["n"] == 0) | ~np.isfinite(s["t"])
    grown = np.where(started, 0.0, s["span"] + (t - s["t"]))
    s["span"] = np.where(ok, grown, s["span"])
    s["n"] = np.where(ok, np.where(started, 1, np.minimum(s["n"] + 1, CONFIRM_FIXES)), s["n"])
    for k, v in (("lat", lat), ("lon", lon), ("acc", acc), ("t", t)):
        s[k] = np.where(ok, v, s[k])
    for k, (dtype, _fill) in COLUMNS.items():
        s[k] = s[k].astype(dtype)
    return s, np.asarray(ok, dtype=np.bool_)


def bursting(state: State) -> B:
    """Whether each person reported more often than the report-rate guard allows."""
    return np.asarray(state["burst_n"] > BURST_MAX, dtype=np.bool_)
