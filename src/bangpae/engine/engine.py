"""The proximity engine: live state per person and per order, decided batch by batch.

A batch of fixes is applied exactly as if its fixes had arrived one at a time,
in arrival order: every fix of either party re-evaluates each of that party's
orders against the partner's latest fix *as of that moment*. The work is done
with numpy over the whole batch; evaluations that touch the same order are
split into rounds so each round sees the tier the previous one left.

The engine does no I/O and reads no clock: callers pass ``now``. Late fixes
(older than the newest applied fix of their device) never touch live state;
they are handed back through :meth:`Engine.drain_late` for retrospective
evaluation against stored history.

The state (columns and registry) is :class:`~bangpae.engine.registry.Registry`; this
module is the kernel that decides on it, with the steps it calls in ``trusted``
(her track, what she is told and shown), ``guards`` (approach, misuse) and ``timers``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from bangpae.domain import geodesy, tiers
from bangpae.domain.batch import FixBatch
from bangpae.domain.health import JUMP_SPEED_MPS, HealthState, HealthThresholds, step_health
from bangpae.domain.model import Event, EventKind, Fix, Tier, make_event
from bangpae.engine import guards, timers, trusted
from bangpae.engine.columns import (
    F64,
    I64,
    NAN,
    B,
    Evaluations,
    Fixes,
    Her,
    effective,
    group_ends,
    local_vector,
)
from bangpae.engine.registry import Registry
from bangpae.engine.views import OrderView, order_view

__all__ = ["Engine", "OrderView"]

# Jumps are found on the columns for every fix; the per-device health step only sees
# messages with alarms or battery, so it must not judge jumps against a stale fix.
_HEALTH = HealthThresholds(jump_speed_mps=math.inf)
UNCERTAIN = int(Tier.UNCERTAIN)


class Engine(Registry):
    """The kernel: batches of fixes and the timers decided on the registry's live state.

    Tiers follow the two rules of docs/disclosure.md (warnings and disclosure).
    """

    # -- ingest -------------------------------------------------------------------------

    def ingest(self, fixes: Sequence[Fix] | FixBatch, now: float) -> list[Event]:
        """Apply decoded fixes in arrival order; return the events they cause."""
        return self.ingest_batch(fixes if isinstance(fixes, FixBatch) else FixBatch.of(fixes), now)[
            0
        ]

    def ingest_batch(self, batch: FixBatch, now: float) -> tuple[list[Event], B]:
        """Apply a batch in arrival order: the events it causes, and which fixes were late.

        Late fixes are also kept for :meth:`drain_late`.
        """
        n = len(batch)
        if n == 0:
            return [], np.zeros(0, dtype=np.bool_)
        cols = {
            "device": batch.device,
            "t": batch.t,
            "lat": batch.lat,
            "lon": batch.lon,
            "acc": batch.acc,
            "speed": batch.speed,
            "heading": batch.heading,
            "valid": batch.valid,
            "received": batch.received_or_fix_time(),
        }
        events, live, late = self._apply(cols, now)
        if late.any():
            self._late.extend(batch.fix(int(i)) for i in np.flatnonzero(late))
        # The health step sees fixes with alarms or a battery level, and every fix of a
        # device whose health state is active: only devices with one of those are looked at.
        dev = batch.device[live]
        marked = (batch.alarms[live] != 0) | ~np.isnan(batch.battery[live])
        watched = [d for d, state in self._health.items() if state.active]
        if marked.any() or watched:
            look = np.isin(dev, np.concatenate([dev[marked], np.asarray(watched, np.int64)]))
            for j in live[look].tolist():
                f = batch.fix(j)
                state = self._health.get(f.device_id)
                if f.alarms or f.battery_pct is not None or (state is not None and state.active):
                    slot = int(self._device_slot[f.device_id])
                    pid = self.person_id(int(self.devices.person[slot]))
                    new, found = step_health(state or HealthState(), f, now, _HEALTH, person_id=pid)
                    self._health[f.device_id] = new
                    events.extend(found)
        return events, late

    def drain_late(self) -> list[Fix]:
        """Late fixes set aside since the last call, for retrospective evaluation."""
        late, self._late = self._late, []
        return late

    def _apply(
        self, c: dict[str, npt.NDArray[np.generic]], now: float
    ) -> tuple[list[Event], I64, B]:
        """Route late and duplicate fixes aside, decide on the live ones.

        Returns the events, the indices of the live fixes and the mask of the late ones.
        """
        dev_ids = c["device"].astype(np.int64)
        n = len(dev_ids)
        known = (dev_ids >= 0) & (dev_ids < len(self._device_slot))
        dslot = np.full(n, -1, dtype=np.int64)
        dslot[known] = self._device_slot[dev_ids[known]]
        t = c["t"].astype(np.float64)
        # Route late and duplicate fixes: compare each fix with the newest earlier one of
        # its device (stored state, or an earlier fix of this batch).
        order = np.lexsort((np.arange(n), dslot))
        sd, st = dslot[order], t[order]
        prev_t = np.where(sd >= 0, self.devices.last_t[np.maximum(sd, 0)], -math.inf)
        same = np.zeros(n, dtype=np.bool_)
        same[1:] = sd[1:] == sd[:-1]
        prev_t[1:] = np.where(same[1:], st[:-1], prev_t[1:])
        if np.all(st > prev_t) or n == 0:
            live_sorted = np.ones(n, dtype=np.bool_)
            late_sorted = np.zeros(n, dtype=np.bool_)
        else:  # rare: out-of-order fixes within the batch need a running maximum
            live_sorted = np.zeros(n, dtype=np.bool_)
            late_sorted = np.zeros(n, dtype=np.bool_)
            newest = -math.inf
            for i in range(n):
                if i == 0 or not same[i]:
                    newest = float(self.devices.last_t[sd[i]]) if sd[i] >= 0 else -math.inf
                if st[i] > newest:
                    live_sorted[i] = True
                    newest = float(st[i])
                elif st[i] < newest:
                    late_sorted[i] = True
        live = np.zeros(n, dtype=np.bool_)
        live[order] = live_sorted & (sd >= 0)
        late = np.zeros(n, dtype=np.bool_)
        late[order] = late_sorted & (sd >= 0)
        idx = np.flatnonzero(live)
        if len(idx) == 0:
            return [], idx, late
        return self._apply_live(c, idx, dslot[idx], now), idx, late

    def _apply_live(
        self,
        c: dict[str, npt.NDArray[np.generic]],
        idx: I64,
        ds: I64,
        now: float,
    ) -> list[Event]:
        events: list[Event] = []
        d, ps = self.devices, self.persons
        t = c["t"][idx].astype(np.float64)
        lat = c["lat"][idx].astype(np.float64)
        lon = c["lon"][idx].astype(np.float64)
        acc = c["acc"][idx].astype(np.float64)
        speed = c["speed"][idx].astype(np.float64)
        heading = c["heading"][idx].astype(np.float64)
        valid = c["valid"][idx].astype(np.bool_)
        received = c["received"][idx].astype(np.float64)
        k = len(idx)
        person = d.person[ds]

        # Previous valid position of each fix's device (stored, or earlier in this batch).
        order = np.lexsort((np.arange(k), ds))
        plat, plon = d.lat[ds].copy(), d.lon[ds].copy()
        pacc, pt = d.acc[ds].copy(), d.last_valid[ds].copy()
        run_lat, run_lon, run_acc, run_t = plat[order], plon[order], pacc[order], pt[order]
        if k > 1:
            sdev = ds[order]
            vo = valid[order]
            # A device with several fixes in the batch: carry the last valid one forward.
            for j in (np.flatnonzero(sdev[1:] == sdev[:-1]) + 1).tolist():
                i = j - 1
                if vo[i]:
                    run_lat[j], run_lon[j] = lat[order[i]], lon[order[i]]
                    run_acc[j], run_t[j] = acc[order[i]], t[order[i]]
                else:
                    run_lat[j], run_lon[j] = run_lat[i], run_lon[i]
                    run_acc[j], run_t[j] = run_acc[i], run_t[i]
        plat[order], plon[order], pacc[order], pt[order] = run_lat, run_lon, run_acc, run_t

        # Velocity: reported speed and heading where given, else from the previous fix.
        has_prev = np.isfinite(pt) & valid & (t > pt)
        dt = np.where(has_prev, t - pt, 1.0)
        ex, ny = local_vector(
            np.where(has_prev, plat, lat), np.where(has_prev, plon, lon), lat, lon
        )
        vx = np.where(has_prev, ex / dt, 0.0)
        vy = np.where(has_prev, ny / dt, 0.0)
        reported = np.isfinite(speed) & np.isfinite(heading)
        hr = np.radians(np.where(reported, heading, 0.0))
        vx = np.where(reported, speed * np.sin(hr), vx)
        vy = np.where(reported, speed * np.cos(hr), vy)

        # Position jumps: implied speed beyond what accuracy can explain.
        if has_prev.any():
            hop = np.hypot(ex, ny)
            slack = effective(pacc) + effective(acc)
            implied = (hop - slack) / dt
            for j in np.flatnonzero(has_prev & (implied > JUMP_SPEED_MPS)).tolist():
                dev = int(c["device"][idx[j]])
                events.append(
                    make_event(
                        EventKind.POSITION_JUMP,
                        float(t[j]),
                        dev,
                        person_id=self.person_id(int(person[j])),
                        device_id=dev,
                        data={"implied_speed_mps": round(float(implied[j]), 1)},
                    )
                )

        # Device columns take each device's last fix of the batch (live fixes of one
        # device are in increasing time, so the last is the newest).
        last = order[group_ends(ds[order])]
        dl = ds[last]
        d.last_t[dl], d.last_msg[dl] = t[last], received[last]
        d.offline_flag[dl] = False
        lv = last[valid[last]]
        d.lat[ds[lv]], d.lon[ds[lv]] = lat[lv], lon[lv]
        d.acc[ds[lv]], d.last_valid[ds[lv]] = acc[lv], t[lv]
        d.invalid_since[ds[lv]] = NAN
        d.nofix_flag[ds[lv]] = False
        li = last[~valid[last]]
        if len(li):
            keep = np.isfinite(d.invalid_since[ds[li]])
            d.invalid_since[ds[li]] = np.where(keep, d.invalid_since[ds[li]], received[li])

        # Her trusted track, fix by fix (docs/disclosure.md); written back after evaluation.
        her = trusted.step_tracks(ps, person, t, lat, lon, acc, valid, now)
        for j in np.flatnonzero(her.flag_now).tolist():
            dev = int(c["device"][idx[j]])
            events.append(
                make_event(
                    EventKind.POSITION_IMPLAUSIBLE,
                    float(t[j]),
                    dev,
                    person_id=self.person_id(int(person[j])),
                    device_id=dev,
                )
            )

        # Evaluations: every fix re-evaluates each order of its person, in arrival order.
        start, flat = self._orders_csr()
        deg = start[person + 1] - start[person]
        if deg.sum() > 0:
            fx = Fixes(person, deg, t, lat, lon, acc, valid, vx, vy, idx, c["device"])
            events.extend(self._evaluate(fx, start, flat, her, now))
        trusted.store_tracks(ps, her)

        # Zones and curfews of offenders who have them (few): fix by fix, in order.
        if self.zoned:
            for j in range(k):
                slots = self.zoned_by_offender.get(int(person[j]))
                if slots and valid[j]:
                    dev = int(c["device"][idx[j]])
                    events.extend(
                        timers.zones(
                            self,
                            slots,
                            float(lat[j]),
                            float(lon[j]),
                            float(acc[j]),
                            float(t[j]),
                            dev,
                            now,
                        )
                    )

        # Person columns take the batch's last fix of each person (arrival order).
        by_person = np.lexsort((np.arange(k), person))
        pj = by_person[group_ends(person[by_person])]
        pp = person[pj]
        ps.t[pp], ps.valid[pp], ps.device[pp] = t[pj], valid[pj], c["device"][idx[pj]]
        vm = valid[pj]
        pv, jv = pp[vm], pj[vm]
        ps.lat[pv], ps.lon[pv], ps.acc[pv], ps.vt[pv] = lat[jv], lon[jv], acc[jv], t[jv]
        ps.vx[pv], ps.vy[pv] = vx[jv], vy[jv]
        ps.speed[pv], ps.heading[pv] = speed[jv], heading[jv]
        return events

    def _evaluate(self, fx: Fixes, start: I64, flat: I64, her: Her, now: float) -> list[Event]:
        """Every fix re-evaluates each active order of its person (``flat[start[p]:]``)."""
        o, ps = self.orders, self.persons
        person, deg, t, lat, lon, acc = fx.person, fx.deg, fx.t, fx.lat, fx.lon, fx.acc
        valid, vx, vy = fx.valid, fx.vx, fx.vy
        k = len(person)
        # One evaluation per (fix j, order of its person).
        ej = np.repeat(np.arange(k), deg)
        offs = np.arange(len(ej)) - np.repeat(np.cumsum(deg) - deg, deg)
        eo = flat[start[person[ej]] + offs]
        active = (o.valid_from[eo] <= now) & (now < o.valid_until[eo])
        ej, eo = ej[active], eo[active]
        if len(ej) == 0:
            return []
        self_is_off = o.off[eo] == person[ej]
        partner = np.where(self_is_off, o.vic[eo], o.off[eo])

        # The partner's latest fix as of evaluation j: its last fix earlier in this batch,
        # else its stored state.
        key_sorted_order = np.lexsort((np.arange(k), person))
        keys = person[key_sorted_order] * (k + 1) + np.arange(k)[key_sorted_order]
        q = partner * (k + 1) + ej
        pos = np.searchsorted(keys, q) - 1
        in_batch = pos >= 0
        cand = key_sorted_order[np.maximum(pos, 0)]
        in_batch &= person[cand] == partner
        # The partner's batch fix may be invalid (no GPS): its position is then the last
        # valid one, which for the batch is not tracked per fix; fall back to stored state.
        pj = np.where(in_batch, cand, -1)
        b = pj >= 0
        p_lat = np.where(b, lat[np.maximum(pj, 0)], ps.lat[partner])
        p_lon = np.where(b, lon[np.maximum(pj, 0)], ps.lon[partner])
        p_acc = np.where(b, acc[np.maximum(pj, 0)], ps.acc[partner])
        p_t = np.where(b, t[np.maximum(pj, 0)], ps.t[partner])
        p_valid = np.where(b, valid[np.maximum(pj, 0)], ps.valid[partner])
        p_vx = np.where(b, vx[np.maximum(pj, 0)], ps.vx[partner])
        p_vy = np.where(b, vy[np.maximum(pj, 0)], ps.vy[partner])

        s_lat, s_lon, s_acc, s_t, s_valid = lat[ej], lon[ej], acc[ej], t[ej], valid[ej]
        off_lat = np.where(self_is_off, s_lat, p_lat)
        off_lon = np.where(self_is_off, s_lon, p_lon)
        vic_lat = np.where(self_is_off, p_lat, s_lat)
        vic_lon = np.where(self_is_off, p_lon, s_lon)
        off_t = np.where(self_is_off, s_t, p_t)
        vic_t = np.where(self_is_off, p_t, s_t)
        off_valid = np.where(self_is_off, s_valid, p_valid)
        vic_valid = np.where(self_is_off, p_valid, s_valid)
        stale = o.stale[eo]
        off_fresh = off_valid & (now - off_t <= stale) & np.isfinite(off_lat)
        vic_fresh = vic_valid & (now - vic_t <= stale) & np.isfinite(vic_lat)
        both = off_fresh & vic_fresh

        u = effective(s_acc) + effective(p_acc)
        thresholds = tiers.decision_thresholds(
            u, o.notify[eo], o.reveal[eo], o.keep[eo], o.hyst[eo]
        )
        dist = np.full(len(ej), NAN)
        if both.any():
            dist[both] = geodesy.distances_m(
                off_lat[both], off_lon[both], vic_lat[both], vic_lon[both], thresholds[both]
            )
        margin = dist - u
        seen = trusted.seen(
            o,
            ps,
            eo,
            ej,
            self_is_off,
            partner,
            pj,
            her,
            off_lat,
            off_lon,
            np.where(self_is_off, s_acc, p_acc),
            off_fresh,
            vic_lat,
            vic_lon,
            both,
            dist,
            now,
        )

        # Closing speed toward keep-away, for approach prediction.
        ex, ny = local_vector(vic_lat, vic_lon, off_lat, off_lon)
        rvx = np.where(self_is_off, vx[ej] - p_vx, p_vx - vx[ej])
        rvy = np.where(self_is_off, vy[ej] - p_vy, p_vy - vy[ej])
        with np.errstate(invalid="ignore", divide="ignore"):
            closing = -(ex * rvx + ny * rvy) / np.where(dist > 0, dist, 1.0)
            ttb = np.where(closing > 0, (margin - o.keep[eo]) / closing, np.inf)

        # Rounds: the r-th evaluation of each order in the batch goes into round r.
        srt = np.lexsort((ej, eo))
        eo_s = eo[srt]
        first = np.ones(len(srt), dtype=np.bool_)
        first[1:] = eo_s[1:] != eo_s[:-1]
        group_start = np.maximum.accumulate(np.where(first, np.arange(len(srt)), 0))
        rank = np.empty(len(srt), dtype=np.int64)
        rank[srt] = np.arange(len(srt)) - group_start
        ev = Evaluations(eo, ej, both, off_fresh, vic_fresh, dist, margin, ttb, seen)
        events: list[Event] = []
        for r in range(int(rank.max()) + 1):
            events.extend(self._round(np.flatnonzero(rank == r), ev, fx))
        return events

    def _round(self, sel: I64, ev: Evaluations, fx: Fixes) -> list[Event]:
        """Decide the evaluations ``sel`` (at most one per order) on the tiers left so far."""
        o = self.orders
        eo, ej, both, margin, dist = ev.eo, ev.ej, ev.both, ev.margin, ev.dist
        off_fresh, vic_fresh = ev.off_fresh, ev.vic_fresh
        t, idx, device = fx.t, fx.idx, fx.device
        os_ = eo[sel]
        before = o.distance[os_].copy()
        cur = o.tier[os_].astype(np.int8)
        base = np.where(cur == UNCERTAIN, o.base[os_], cur).astype(np.int8)
        ok = both[sel]
        new = cur.copy()
        if ok.any():
            s_ok = sel[ok]
            new[ok] = tiers.next_tiers(
                base[ok],
                margin[s_ok],
                o.notify[os_[ok]],
                o.reveal[os_[ok]],
                o.keep[os_[ok]],
                o.hyst[os_[ok]],
            )
        # Offender's position unknown to us while he was close: uncertain.
        lost = ~off_fresh[sel] & ((cur == int(Tier.REVEAL)) | (cur == int(Tier.BREACH)))
        new[lost] = UNCERTAIN
        o.base[os_[lost]] = cur[lost]
        o.base[os_[ok]] = new[ok]
        events: list[Event] = []
        changed = np.flatnonzero(new != cur)
        for i in changed.tolist():
            e = int(sel[i])
            slot = int(os_[i])
            j = int(ej[e])
            dev = int(device[idx[j]])
            at = float(t[j])
            d = float(dist[e]) if ok[i] else None
            events.append(
                make_event(
                    EventKind.TIER_CHANGED,
                    at,
                    int(o.id[slot]),
                    dev,
                    int(cur[i]),
                    int(new[i]),
                    order_id=int(o.id[slot]),
                    person_id=self.person_id(int(o.off[slot])),
                    device_id=dev,
                    tier_from=Tier(int(cur[i])),
                    tier_to=Tier(int(new[i])),
                    distance_m=None if d is None else round(d, 2),
                    data={"margin_m": round(float(margin[e]), 2)} if ok[i] else {"signal": "lost"},
                )
            )
            o.since[slot] = at
        o.tier[os_] = new
        o.distance[os_[ok]] = dist[sel[ok]]

        # The victim's own location is missing or stale: ask her app to resume sharing.
        vstale = ~vic_fresh[sel] & ~o.victim_stale_flag[os_]
        for i in np.flatnonzero(vstale).tolist():
            slot, j = int(os_[i]), int(ej[sel[i]])
            dev = int(device[idx[j]])
            events.append(
                make_event(
                    EventKind.VICTIM_LOCATION_STALE,
                    float(t[j]),
                    int(o.id[slot]),
                    dev,
                    order_id=int(o.id[slot]),
                    person_id=self.person_id(int(o.vic[slot])),
                )
            )
        o.victim_stale_flag[os_[vstale]] = True
        o.victim_stale_flag[os_[vic_fresh[sel]]] = False

        events.extend(guards.approach(self, sel, os_, ok, new, ev, fx))
        told_cur, told_new = trusted.told(o, sel, os_, ev.seen)
        events.extend(guards.misuse(self, sel, os_, ok, new, told_cur, told_new, before, ev, fx))
        events.extend(trusted.shown(self, sel, os_, new, told_new, ev, fx))
        return events

    # -- timers -------------------------------------------------------------------------

    def tick(self, now: float) -> list[Event]:
        """Fire the timers due at ``now``: signal lost, offline, no GPS fix, curfew windows."""
        events = timers.schedules(self, now)
        events.extend(timers.lost_signals(self, now))
        events.extend(timers.silent_devices(self, now))
        return events

    # -- reads --------------------------------------------------------------------------

    def order_view(self, order_id: int, now: float | None = None) -> OrderView | None:
        """The live state of one order (positions unfiltered: callers apply disclosure)."""
        slot = self._order_slot.get(order_id)
        if slot is None:
            return None
        return order_view(self.orders, self.persons, slot, order_id, now)

    def evaluate_orders(self, order_ids: Iterable[int], now: float) -> list[Event]:
        """Decide orders just registered from what is known of both parties now.

        Each order is evaluated as if his latest fix had just arrived (her side from her
        stored state), so a new order is not shown ``clear`` until one of them next
        reports; only these orders are evaluated, and no device or person state moves.
        """
        ps = self.persons
        events: list[Event] = []
        for oid in order_ids:
            slot = self._order_slot.get(oid)
            if slot is None:
                continue
            off = int(self.orders.off[slot])
            if not math.isfinite(ps.t[off]):
                continue  # he never reported: nothing to decide yet
            person = np.array([off], dtype=np.int64)
            start = np.zeros(off + 1, dtype=np.int64)  # his orders here: this one alone
            flat = np.array([slot], dtype=np.int64)

            def col(a: F64) -> F64:
                return np.array([a[off]], dtype=np.float64)  # noqa: B023 - used at once

            fx = Fixes(
                person=person,
                deg=np.ones(1, dtype=np.int64),
                t=col(ps.t),
                lat=col(ps.lat),
                lon=col(ps.lon),
                acc=col(ps.acc),
                valid=np.array([bool(ps.valid[off])]),
                vx=col(ps.vx),
                vy=col(ps.vy),
                idx=np.zeros(1, dtype=np.int64),
                device=np.array([int(ps.device[off])], dtype=np.int64),
            )
            events.extend(self._evaluate(fx, start, flat, Her(1), now))
        return events
