"""Reactions to stored events are never dropped: a storm, and a stop in the middle.

A burst of 50,000 events is published at once through the real writer and bus; every
breach notice goes out exactly once, though a screen following the same bus falls
behind and says how much it lost. Events committed just before a crash have their
notices and pursuit interval on the next start, and not again on the one after.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from geographiclib.geodesic import Geodesic

from bangpae.adapters.bus import SCREEN_QUEUE
from bangpae.adapters.clock import ManualClock
from bangpae.api.factory import create_app
from bangpae.app import AppContext, build
from bangpae.config import Settings
from bangpae.domain import incidents
from bangpae.domain.model import Event, EventKind, Fix, Order, Tier, make_event
from bangpae.services.reactions import RESUME_FRESH_S
from tests.integration.conftest import signed_in
from tests.scenario import HOME, T0

BURST = 50_000
ORDERS = 250


async def until(condition: Callable[[], bool], within_s: float = 60.0) -> None:
    async with asyncio.timeout(within_s):
        while not condition():  # noqa: ASYNC110 - the reactions run in their own tasks
            await asyncio.sleep(0.02)


def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'b.sqlite'}", tick_s=60)


def parties(ctx: AppContext, n: int) -> list[tuple[int, int, int]]:
    """``n`` orders, each with his ankle monitor and her phone: (order, ankle, phone)."""
    s = ctx.store
    out = []
    for k in range(n):
        off, vic = s.add_person("offender", f"O{k}"), s.add_person("victim", f"V{k}")
        ankle = s.add_device(f"ANKLE{k}", "ankle_monitor", "osmand", off)
        phone = s.add_device(f"PHONE{k}", "phone", "osmand", vic)
        out.append((s.add_order(Order(0, off, vic)), ankle, phone))
    return out


def near(device: int, t: float, d: float) -> Fix:
    g = Geodesic.WGS84.Direct(HOME[0], HOME[1], 90.0, d)
    return Fix(device, t, g["lat2"], g["lon2"], 5.0)


def breach(order: int, at: float) -> list[Event]:
    """What the engine decides as he steps into breach: the tier, and what she is shown."""
    return [
        make_event(
            kind,
            at,
            order,
            order_id=order,
            tier_from=Tier.CLEAR,
            tier_to=Tier.BREACH,
            distance_m=40.0,
        )
        for kind in (EventKind.TIER_CHANGED, EventKind.SHOWN_TIER_CHANGED)
    ]


def noise(order: int, k: int) -> Event:
    """A tier change that tells nobody anything, but that the notices must look at."""
    at = T0 + k * 0.001
    return make_event(
        EventKind.TIER_CHANGED,
        at,
        order,
        k,
        order_id=order,
        tier_from=Tier.CLEAR,
        tier_to=Tier.NOTIFY,
        distance_m=1900.0,
    )


def told(ctx: AppContext, audience: str) -> Counter[tuple[int | None, str]]:
    kept = ctx.store.notices(audience=audience, limit=10 * ORDERS)
    return Counter((n.order_id, n.kind) for n in kept)


async def test_a_burst_of_fifty_thousand_events_sends_every_breach_notice_exactly_once(
    tmp_path: Path,
) -> None:
    ctx = build(settings(tmp_path), clock=ManualClock(T0 + 100))
    orders = [o for o, _, _ in parties(ctx, ORDERS)]
    await ctx.start()
    screen = ctx.bus.subscribe()  # what the control centre's live stream is given
    try:
        events: list[Event] = []
        between = (BURST - 2 * ORDERS) // ORDERS  # quiet tier changes before each breach
        for i, order in enumerate(orders):
            events.extend(
                noise(orders[k % ORDERS], k) for k in range(i * between, (i + 1) * between)
            )
            events.extend(breach(order, T0 + 50 + i))
        assert len(events) == BURST
        breaches = {e.order_id for e in events if e.kind == EventKind.SHOWN_TIER_CHANGED}
        assert breaches == set(orders)

        new = await ctx.ingest.record(*events)  # one commit, one publish of 50,000
        assert len(new) == BURST
        await until(lambda: ctx.reactions.caught_up(BURST))

        victim = told(ctx, "victim")
        assert victim == Counter({(o, "tier_breach"): 1 for o in orders})
        staff = told(ctx, "staff")
        assert staff == Counter({(o, "incident"): 1 for o in orders}), staff
        await until(lambda: ctx.store.reactions_due() == [])  # with the next write
        assert ctx.reactions.stats.failed == 0
        # the screen kept its newest events and counted what it lost
        assert screen.qsize() == SCREEN_QUEUE
        assert screen.dropped == BURST - SCREEN_QUEUE
    finally:
        ctx.bus.unsubscribe(screen)
        await ctx.stop()


async def test_events_committed_before_a_crash_have_their_reactions_at_the_next_start(
    tmp_path: Path,
) -> None:
    clock = ManualClock(T0 + 100)
    first = build(settings(tmp_path), clock=clock)
    made = parties(first, 3)
    # he is 40 m from her: the fixes and the breach they decided are committed together,
    # and the process dies before publishing them
    fixes = [
        f for _, ankle, phone in made for f in (near(phone, T0 + 60, 0), near(ankle, T0 + 60, 40))
    ]
    events = [e for o, _, _ in made for e in breach(o, T0 + 60)]
    plans = [(e, incidents.incident_kind(e), incidents.priority_of(e)) for e in events]
    first.store.record_batch(fixes, [False] * len(fixes), plans)
    first.store.close()

    second = build(settings(tmp_path), clock=clock)
    assert {e.id for e in second.store.reactions_due()} == {e.id for e in events}
    await second.start()
    try:
        await until(lambda: second.store.reactions_due() == [])
        victim = told(second, "victim")
        assert victim == Counter({(o, "tier_breach"): 1 for o, _, _ in made})
        assert told(second, "staff") == Counter({(o, "incident"): 1 for o, _, _ in made})
        # pursuit: her app is asked to report fast from its next connection, as what she
        # was shown (breach) is restored with the tiers
        for _, _, phone in made:
            assert second.commands.desired.get(phone) == 15
        assert second.reactions.stats.resumed == len(events)
    finally:
        await second.stop()

    third = build(settings(tmp_path), clock=clock)
    await third.start()
    try:
        await asyncio.sleep(0.3)
        assert third.reactions.stats.resumed == 0
        assert told(third, "victim") == Counter({(o, "tier_breach"): 1 for o, _, _ in made})
    finally:
        await third.stop()


async def test_a_failing_reaction_leaves_its_events_due_for_the_next_start(
    tmp_path: Path,
) -> None:
    ctx = build(settings(tmp_path), clock=ManualClock(T0 + 100))
    ((order, _, _),) = parties(ctx, 1)
    calls: list[int] = []

    async def broken(events: object) -> None:
        calls.append(1)
        raise RuntimeError("the gateway is down")

    ctx.reactions.on([EventKind.TIER_CHANGED], "broken", broken)
    await ctx.start()
    try:
        await ctx.ingest.record(*breach(order, T0 + 60))
        await until(lambda: bool(calls) and ctx.reactions.idle)
        assert ctx.reactions.stats.failed == 1
        await until(lambda: len(ctx.store.reactions_due()) < 2)  # the done one, deleted
        due = ctx.store.reactions_due()
        # the tier change stays due (a reaction of its kind failed); what she is shown
        # had all its reactions and is done
        assert [e.kind for e in due] == [EventKind.TIER_CHANGED]
        assert told(ctx, "victim") == Counter({(order, "tier_breach"): 1})
    finally:
        await ctx.stop()


async def test_what_she_was_shown_survives_a_restart(tmp_path: Path) -> None:
    """Before, a restart restored the tier and forgot what she was shown: her screen and
    her app's interval said "clear" until his next fix while he stood 40 m from her.
    Restoring it must not widen what she sees: her status after the restart shows no
    more of him than it did before."""
    clock = ManualClock(T0 + 61)
    first = build(settings(tmp_path), clock=clock)
    ((order, ankle, phone),) = parties(first, 1)
    victim = first.store.get_order(order).victim_id  # type: ignore[union-attr]
    her = signed_in(first.store, first.secret, [("her", "victim", victim)], T0)["her"]
    await first.start()
    try:
        await first.ingest.submit([near(phone, T0 + 60, 0), near(ankle, T0 + 60.5, 40)])
        shown = first.engine.shown_of(order)
        assert shown in (Tier.REVEAL, Tier.BREACH)
        before = await status(first, her)
    finally:
        await first.stop()
    second = build(settings(tmp_path), clock=clock)
    await second.start()
    try:
        assert second.engine.tier_of(order) == Tier.BREACH
        assert second.engine.shown_of(order) == shown
        after = await status(second, her)
        assert after["tier"] == before["tier"] == shown.label
        assert after["distance_m"] in (None, before["distance_m"])  # never a finer one
        if before["offender"] is None:
            assert after["offender"] is None
        else:
            assert after["offender"] in (None, before["offender"])
    finally:
        await second.stop()


async def status(ctx: AppContext, headers: dict[str, str]) -> dict[str, Any]:
    """Her one order as her app reads it."""
    transport = httpx.ASGITransport(app=create_app(ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as api:
        r = await api.get("/api/v1/victim/status", headers=headers)
    assert r.status_code == 200, r.text
    [entry] = r.json()["orders"]
    return dict(entry)


async def test_after_a_long_stop_old_breaches_are_not_news_on_her_lock_screen(
    tmp_path: Path,
) -> None:
    """Resumed events older than RESUME_FRESH_S run as late data: after a long outage
    she is not pushed "he is 40 m from you" about a moment long gone; the console keeps
    its incidents, and the restored state speaks for now."""
    clock = ManualClock(T0 + 100)
    first = build(settings(tmp_path), clock=clock)
    ((order, ankle, phone),) = parties(first, 1)
    fixes = [near(phone, T0 + 60, 0), near(ankle, T0 + 60, 40)]
    events = breach(order, T0 + 60)
    plans = [(e, incidents.incident_kind(e), incidents.priority_of(e)) for e in events]
    first.store.record_batch(fixes, [False, False], plans)
    first.store.close()

    clock.set(T0 + 60 + RESUME_FRESH_S + 3600)  # back an hour after the limit
    second = build(settings(tmp_path), clock=clock)
    await second.start()
    try:
        await until(lambda: second.store.reactions_due() == [])
        assert second.reactions.stats.resumed == len(events)
        assert told(second, "victim") == Counter()
        assert told(second, "staff") == Counter()
        assert [i.kind for i in second.store.incidents()] == ["breach"]  # the console has it
    finally:
        await second.stop()
