"""What is read of the engine's state: an order's view, and the event of what she is shown."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bangpae.domain import track
from bangpae.domain.model import Event, EventKind, Fix, Tier, make_event
from bangpae.engine.columns import OrderColumns, PersonColumns
from bangpae.engine.registry import Registry


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


def fix_of(ps: PersonColumns, p: int) -> Fix | None:
    """The latest fix with a position of the person in slot ``p`` (None: never had one)."""
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


def order_view(
    o: OrderColumns, ps: PersonColumns, slot: int, order_id: int, now: float | None
) -> OrderView:
    """The live state of the order in ``slot`` (positions unfiltered)."""
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
        offender=fix_of(ps, off),
        victim=fix_of(ps, vic),
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


def shown_event(reg: Registry, slot: int, at: float, cause: object, old: int, new: int) -> Event:
    """``shown_tier_changed`` for the protected person of the order in ``slot``."""
    o = reg.orders
    return make_event(
        EventKind.SHOWN_TIER_CHANGED,
        at,
        int(o.id[slot]),
        cause,
        int(old),
        int(new),
        order_id=int(o.id[slot]),
        person_id=reg.person_id(int(o.vic[slot])),
        tier_from=Tier(int(old)),
        tier_to=Tier(int(new)),
    )
