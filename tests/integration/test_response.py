"""The control centre's response on the real composition root, on SQLite and PostgreSQL.

Fixes go through the real ingest; time is a ManualClock moved by the tests, and the
escalation timers are stepped at chosen instants (the background tick is slowed
down so it never races the test). Webhooks go to a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from geographiclib.geodesic import Geodesic
from sqlalchemy import text

from bangpae.adapters.bus import InProcessBus
from bangpae.adapters.clock import ManualClock
from bangpae.adapters.notify import WebhookChannel
from bangpae.adapters.store import Store
from bangpae.adapters.store import store as store_module
from bangpae.api.factory import create_app
from bangpae.app import AppContext, build
from bangpae.config import Settings
from bangpae.domain.model import EventKind, Fix, Order
from bangpae.engine.engine import Engine
from bangpae.services.auth import Principal
from bangpae.services.handoffs import Handoffs
from bangpae.services.ingest import Ingest
from tests.integration.conftest import signed_in
from tests.scenario import HOME, T0

SECRET = "handoff-secret-for-tests"


def at(d: float, bearing: float = 90.0) -> tuple[float, float]:
    g = Geodesic.WGS84.Direct(HOME[0], HOME[1], bearing, d)
    return g["lat2"], g["lon2"]


def fix(device: int, t: float, d: float, bearing: float = 90.0, acc: float = 5.0) -> Fix:
    lat, lon = at(d, bearing)
    return Fix(device, T0 + t, lat, lon, acc)


async def until(condition: Callable[[], bool], within_s: float = 5.0) -> None:
    """Wait for the background delivery to reach a state."""
    async with asyncio.timeout(within_s):
        while not condition():  # noqa: ASYNC110 - delivery runs in its own task
            await asyncio.sleep(0.01)


# -- a real webhook receiver -------------------------------------------------------------------


@dataclass
class Receiver:
    """An HTTP server that answers 500 to the first ``failures`` POSTs, then 200."""

    failures: int
    received: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver(failures=2)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            body = self.rfile.read(int(self.headers["Content-Length"]))
            rx.received.append((body, dict(self.headers.items())))
            code = 500 if len(rx.received) <= rx.failures else 200
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    rx.url = f"http://127.0.0.1:{server.server_address[1]}/police/hook"
    yield rx
    server.shutdown()
    server.server_close()


# -- the application ---------------------------------------------------------------------------


@dataclass
class Env:
    ctx: AppContext
    api: httpx.AsyncClient
    clock: ManualClock
    headers: dict[str, dict[str, str]]
    order: int
    ankle: int
    phone: int
    officers: list[int]


@pytest.fixture
def profile() -> str:
    return "kr"


@pytest.fixture
def order_kw() -> dict[str, float]:
    return {}


@pytest.fixture
async def env(
    database_url: str,
    tmp_path: Path,
    profile: str,
    order_kw: dict[str, float],
    request: pytest.FixtureRequest,
) -> AsyncIterator[Env]:
    webhook = (
        request.getfixturevalue("receiver").url if "receiver" in request.fixturenames else None
    )
    clock = ManualClock(T0)
    settings = Settings(
        data_dir=tmp_path,
        database_url=database_url,
        tick_s=60,  # the tests step the timers themselves
        handoff_webhook_url=webhook,
        handoff_secret=SECRET if webhook else None,
        handoff_retry_base_s=0.01,
        public_url="https://bangpae.example",
    )
    ctx = build(settings, clock=clock)
    s = ctx.store
    off = s.add_person("offender", "O")
    vic = s.add_person("victim", "V")
    ankle = s.add_device("ANKLE", "ankle_monitor", "osmand", off)
    phone = s.add_device("PHONE", "phone", "osmand", vic)
    order = s.add_order(Order(0, off, vic, profile=profile, **order_kw))
    officers = []
    for name, d in (("far", 5000.0), ("near", 1000.0), ("idle", None)):
        person = s.add_person("officer", name)
        officers.append(person)
        device = s.add_device(f"FIELD-{name}", "phone", "osmand", person)
        if d is not None:
            s.append_fixes([fix(device, -30, d, bearing=0.0)])
    users = (
        ("op", "operator", None),
        ("sup", "supervisor", None),
        ("aud", "auditor", None),
        ("vic", "victim", vic),
    )
    headers = signed_in(s, ctx.secret, users, T0)
    await ctx.start()
    api = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(ctx)), base_url="http://test"
    )
    yield Env(ctx, api, clock, headers, order, ankle, phone, officers)
    await api.aclose()
    await ctx.stop()


async def open_breach(env: Env) -> int:
    """Both parties report; he comes within 50 m of her at t=10: one critical incident."""
    await env.ctx.ingest.submit([fix(env.phone, 0, 0), fix(env.ankle, 0, 3000)])
    env.clock.set(T0 + 10)
    await env.ctx.ingest.submit([fix(env.phone, 10, 0), fix(env.ankle, 10, 50)])
    breach = [i for i in env.ctx.store.incidents(status="open") if i.kind == "breach"]
    assert len(breach) == 1 and breach[0].priority == "critical"
    assert breach[0].opened_at == T0 + 10
    return breach[0].id


# -- 5. jitter ---------------------------------------------------------------------------------


async def test_a_thousand_fixes_jittering_around_the_keep_away_boundary_open_one_incident(
    database_url: str,
) -> None:
    store = Store(database_url)
    store.migrate()
    off = store.add_person("offender", "O")
    vic = store.add_person("victim", "V")
    ankle = store.add_device("ANKLE", "ankle_monitor", "osmand", off)
    phone = store.add_device("PHONE", "phone", "osmand", vic)
    order = store.add_order(Order(0, off, vic))
    clock = ManualClock(T0)
    bus = InProcessBus()
    decided = bus.subscribe()
    ingest = Ingest(store, Engine(), clock, bus)
    await ingest.start(tick_s=3600)
    try:
        await ingest.submit([fix(phone, 0, 0)])
        rng = random.Random(20261123)
        # keep-away 100 m, 5 m + 5 m accuracy: breach is entered at 110 m and left only
        # beyond 160 m; the noise spans 60-159 m, in and out of the entry radius
        distances = [rng.uniform(60.0, 159.0) for _ in range(1000)]
        assert min(distances) < 70 and max(distances) > 150
        for chunk in range(0, 1000, 10):  # a tracker uploads ten fixes at a time
            batch = [
                fix(ankle, 1 + (chunk + k) * 0.5, d, bearing=rng.uniform(0, 360))
                for k, d in enumerate(distances[chunk : chunk + 10])
            ]
            clock.set(batch[-1].fix_time)
            # her phone keeps reporting too, so her fix never goes stale
            await ingest.submit([*batch, fix(phone, batch[-1].fix_time - T0, 0)])
        assert store.count_fixes() == 1 + 1000 + 100
        incidents = [i for i in store.incidents(limit=1000) if i.order_id == order]
        assert [(i.kind, i.priority) for i in incidents] == [("breach", "critical")]
        assert ingest.engine.order_view(order).tier.label == "breach"
        changes = []
        while not decided.empty():
            e = decided.get_nowait()
            if e.kind == EventKind.TIER_CHANGED:
                changes.append((e.tier_from.label, e.tier_to.label))
        # entered once (perhaps through reveal, if the first fix fell outside 110 m), never left
        assert [c for c in changes if "breach" in c] == [(changes[-1][0], "breach")]
        assert len(changes) <= 2
    finally:
        await ingest.stop()
        store.close()


# -- 2. escalation -----------------------------------------------------------------------------


async def test_an_unacknowledged_critical_incident_pages_the_supervisor_every_60_s(
    env: Env,
) -> None:
    bus = env.ctx.bus.subscribe()
    iid = await open_breach(env)
    esc = env.ctx.escalation
    assert esc is not None
    env.clock.set(T0 + 69.9)
    assert await esc.step(env.clock.now()) == []
    env.clock.set(T0 + 70)
    [page] = await esc.step(env.clock.now())
    assert page.kind == EventKind.INCIDENT_ESCALATED and page.data["page"] == 1
    assert page.data["to"] == "supervisor" and page.data["incident_id"] == iid
    assert await esc.step(env.clock.now()) == []  # never twice for one interval
    env.clock.set(T0 + 129)
    assert await esc.step(env.clock.now()) == []
    env.clock.set(T0 + 130)
    [again] = await esc.step(env.clock.now())
    assert again.data["page"] == 2
    published = []
    while not bus.empty():
        e = bus.get_nowait()
        if e.kind == EventKind.INCIDENT_ESCALATED:
            published.append(e.data["page"])
    assert published == [1, 2]
    body = (
        await env.api.get(f"/api/v1/incidents/{iid}/response", headers=env.headers["sup"])
    ).json()
    assert body["escalations"] == 2 and body["times"]["to_acknowledge_s"] is None
    timeline = env.ctx.store.get_incident(iid).timeline
    assert [e["action"] for e in timeline].count("escalated") == 2
    r = await env.api.post(
        f"/api/v1/incidents/{iid}/acknowledge", json={"note": "seen"}, headers=env.headers["op"]
    )
    assert r.status_code == 200, r.text
    env.clock.set(T0 + 400)
    assert await esc.step(env.clock.now()) == []


async def test_a_restarted_service_remembers_the_pages_already_sent(env: Env) -> None:
    iid = await open_breach(env)
    env.clock.set(T0 + 75)
    assert len(await env.ctx.escalation.step(env.clock.now())) == 1
    from bangpae.services.response import Escalation

    fresh = Escalation(env.ctx.store, InProcessBus())
    assert await fresh.step(T0 + 100) == []
    [page] = await fresh.step(T0 + 135)
    assert page.data["page"] == 2 and page.data["incident_id"] == iid


async def test_high_priority_incidents_do_not_escalate(env: Env) -> None:
    iid = await open_breach(env)
    await env.api.post(f"/api/v1/incidents/{iid}/resolve", json={}, headers=env.headers["op"])
    env.clock.set(T0 + 1000)
    assert await env.ctx.escalation.step(env.clock.now()) == []


# -- 3. dispatch suggestions -------------------------------------------------------------------


async def test_officers_are_suggested_nearest_first_with_travel_time(env: Env) -> None:
    iid = await open_breach(env)
    before = len(env.ctx.store.audit_records(limit=1000))
    r = await env.api.get(f"/api/v1/incidents/{iid}/suggestions", headers=env.headers["op"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["speed_kmh"] == 40.0 and body["target"]["party"] == "victim"
    names = [o["name"] for o in body["officers"]]
    assert names == ["near", "far"]  # "idle" has a device that never reported
    near = body["officers"][0]
    assert near["distance_m"] == pytest.approx(1000.0, abs=1.0)
    assert near["eta_s"] == pytest.approx(1000.0 / (40 / 3.6), abs=0.5)
    records = env.ctx.store.audit_records(limit=1000)
    assert len(records) == before + 1 and records[-1]["purpose"] == "dispatch"
    assert records[-1]["subject"] == f"incident:{iid}"
    r = await env.api.get(f"/api/v1/incidents/{iid}/suggestions", headers=env.headers["vic"])
    assert r.status_code == 403
    r = await env.api.get("/api/v1/incidents/999999/suggestions", headers=env.headers["op"])
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


async def test_she_sees_who_read_her_position_by_role_and_purpose_never_by_name(
    env: Env,
) -> None:
    iid = await open_breach(env)
    env.clock.set(T0 + 20)
    r = await env.api.get(f"/api/v1/incidents/{iid}/suggestions", headers=env.headers["op"])
    assert r.status_code == 200 and r.json()["target"]["party"] == "victim"
    assert (await env.api.get("/api/v1/victim/status", headers=env.headers["vic"])).is_success
    # the operator reading his fixes is about him, not her: not in her list
    basis = {"purpose": "incident_response", "incident": iid}
    r = await env.api.get(
        f"/api/v1/devices/{env.ankle}/fixes", headers=env.headers["op"], params=basis
    )
    assert r.status_code == 200, r.text
    r = await env.api.get("/api/v1/victim/accesses", headers=env.headers["vic"])
    assert r.status_code == 200
    assert r.json() == [
        {
            "at": "2027-01-15T08:00:20.000Z",
            "role": "operator",
            "purpose": "dispatch",
            "fields": ["lat", "lon", "officers", "count=2", f"basis=incident:{iid}"],
            "count": 1,
            "first_at": "2027-01-15T08:00:20.000Z",
            "last_at": "2027-01-15T08:00:20.000Z",
        }
    ]
    # her own device's fixes read by staff are hers
    r = await env.api.get(
        f"/api/v1/devices/{env.phone}/fixes",
        headers=env.headers["op"],
        params=basis,
    )
    assert r.status_code == 200, r.text
    r = await env.api.get("/api/v1/victim/accesses", headers=env.headers["vic"])
    assert [(a["role"], a["purpose"]) for a in r.json()] == [
        ("operator", "incident_response"),
        ("operator", "dispatch"),
    ]
    assert all("actor" not in a and "op" not in a.values() for a in r.json())


def test_the_dispatch_speed_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().dispatch_speed_kmh == 40.0
    monkeypatch.setenv("BANGPAE_DISPATCH_SPEED_KMH", "25")
    assert Settings().dispatch_speed_kmh == 25.0


def test_a_webhook_without_a_signing_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="handoff_secret"):
        Settings(handoff_webhook_url="https://police.example/hook")


# -- 6. scenarios per playbook -----------------------------------------------------------------

# The steps each playbook asks for on a breach, in order, and what the victim and the
# police are told once every step is done.
PLAYBOOK_BREACH = {
    "kr": (
        ["review", "notify_police", "dispatch_officer", "call_victim", "call_offender"],
        "Police and an officer are on the way",
        "Please send a patrol",
    ),
    "fr": (
        ["call_victim", "notify_police", "call_offender"],
        "inside the alert distance",
        "Anti-approach bracelet alert",
    ),
    "es": (
        ["call_victim", "call_offender", "notify_police"],
        "inside your protection zone",
        "Cometa",
    ),
}


@pytest.mark.parametrize("profile", ["kr", "fr", "es"])
async def test_a_breach_is_worked_through_its_profiles_playbook(env: Env, profile: str) -> None:
    api, h = env.api, env.headers["op"]
    steps, victim_told, police_told = PLAYBOOK_BREACH[profile]
    iid = await open_breach(env)
    url = f"/api/v1/incidents/{iid}"

    view = (await api.get(f"{url}/response", headers=h)).json()
    assert view["profile"] == profile and view["checklist"]["kind"] == "breach"
    assert [s["id"] for s in view["checklist"]["steps"]] == steps
    assert view["checklist"]["next_step"] == steps[0]
    assert not any(s["done"] for s in view["checklist"]["steps"])

    # nobody acknowledges within 60 s: the supervisor is paged
    env.clock.set(T0 + 70)
    assert len(await env.ctx.escalation.step(env.clock.now())) == 1

    env.clock.set(T0 + 75)
    r = await api.post(f"{url}/acknowledge", json={"note": "on it"}, headers=h)
    assert r.status_code == 200 and r.json()["status"] == "acknowledged"
    times = (await api.get(url, headers=h)).json()["response_times"]
    assert times["to_acknowledge_s"] is not None and times["to_acknowledge_s"] > 60, times
    assert times["to_dispatch_s"] is None, times

    # the operator works down the checklist; dispatch and the police hand-off tick
    # their own steps off
    officer = (await api.get(f"{url}/suggestions", headers=h)).json()["officers"][0]
    for i, step in enumerate(steps):
        env.clock.set(T0 + 80 + i)
        if step == "dispatch_officer":
            r = await api.post(
                f"{url}/dispatch", json={"officer_id": officer["officer_id"]}, headers=h
            )
        elif step == "notify_police":
            r = await api.post(f"{url}/handoff", json={"channel": "sms"}, headers=h)
            assert r.status_code == 201, r.text
            await until(lambda: env.ctx.store.handoffs_for_incident(iid)[0].status == "logged")
        else:
            r = await api.post(f"{url}/steps/{step}", json={"note": "called"}, headers=h)
        assert r.status_code in (200, 201), (step, r.text)
        view = (await api.get(f"{url}/response", headers=h)).json()
        done = [s["id"] for s in view["checklist"]["steps"] if s["done"]]
        assert done == steps[: i + 1], (profile, step, done)

    if "dispatch_officer" not in steps:  # the playbook does not ask for it, but he may go
        env.clock.set(T0 + 100)
        r = await api.post(f"{url}/dispatch", json={"officer_id": officer["officer_id"]}, headers=h)
        assert r.status_code == 200
    env.clock.set(T0 + 310)
    assert (await api.post(f"{url}/on-scene", json={}, headers=h)).status_code == 200
    env.clock.set(T0 + 400)
    r = await api.post(f"{url}/resolve", json={"outcome": "resolved"}, headers=h)
    assert r.status_code == 200 and r.json()["status"] == "resolved"

    view = (await api.get(f"{url}/response", headers=h)).json()
    checklist = view["checklist"]
    assert checklist["complete"] and checklist["next_step"] is None
    told = {
        party: [s["told"][party]["en"] for s in checklist["steps"] if party in s["told"]]
        for party in ("victim", "police", "offender")
    }
    assert any(victim_told in t for t in told["victim"]), told
    assert any(police_told in t for t in told["police"]), told
    assert told["offender"], "every playbook tells the offender to leave"
    ko = [s["told"]["victim"]["ko"] for s in checklist["steps"] if "victim" in s["told"]]
    assert ko and all(ko)
    dispatched_at = T0 + 80 + steps.index("dispatch_officer") if profile == "kr" else T0 + 100
    assert view["times"] == {
        "to_acknowledge_s": 65.0,
        "to_dispatch_s": pytest.approx(dispatched_at - (T0 + 10)),
        "to_on_scene_s": 300.0,
    }
    assert view["escalations"] == 1
    # a closed incident takes no more steps, and is not handed off any more
    r = await api.post(f"{url}/steps/{steps[0]}", json={}, headers=h)
    assert r.status_code == 422
    r = await api.post(f"{url}/handoff", json={"channel": "sms"}, headers=h)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("profile", "order_kw"),
    # France: alert distance 1 km, pre-alert at twice it
    [("fr", {"keep_away_m": 1000.0, "reveal_radius_m": 1000.0, "notify_radius_m": 2000.0})],
)
async def test_fr_pre_alert_calls_the_offender_and_tells_the_victim_nothing_if_he_complies(
    env: Env,
) -> None:
    api, h = env.api, env.headers["op"]
    await env.ctx.ingest.submit([fix(env.phone, 0, 0), fix(env.ankle, 0, 5000)])
    env.clock.set(T0 + 600)  # walking pace: no approach or jump alarm, only the tier
    await env.ctx.ingest.submit([fix(env.phone, 600, 0), fix(env.ankle, 600, 1800)])
    [pre] = env.ctx.store.incidents(status="open")
    assert (pre.kind, pre.priority) == ("pre_alert", "high")
    url = f"/api/v1/incidents/{pre.id}"
    view = (await api.get(f"{url}/response", headers=h)).json()["checklist"]
    assert [s["id"] for s in view["steps"]] == ["review", "call_offender", "check_compliance"]
    assert "victim" in view["steps"][2]["withheld"]
    # a pre-alert is high, not critical: nobody is paged
    env.clock.set(T0 + 800)
    assert await env.ctx.escalation.step(env.clock.now()) == []
    for step in ("review", "call_offender"):
        assert (await api.post(f"{url}/steps/{step}", json={}, headers=h)).status_code == 200
    # he complies and turns back: nothing new opens, and the victim was never told
    env.clock.set(T0 + 1200)
    await env.ctx.ingest.submit([fix(env.phone, 1200, 0), fix(env.ankle, 1200, 4000)])
    assert [i.id for i in env.ctx.store.incidents(status="open")] == [pre.id]
    r = await api.post(f"{url}/steps/check_compliance", json={"note": "moved away"}, headers=h)
    checklist = r.json()["checklist"]
    assert checklist["complete"]
    told = {p for s in checklist["steps"] for p in s["told"]}
    assert told == {"offender"}, "in a pre-alert only the offender is called"
    assert (await api.post(f"{url}/resolve", json={}, headers=h)).status_code == 200
    assert [i.kind for i in env.ctx.store.incidents(status="open")] == []


async def test_a_step_the_playbook_does_not_have_is_not_found(env: Env) -> None:
    iid = await open_breach(env)
    r = await env.api.post(
        f"/api/v1/incidents/{iid}/steps/check_compliance", json={}, headers=env.headers["op"]
    )
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


# -- 4 and 7. police hand-off ------------------------------------------------------------------


async def test_a_webhook_hand_off_is_retried_until_delivered_and_signed(
    receiver: Receiver, env: Env
) -> None:
    iid = await open_breach(env)
    h = env.headers["op"]
    r = await env.api.post(
        f"/api/v1/incidents/{iid}/handoff",
        json={"channel": "webhook", "note": "patrol requested"},
        headers=h,
    )
    assert r.status_code == 201, r.text
    created = r.json()
    hid = created["id"]
    assert created["status"] == "pending" and created["open"]
    live_url = created["live_url"]
    assert live_url.startswith("https://bangpae.example/api/v1/police/live/")

    await until(lambda: env.ctx.store.get_handoff(hid).status != "pending")
    [listed] = (await env.api.get(f"/api/v1/incidents/{iid}/handoffs", headers=h)).json()
    assert listed["status"] == "delivered"
    assert [(a["attempt"], a["status"], a["http_status"]) for a in listed["attempts"]] == [
        (1, "failed", 500),
        (2, "failed", 500),
        (3, "delivered", 200),
    ]
    assert "live_url" not in listed

    assert len(receiver.received) == 3
    bodies = {body for body, _ in receiver.received}
    assert len(bodies) == 1, "every attempt sends the same bytes"
    for body, headers in receiver.received:
        expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Bangpae-Signature"], f"sha256={expected}")
        assert headers["Content-Type"] == "application/json"
    case = json.loads(bodies.pop())
    assert case["handoff_id"] == hid and case["live_url"] == live_url
    assert case["incident"]["id"] == iid and case["incident"]["priority"] == "critical"
    assert case["order"]["id"] == env.order and case["note"] == "patrol requested"
    assert case["last_known_positions"]["offender"]["lat"] == pytest.approx(at(50)[0], abs=1e-6)
    assert [e["action"] for e in case["timeline"]][0] == "event"
    with env.ctx.store.engine.connect() as c:  # kept sealed: the positions are not at rest
        raw = c.execute(
            text("SELECT CAST(summary AS TEXT) FROM handoffs WHERE id = :id"), {"id": hid}
        ).scalar_one()
    assert "enc1:" in raw and repr(case["last_known_positions"]["offender"]["lat"]) not in raw

    # the police follow the live link while the hand-off is open; each read is audited
    path = live_url.removeprefix("https://bangpae.example")
    live = await env.api.get(path)
    assert live.status_code == 200
    assert set(live.json()["positions"]) == {"offender", "victim"}
    last = env.ctx.store.audit_records(limit=1000)[-1]
    assert (last["role"], last["actor"], last["purpose"]) == (
        "police",
        f"handoff:{hid}",
        "police_handoff",
    )
    assert (await env.api.get(path + "x")).status_code == 404

    r = await env.api.post(
        f"/api/v1/incidents/{iid}/handoffs/{hid}/close", json={"note": "police on scene"}, headers=h
    )
    assert r.status_code == 200 and r.json()["open"] is False
    assert (await env.api.get(path)).status_code == 404
    again = await env.api.post(f"/api/v1/incidents/{iid}/handoffs/{hid}/close", json={}, headers=h)
    assert again.status_code == 422
    actions = [e["action"] for e in env.ctx.store.get_incident(iid).timeline]
    assert "handoff" in actions and "handoff_closed" in actions


async def test_an_unconfigured_webhook_is_refused_and_sms_is_logged(env: Env) -> None:
    iid = await open_breach(env)
    h = env.headers["sup"]
    r = await env.api.post(
        f"/api/v1/incidents/{iid}/handoff", json={"channel": "webhook"}, headers=h
    )
    assert r.status_code == 422 and "not configured" in r.json()["detail"]
    r = await env.api.post(f"/api/v1/incidents/{iid}/handoff", json={"channel": "sms"}, headers=h)
    assert r.status_code == 201
    hid = r.json()["id"]
    await until(lambda: env.ctx.store.get_handoff(hid).status == "logged")
    record = env.ctx.store.get_handoff(hid)
    assert [(a.attempt, a.status) for a in record.attempts] == [(1, "logged")]
    r = await env.api.post(
        f"/api/v1/incidents/{iid}/handoff", json={"channel": "sms"}, headers=env.headers["aud"]
    )
    assert r.status_code == 403


async def test_a_webhook_that_never_answers_is_failed_after_backing_off(
    database_url: str,
) -> None:
    store = Store(database_url)
    store.migrate()
    try:
        off = store.add_person("offender", "O")
        vic = store.add_person("victim", "V")
        order = store.add_order(Order(0, off, vic))
        from bangpae.domain.model import make_event

        e = make_event(EventKind.TAMPER, T0, 1, order_id=order)
        iid, _ = store.record_incident("tamper", "critical", e)
        delays: list[float] = []

        async def no_wait(seconds: float) -> None:
            delays.append(seconds)

        # nothing listens on this port: every attempt fails to connect
        channel = WebhookChannel("http://127.0.0.1:9/unreachable", SECRET, timeout_s=1)
        desk = Handoffs(
            store, ManualClock(T0), {"webhook": channel}, "https://x", 1.0, 6, sleep=no_wait
        )
        who = Principal(1, "op", "operator", None)
        hid, _ = await asyncio.to_thread(desk._create, iid, "webhook", "", who, T0, None)
        assert await desk.deliver(hid) == "failed"
        record = store.get_handoff(hid)
        assert record.status == "failed" and len(record.attempts) == 6
        assert all(a.status == "failed" and a.error for a in record.attempts)
        assert delays == [1.0, 2.0, 4.0, 8.0, 16.0]
    finally:
        store.close()


def test_schema_0004_adds_the_hand_off_tables_and_can_be_rolled_back(database_url: str) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import inspect

    store = Store(database_url)
    try:
        store.migrate()
        with store.engine.connect() as c:
            assert {"handoffs", "handoff_attempts"} <= set(inspect(c).get_table_names())
        cfg = Config()
        cfg.set_main_option(
            "script_location", str(Path(store_module.__file__).parent / "migrations")
        )
        with store.engine.begin() as c:
            cfg.attributes["connection"] = c
            command.downgrade(cfg, "0003")
        with store.engine.connect() as c:
            assert "handoffs" not in set(inspect(c).get_table_names())
        store.migrate()
        with store.engine.connect() as c:
            assert "handoff_attempts" in set(inspect(c).get_table_names())
    finally:
        store.close()
