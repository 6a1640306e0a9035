"""The disclosure boundary over the real API: forged reports from her app, the misuse
guard's pause, operators deciding it, and the per-person report budget (docs/disclosure.md)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from geographiclib.geodesic import Geodesic

from bangpae.adapters.clock import ManualClock
from bangpae.api.factory import create_app
from bangpae.app import OWN_REPORTS_PER_MINUTE, build
from bangpae.config import Settings
from bangpae.domain.model import Fix, Order
from tests.integration.conftest import signed_in
from tests.scenario import T0

HIM = (37.5663, 126.9779)


def at(d: float, bearing: float = 0.0) -> tuple[float, float]:
    g = Geodesic.WGS84.Direct(HIM[0], HIM[1], bearing, d)
    return g["lat2"], g["lon2"]


@pytest.fixture
async def env(tmp_path: Path):
    clock = ManualClock(T0)
    settings = Settings(data_dir=tmp_path)
    ctx = build(settings, clock=clock)
    s = ctx.store
    off, vic = s.add_person("offender", "O"), s.add_person("victim", "V")
    ankle = s.add_device("ANKLE", "ankle_monitor", "api", off)
    watch = s.add_device("WATCH", "watch", "api", vic)
    order = s.add_order(Order(0, off, vic))
    users = signed_in(
        s,
        ctx.secret,
        [("her", "victim", vic), ("op", "operator", None), ("field", "field_officer", None)],
        T0,
    )
    await ctx.start()
    api = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(ctx)), base_url="http://test"
    )
    yield ctx, api, users, order, (ankle, watch), clock, settings
    await api.aclose()
    await ctx.stop()


async def report(
    api: httpx.AsyncClient, her: dict[str, str], pos: tuple[float, float], acc: float = 5.0
) -> httpx.Response:
    body = {"lat": pos[0], "lon": pos[1], "accuracy_m": acc}
    return await api.post("/api/v1/victim/location", json=body, headers=her)


async def walk_tracker(ctx, devices, clock, distance: float, n: int = 3) -> None:
    ankle, watch = devices
    for _ in range(n):
        clock.advance(15)
        now = clock.now()
        await ctx.ingest.submit([Fix(ankle, now, *HIM, 5.0, received_at=now)])
        await ctx.ingest.submit([Fix(watch, now, *at(distance), 5.0, received_at=now)])


async def test_one_forged_jump_from_her_app_reveals_nothing_and_an_operator_decides(env) -> None:
    ctx, api, users, order, devices, clock, _ = env
    await walk_tracker(ctx, devices, clock, 1500.0)  # her watch: 1.5 km from him
    clock.advance(1)
    assert (await report(api, users["her"], at(500.0))).status_code == 202  # forged, 1 km nearer
    status = (await api.get("/api/v1/victim/status", headers=users["her"])).json()
    [entry] = status["orders"]
    assert entry["offender"] is None and entry["tier"] in ("notify", "reveal")
    # nothing was read: no audit record of a position of his
    reads = [r for r in ctx.store.audit_records(limit=1000) if r["action"] == "read_position"]
    assert reads == []
    # the guard paused the order at once, and the control centre has the incident
    r = await api.get(f"/api/v1/orders/{order}/disclosure", headers=users["op"])
    assert r.status_code == 200 and r.json()["paused"] is True
    assert [h["reason"] for h in r.json()["history"]] == ["jump"]
    kinds = [i.kind for i in ctx.store.incidents("open")]
    assert "disclosure_misuse" in kinds

    # an operator lifts it, with a reason; audited; it survives a restart
    r = await api.post(
        f"/api/v1/orders/{order}/disclosure",
        json={"paused": False, "reason": "called her: phone was restored from a backup"},
        headers=users["op"],
    )
    assert r.status_code == 200 and r.json()["paused"] is False
    assert r.json()["history"][0] == {
        "kind": "disclosure_decided",
        "at": r.json()["history"][0]["at"],
        "reason": "called her: phone was restored from a backup",
        "paused": False,
        "role": "operator",
    }
    audit = [x for x in ctx.store.audit_records(limit=1000) if x["action"] == "disclosure_resume"]
    assert [x["subject"] for x in audit] == [f"order:{order}"]
    r = await api.post(
        f"/api/v1/orders/{order}/disclosure",
        json={"paused": True, "reason": "second report of the same phone"},
        headers=users["op"],
    )
    assert r.json()["paused"] is True
    await ctx.ingest.reload_registry(restore=True)  # as after a restart
    assert ctx.engine.order_view(order).misuse_paused


async def test_the_pause_is_for_the_control_centre_only(env) -> None:
    _, api, users, order, *_ = env
    body = {"paused": False, "reason": "I would like to see him again"}
    for who in ("her", "field"):
        r = await api.post(f"/api/v1/orders/{order}/disclosure", json=body, headers=users[who])
        assert r.status_code == 403
    r = await api.post(
        f"/api/v1/orders/{order}/disclosure",
        json={"paused": False, "reason": "x"},
        headers=users["op"],
    )
    assert r.status_code == 422  # a reason is required
    r = await api.get("/api/v1/orders/999999/disclosure", headers=users["op"])
    assert r.status_code == 404


async def test_her_reports_are_budgeted_per_person_and_the_excess_is_refused(env) -> None:
    ctx, api, users, *_ = env
    codes = []
    for _ in range(OWN_REPORTS_PER_MINUTE + 5):
        codes.append((await report(api, users["her"], at(3000.0))).status_code)
    assert codes.count(202) == OWN_REPORTS_PER_MINUTE and codes[-1] == 429
    r = await report(api, users["her"], at(3000.0))
    assert int(r.headers["retry-after"]) >= 1
    # the SOS is never budgeted
    r = await api.post(
        "/api/v1/victim/sos",
        json={"lat": 37.5, "lon": 127.0, "silent": True},
        headers=users["her"],
    )
    assert r.status_code == 201
    ctx.clock.advance(61)
    assert (await report(api, users["her"], at(3000.0))).status_code == 202


async def test_his_position_is_never_shown_beyond_600_m_however_poor_she_says_her_fix_is(
    env,
) -> None:
    ctx, api, users, order, (ankle, watch), clock, _ = env
    for d, shown in ((724.0, False), (650.0, False), (590.0, True)):
        for _ in range(2):
            clock.advance(61)  # slow enough for her budget, no closing pattern
            now = clock.now()
            await ctx.ingest.submit([Fix(ankle, now, *HIM, 5.0, received_at=now)])
            assert (await report(api, users["her"], at(d, 90.0), acc=5000.0)).status_code == 202
        entry = (await api.get("/api/v1/victim/status", headers=users["her"])).json()["orders"][0]
        assert (entry["offender"] is not None) is shown, (d, entry)
    assert ctx.store.disclosure_history(order) == []  # a still track: no guard raised
