"""Simulated devices that talk OsmAnd over the network, for the demo and tests.

A scenario is a list of legs per device: walk toward a point at a speed, or
stay put. Positions carry Gaussian GPS noise of the stated accuracy.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import httpx

from bangpae.domain import geodesy


@dataclass
class Leg:
    """Walk toward ``(lat, lon)`` at ``speed_mps``; or wait ``seconds`` where speed is 0."""

    lat: float
    lon: float
    speed_mps: float
    seconds: float = 0.0


@dataclass
class SimDevice:
    """One simulated tracker: where it is, where it is going, how well it knows it."""

    identifier: str
    lat: float
    lon: float
    legs: list[Leg]
    accuracy_m: float = 8.0
    key: str | None = None
    heading: float = 0.0
    speed: float = 0.0
    _waited: float = field(default=0.0, repr=False)

    def step(self, dt: float) -> None:
        """Advance along the current leg by ``dt`` seconds."""
        while self.legs:
            leg = self.legs[0]
            if leg.speed_mps <= 0:
                self.speed = 0.0
                self._waited += dt
                if self._waited >= leg.seconds:
                    self.legs.pop(0)
                    self._waited = 0.0
                return
            dist, az = geodesy.geodesic_inverse(self.lat, self.lon, leg.lat, leg.lon)
            travel = leg.speed_mps * dt
            self.heading, self.speed = az, leg.speed_mps
            if travel >= dist:
                self.lat, self.lon = leg.lat, leg.lon
                self.legs.pop(0)
                return
            lat, lon = geodesy.step_local(self.lat, self.lon, travel, az)
            self.lat, self.lon = float(lat), float(lon)
            return
        self.speed = 0.0

    def observed(self, rng: random.Random) -> tuple[float, float]:
        """The position as a receiver of this accuracy would report it."""
        sigma = self.accuracy_m / 2.0
        north, east = rng.gauss(0, sigma), rng.gauss(0, sigma)
        return geodesy.offset_m(self.lat, self.lon, north, east)


def point_at(lat: float, lon: float, distance_m: float, bearing: float) -> tuple[float, float]:
    """The point ``distance_m`` from ``(lat, lon)`` on ``bearing`` (geodesic)."""
    return geodesy.destination(lat, lon, bearing, distance_m)


async def run_devices(
    url: str,
    devices: list[SimDevice],
    interval_s: float = 2.0,
    duration_s: float | None = None,
    seed: int = 7,
    clock_offset_s: float = 0.0,
) -> int:
    """Send each device's position every ``interval_s`` over OsmAnd HTTP; return fixes acked."""
    import time

    rng = random.Random(seed)
    sent = 0
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=10.0) as client:
        while duration_s is None or time.monotonic() - started < duration_s:
            tick = time.monotonic()
            for dev in devices:
                dev.step(interval_s)
                lat, lon = dev.observed(rng)
                params = {
                    "id": dev.identifier,
                    "lat": f"{lat:.6f}",
                    "lon": f"{lon:.6f}",
                    "timestamp": str(int(time.time() + clock_offset_s)),
                    "accuracy": f"{dev.accuracy_m:.0f}",
                    "speed": f"{dev.speed / 0.514444:.2f}",  # knots, as OsmAnd sends
                    "bearing": f"{dev.heading:.0f}",
                    "batt": "87",
                }
                if dev.key:
                    params["key"] = dev.key
                try:
                    r = await client.post(url, params=params)
                    sent += r.status_code == 200
                except httpx.HTTPError:
                    pass  # the server may be restarting; the next tick tries again
            await asyncio.sleep(max(0.0, interval_s - (time.monotonic() - tick)))
    return sent


def seoul_scenario() -> tuple[dict[str, SimDevice], list[str]]:
    """Two cases in Seoul: one offender approaching his victim and leaving, one far away."""
    home = (37.5663, 126.9779)  # near Seoul City Hall
    start = point_at(*home, 2600.0, 80.0)
    near = point_at(*home, 350.0, 80.0)
    close = point_at(*home, 70.0, 80.0)
    away = point_at(*home, 3200.0, 100.0)
    devices = {
        "DEMO-ANKLE-1": SimDevice(
            "DEMO-ANKLE-1",
            *start,
            legs=[
                Leg(*near, 30.0),
                Leg(*near, 0.0, 20.0),
                Leg(*close, 6.0),
                Leg(*close, 0.0, 10.0),
                Leg(*away, 30.0),
            ],
        ),
        "DEMO-PHONE-1": SimDevice(
            "DEMO-PHONE-1", *home, legs=[Leg(*home, 0.0, 1e9)], accuracy_m=12.0
        ),
        "DEMO-ANKLE-2": SimDevice(
            "DEMO-ANKLE-2",
            *point_at(37.5172, 127.0473, 5000.0, 200.0),
            legs=[
                Leg(*point_at(37.5172, 127.0473, 4500.0, 230.0), 1.4),
                Leg(*point_at(37.5172, 127.0473, 5000.0, 200.0), 1.4),
            ]
            * 20,
        ),
        "DEMO-PHONE-2": SimDevice("DEMO-PHONE-2", 37.5172, 127.0473, legs=[], accuracy_m=10.0),
    }
    notes = [
        "Case 1: the offender approaches his victim near Seoul City Hall from 2.6 km,",
        "        lingers at 350 m (reveal), comes within 70 m (breach), then leaves.",
        "Case 2: offender and victim 5 km apart in Gangnam: the victim sees nothing.",
    ]
    return devices, notes
