"""Events that open nothing join the open incident of their kind: its timeline shows the end."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from geographiclib.geodesic import Geodesic

from bangpae.adapters.bus import InProcessBus
from bangpae.adapters.clock import ManualClock
from bangpae.adapters.store import Store
from bangpae.domain.model import Fix, Order, Zone
from bangpae.engine.engine import Engine
from bangpae.services.ingest import Ingest
from tests.scenario import HOME, T0


def at(d: float, bearing: float = 90.0) -> tuple[float, float]:
    g = Geodesic.WGS84.Direct(HOME[0], HOME[1], bearing, d)
    return g["lat2"], g["lon2"]


class World:
    def __init__(self, store: Store, ingest: Ingest, clock: ManualClock, ankle: int, phone: int):
        self.store, self.ingest, self.clock = store, ingest, clock
        self.ankle, self.phone = ankle, phone

    async def both(self, t: float, d: float, her: float = 0.0) -> None:
        """She is ``her`` m west of home, he ``d`` m east of home, at ``t``."""
        self.clock.set(T0 + t)
        lat, lon = at(d)
        hlat, hlon = at(her, 270.0)
        await self.ingest.submit(
            [Fix(self.phone, T0 + t, hlat, hlon, 5.0), Fix(self.ankle, T0 + t, lat, lon, 5.0)]
        )

    def timeline(self, kind: str) -> list[str]:
        [incident] = [i for i in self.store.incidents(limit=100) if i.kind == kind]
        full = self.store.get_incident(incident.id)
        assert full is not None
        return [e["note"] for e in full.timeline if e["action"] == "event"]


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    store = Store(database_url)
    store.migrate()
    off = store.add_person("offender", "O")
    vic = store.add_person("victim", "V")
    ankle = store.add_device("ANKLE", "ankle_monitor", "osmand", off)
    phone = store.add_device("PHONE", "phone", "osmand", vic)
    school = Zone("school", "School", {"type": "Point", "coordinates": [*at(3000)[::-1]]}, 200.0)
    store.add_order(Order(0, off, vic, zones=(school,)))
    clock = ManualClock(T0)
    ingest = Ingest(store, Engine(), clock, InProcessBus())
    await ingest.start(tick_s=3600)
    try:
        yield World(store, ingest, clock, ankle, phone)
    finally:
        await ingest.stop()
        store.close()


async def test_stepping_out_of_breach_joins_the_breach_incident(world: World) -> None:
    for t, d in ((0, 700), (60, 400), (120, 50), (180, 300), (240, 700), (300, 1300)):
        await world.both(t, d)  # walking pace, a fix a minute: only the tiers change
    # into breach opened it; the step out of it (to reveal) joined it
    assert world.timeline("breach") == ["tier_changed", "tier_changed"]
    [breach] = [i for i in world.store.incidents(limit=100) if i.kind == "breach"]
    assert breach.updated_at == T0 + 180


async def test_leaving_an_exclusion_zone_joins_the_zone_incident(world: World) -> None:
    await world.both(0, 5000)
    await world.both(300, 3000)  # inside the school zone
    await world.both(600, 5000)  # out again, well clear of it
    assert world.timeline("zone") == ["zone_enter", "zone_exit"]


async def test_an_event_that_opens_nothing_and_finds_nothing_open_is_only_stored(
    world: World,
) -> None:
    await world.both(0, 2500)
    await world.both(300, 1800)  # notify: opens nothing (kr)
    await world.both(600, 2500)  # back to clear: nothing to join
    assert world.store.incidents(limit=100) == []
