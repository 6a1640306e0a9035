"""Her trusted track, fix by fix, and what she is told and shown of him (docs/disclosure.md).

A batch steps the tracks of the protected people in it before it is evaluated; each
evaluation then sees her track as it stood after the fix being evaluated, and the new
tracks are stored once the whole batch has been decided. In each round, after the new
tier: what she is told from his cell, then (after the misuse guard) what she is shown.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from bangpae.domain import coarse, geodesy, tiers, track
from bangpae.domain.model import Event, Tier
from bangpae.engine.columns import (
    F64,
    I8,
    I64,
    NAN,
    B,
    Evaluations,
    Fixes,
    Her,
    OrderColumns,
    PersonColumns,
    Seen,
    effective,
)
from bangpae.engine.registry import Registry
from bangpae.engine.views import shown_event

UNCERTAIN = int(Tier.UNCERTAIN)
REVEAL = int(Tier.REVEAL)
BREACH = int(Tier.BREACH)


def step_tracks(
    ps: PersonColumns,
    person: I64,
    t: F64,
    lat: F64,
    lon: F64,
    acc: F64,
    valid: B,
    now: float,
) -> Her:
    """Step the trusted tracks of the protected people in a batch, in arrival order.

    Returns, for every fix, the track as it stands after it (others' fixes: their
    stored track), and whether it was plausible; the new state is written back by
    :func:`store_tracks` once the batch has been evaluated against the old one.
    """
    her = Her(len(person))
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


def store_tracks(ps: PersonColumns, her: Her) -> None:
    """Write the trusted tracks a batch stepped back to the person columns."""
    if not len(her.persons):
        return
    for n, a in her.state.items():
        getattr(ps, f"tr_{n}")[her.persons] = a
    ps.flagged[her.persons] = her.flagged


def seen(
    o: OrderColumns,
    ps: PersonColumns,
    eo: I64,
    ej: I64,
    self_is_off: B,
    partner: I64,
    pj: I64,
    her: Her,
    off_lat: F64,
    off_lon: F64,
    off_acc: F64,
    off_fresh: B,
    vic_lat: F64,
    vic_lon: F64,
    both: B,
    dist: F64,
    now: float,
) -> Seen:
    """Per evaluation: her trusted point, the margin to his cell, and disclosure."""
    mine = ~self_is_off
    b = pj >= 0
    at = np.where(mine, ej, np.maximum(pj, 0))
    in_batch = mine | b

    def pick(batch: npt.NDArray[np.generic], stored: npt.NDArray[np.generic]) -> F64:
        return np.where(in_batch, batch[at], stored[partner])

    h_lat, h_lon = pick(her.lat, ps.tr_lat), pick(her.lon, ps.tr_lon)
    h_acc, h_t = pick(her.acc, ps.tr_acc), pick(her.t, ps.tr_t)
    stored_conf = track.confirmed({"n": ps.tr_n[partner], "span": ps.tr_span[partner]})
    conf = np.where(in_batch, her.confirmed[at], stored_conf)
    her_fresh = np.isfinite(h_t) & (now - h_t <= o.stale[eo]) & ~np.isnan(h_lat)
    told_ok = off_fresh & her_fresh
    # The margin to his cell, also from his last known fix while his signal is lost
    # (the misuse guard counts her closing in then too).
    known = her_fresh & np.isfinite(off_lat)
    margin = np.full(len(eo), NAN)
    if known.any():
        # 1 m for the local-ellipsoid distance's error: doubt counts toward danger
        margin[known] = (
            coarse.told_margins(
                h_lat[known],
                h_lon[known],
                effective(h_acc[known]),
                off_lat[known],
                off_lon[known],
                o.gy[eo[known]].astype(np.float64),
                o.gx[eo[known]].astype(np.float64),
            )
            - 1.0
        )
    # The best estimate of the distance: his fix to her trusted point, no accuracy.
    # Decisions on it (disclosure, and breach as she is shown it) are exact.
    u_best = effective(h_acc) + effective(off_acc)
    keep = o.keep[eo] + u_best
    thresholds = np.stack([o.reveal[eo], keep, keep + o.hyst[eo]], axis=1)
    best = np.full(len(eo), NAN)
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
    return Seen(
        np.where(told_ok, margin, NAN),
        margin,
        told_ok,
        disclosable,
        best,
        best - u_best,
        own,
        her.plausible[ej] | ~own,
        her.burst[ej] & own,
    )


def told(o: OrderColumns, sel: I64, os_: I64, seen: Seen) -> tuple[I8, I8]:
    """What she is told from his cell (never above reveal), with its own hysteresis.

    Returns the told tiers before and after the round, and stores the new ones.
    """
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
    return told_cur, told_new


def shown(
    reg: Registry, sel: I64, os_: I64, new: I8, told_new: I8, ev: Evaluations, fx: Fixes
) -> list[Event]:
    """What she is shown after the round; ``shown_tier_changed`` where it changes."""
    o = reg.orders
    seen, ej, t, idx, device = ev.seen, ev.ej, fx.t, fx.idx, fx.device
    events: list[Event] = []
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
        dev = int(device[idx[j]])
        events.append(shown_event(reg, slot, float(t[j]), dev, shown_cur[i], shown_new[i]))
    o.shown[os_] = shown_new
    return events
