"""Red-team attacks on the disclosure boundary over the real API (docs/disclosure.md).

Each test asserts the design's claim against an attack that once broke it; a failing
assertion's message carries what the attacker would learn.
"""

from __future__ import annotations

from datetime import UTC, datetime

from bangpae.domain import geodesy
from tests.integration.test_disclosure_guard import HIM, at, env, walk_tracker  # noqa: F401


async def test_one_future_dated_app_report_does_not_show_his_live_position(env) -> None:  # noqa: F811
    """Once a leak (critical). POST /victim/location with fix_time = now + 299 s (the API
    allows 300 s) was taken by the trusted track as reachable (299 s x 69.4 m/s), so a
    forged position 500 m from him, while her watch said 1.4 km, disclosed him at once."""
    ctx, api, users, order, devices, clock, _ = env
    await walk_tracker(ctx, devices, clock, 1400.0, n=4)  # her watch: 1.4 km, confirmed
    clock.advance(1)
    status = (await api.get("/api/v1/victim/status", headers=users["her"])).json()
    assert status["orders"][0]["offender"] is None
    ahead = datetime.fromtimestamp(clock.now() + 299.0, UTC).isoformat()
    lat, lon = at(500.0)
    body = {"lat": lat, "lon": lon, "accuracy_m": 5.0, "fix_time": ahead}
    r = await api.post("/api/v1/victim/location", json=body, headers=users["her"])
    assert r.status_code == 202
    status = (await api.get("/api/v1/victim/status", headers=users["her"])).json()
    [entry] = status["orders"]
    seen = entry["offender"]
    err = None if seen is None else geodesy.geodesic_distance_m(seen["lat"], seen["lon"], *HIM)
    r = await api.get(f"/api/v1/orders/{order}/disclosure", headers=users["op"])
    assert seen is None, (
        f"1 API report (fix_time +299 s, 1 km nearer than her watch): his live position "
        f"shown, error {err:.1f} m, distance_m={entry['distance_m']}, tier={entry['tier']}; "
        f"order paused={r.json()['paused']}"
    )


async def test_her_app_cannot_store_a_report_dated_1970_or_past_retention(env) -> None:  # noqa: F811
    """Once stored: her app's reports checked only the future limit, so a report dated
    1970 (a broken clock, or whoever holds her phone) was kept as evidence, to be purged
    at the next run. Every way in now applies the same fix-time rule."""
    ctx, api, users, _order, _devices, clock, _ = env
    lat, lon = at(3000.0)
    before = ctx.store.count_fixes()
    for when in (0.0, clock.now() - (ctx.settings.retention_days + 1) * 86400.0):
        stamp = datetime.fromtimestamp(when, UTC).isoformat()
        body = {"lat": lat, "lon": lon, "accuracy_m": 5.0, "fix_time": stamp}
        r = await api.post("/api/v1/victim/location", json=body, headers=users["her"])
        assert r.status_code == 422, (stamp, r.text)
        assert "retention" in r.json()["detail"]
    assert ctx.store.count_fixes() == before
    ok = {"lat": lat, "lon": lon, "accuracy_m": 5.0}  # a report of now is still taken
    assert (
        await api.post("/api/v1/victim/location", json=ok, headers=users["her"])
    ).status_code == 202
