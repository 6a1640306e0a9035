"""What :meth:`Engine.tick` fires: curfew windows, his signal lost, devices gone silent.

Each passes with time alone. Zones and curfews are stepped here for fixes too, so a
schedule opening at the minute and a fix inside it decide alike; the others fire once
per episode and are dated at their deadline, not at ``now``.
"""

from __future__ import annotations

import math

import numpy as np

from bangpae.domain.model import Event, EventKind, Tier, make_event
from bangpae.domain.zones import ZoneState, step_zones
from bangpae.engine.columns import effective
from bangpae.engine.registry import Registry
from bangpae.engine.views import shown_event

UNCERTAIN = int(Tier.UNCERTAIN)


def zones(
    reg: Registry,
    slots: list[int],
    lat: float,
    lon: float,
    acc: float,
    at: float,
    device_id: int | None,
    now: float,
) -> list[Event]:
    """Step the zones and curfews of the orders in ``slots`` with his position at ``at``."""
    o = reg.orders
    events: list[Event] = []
    eff = float(effective(np.array([acc]))[0])
    for slot in slots:
        if not (o.valid_from[slot] <= now < o.valid_until[slot]):
            continue
        zoned, curfews, tz = reg.zoned[slot]
        state, found = step_zones(
            reg.zone_state.get(slot, ZoneState()),
            zoned,
            curfews,
            lat,
            lon,
            eff,
            at,
            tz,
            int(o.id[slot]),
            reg.person_id(int(o.off[slot])),
            device_id,
        )
        reg.zone_state[slot] = state
        events.extend(found)
    return events


def schedules(reg: Registry, now: float) -> list[Event]:
    """Re-check zoned orders with his last known position, at the minute."""
    events: list[Event] = []
    # Schedules open and close with time alone (minute-grained, so ids stay stable).
    minute = math.floor(now / 60.0) * 60.0
    for off_slot, slots in reg.zoned_by_offender.items():
        ps = reg.persons
        if slots and math.isfinite(ps.lat[off_slot]):
            events.extend(
                zones(
                    reg,
                    slots,
                    float(ps.lat[off_slot]),
                    float(ps.lon[off_slot]),
                    float(ps.acc[off_slot]),
                    minute,
                    None,
                    now,
                )
            )
    return events


def lost_signals(reg: Registry, now: float) -> list[Event]:
    """Orders in reveal or breach whose offender has been silent past ``stale``: uncertain."""
    events: list[Event] = []
    o, ps = reg.orders, reg.persons
    n = o.n
    if not n:
        return events
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
                person_id=reg.person_id(int(off[slot])),
                tier_from=Tier(int(tier[slot])),
                tier_to=Tier.UNCERTAIN,
                data={"signal": "stale", "last_fix_time": float(ps.t[off[slot]])},
            )
        )
        o.base[slot] = tier[slot]
        o.tier[slot] = UNCERTAIN
        o.since[slot] = deadline
        if o.disclosed[slot]:  # she saw him: she is told it is lost
            events.append(shown_event(reg, slot, deadline, "stale", int(o.shown[slot]), UNCERTAIN))
            o.shown[slot] = UNCERTAIN
    return events


def silent_devices(reg: Registry, now: float) -> list[Event]:
    """Devices with no message for ``offline_after``, or no GPS fix for ``no_fix_after``."""
    events: list[Event] = []
    d = reg.devices
    m = d.n
    if not m:
        return events
    last = d.last_msg[:m]
    seen = np.isfinite(last)
    offline = seen & ~d.offline_flag[:m] & (now - last > d.offline_after[:m])
    for slot in np.flatnonzero(offline).tolist():
        deadline = float(last[slot] + d.offline_after[slot])
        dev = reg.device_id(slot)
        events.append(
            make_event(
                EventKind.OFFLINE,
                deadline,
                dev,
                device_id=dev,
                person_id=reg.person_id(int(d.person[slot])),
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
        dev = reg.device_id(slot)
        lv = float(d.last_valid[slot])
        events.append(
            make_event(
                EventKind.NO_FIX,
                deadline,
                dev,
                device_id=dev,
                person_id=reg.person_id(int(d.person[slot])),
                data={"last_valid_at": None if math.isnan(lv) else lv},
            )
        )
    d.nofix_flag[:m] |= nofix
    return events
