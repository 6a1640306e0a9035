"""The guards on an order's decisions: approach prediction and the misuse guard.

Both run inside a round of the kernel, on the evaluations of that round, after the
order's new tier is known; each raises its event once per episode.
"""

from __future__ import annotations

import numpy as np

from bangpae.domain.approach import APPROACH_HORIZON_S, APPROACH_REARM_S
from bangpae.domain.disclosure import MISUSE_CLOSE_M, MISUSE_STEP_M, MISUSE_STEPS
from bangpae.domain.model import Event, EventKind, Tier, make_event
from bangpae.engine.columns import F64, I8, I64, B, Evaluations, Fixes
from bangpae.engine.registry import Registry

REVEAL = int(Tier.REVEAL)


def approach(
    reg: Registry, sel: I64, os_: I64, ok: B, new: I8, ev: Evaluations, fx: Fixes
) -> list[Event]:
    """Approach prediction: a breach predicted within the horizon, once per episode."""
    o = reg.orders
    ej, dist, t, idx, device = ev.ej, ev.dist, fx.t, fx.idx, fx.device
    tt = ev.ttb[sel]
    fire = (
        ok
        & o.approach_armed[os_]
        & (tt >= 0)
        & (tt <= APPROACH_HORIZON_S)
        & (new != int(Tier.BREACH))
    )
    events: list[Event] = []
    for i in np.flatnonzero(fire).tolist():
        e, slot = int(sel[i]), int(os_[i])
        j = int(ej[e])
        dev = int(device[idx[j]])
        events.append(
            make_event(
                EventKind.APPROACH_FAST,
                float(t[j]),
                int(o.id[slot]),
                dev,
                order_id=int(o.id[slot]),
                person_id=reg.person_id(int(o.off[slot])),
                device_id=dev,
                distance_m=round(float(dist[e]), 2),
                data={"seconds_to_breach": round(float(tt[i]), 1)},
            )
        )
    o.approach_armed[os_[fire]] = False
    rearm = ok & ((tt > APPROACH_REARM_S) | (new < int(Tier.NOTIFY)))
    o.approach_armed[os_[rearm]] = True
    return events


def misuse(
    reg: Registry,
    sel: I64,
    os_: I64,
    ok: B,
    new: I8,
    told_cur: I8,
    told_new: I8,
    before: F64,
    ev: Evaluations,
    fx: Fixes,
) -> list[Event]:
    """The misuse guard (docs/disclosure.md): her reports closing on him, bursts, jumps.

    On detection the disclosure of that order is paused at once and the control centre
    gets ``disclosure_misuse`` with the evidence; an operator keeps or lifts the pause.
    """
    o = reg.orders
    seen, dist = ev.seen, ev.dist
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
    ej, t, idx, device = ev.ej, fx.t, fx.idx, fx.device
    steps = o.misuse_count[os_]
    closed = o.misuse_close[os_]
    reasons = (
        ("approach", own & ((steps >= MISUSE_STEPS) | (closed >= MISUSE_CLOSE_M))),
        ("jump", own & ~plausible & near),
        ("burst", own & seen.burst[sel] & near),
    )
    events: list[Event] = []
    fired = np.zeros(len(sel), dtype=np.bool_)
    for reason, hit in reasons:
        for i in np.flatnonzero(hit & ~fired & ~o.misuse_flag[os_]).tolist():
            slot, e = int(os_[i]), int(sel[i])
            j = int(ej[e])
            dev = int(device[idx[j]])
            fired[i] = True
            events.append(
                make_event(
                    EventKind.DISCLOSURE_MISUSE,
                    float(t[j]),
                    int(o.id[slot]),
                    dev,
                    reason,
                    order_id=int(o.id[slot]),
                    person_id=reg.person_id(int(o.vic[slot])),
                    device_id=dev,
                    distance_m=round(float(dist[e]), 2) if ok[i] else None,
                    data={
                        "reason": reason,
                        "closing_steps": int(steps[i]),
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
