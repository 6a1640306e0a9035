"""Notices to victims and staff, on the real composition root.

Fixes go through the real ingest and the notices follow the real bus. Web Push goes
to a push service run here on 127.0.0.1, which decrypts each message with the
browser-side keys (RFC 8291) and checks the VAPID signature, as a real one does.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import random
import re
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import http_ece
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from geographiclib.geodesic import Geodesic

from bangpae.adapters.clock import ManualClock
from bangpae.api.factory import create_app
from bangpae.app import AppContext, build
from bangpae.config import Settings
from bangpae.domain.model import EventKind, Fix, Order
from bangpae.services.auth import read_token
from tests.integration.conftest import signed_in
from tests.scenario import HOME, T0


def fix(device: int, t: float, d: float, bearing: float = 90.0, acc: float = 5.0) -> Fix:
    g = Geodesic.WGS84.Direct(HOME[0], HOME[1], bearing, d)
    return Fix(device, T0 + t, g["lat2"], g["lon2"], acc)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def until(condition: Callable[[], bool], within_s: float = 5.0) -> None:
    async with asyncio.timeout(within_s):
        while not condition():  # noqa: ASYNC110 - notices are sent by their own task
            await asyncio.sleep(0.01)


# -- a push service and a browser's subscription keys ------------------------------------------


@dataclass
class PushService:
    """Answers ``status`` to every push; keeps the raw requests."""

    status: int = 201
    received: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    base: str = ""


@pytest.fixture
def push_service() -> Iterator[PushService]:
    svc = PushService()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            body = self.rfile.read(int(self.headers["Content-Length"]))
            svc.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(svc.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    svc.base = f"http://127.0.0.1:{server.server_address[1]}"
    yield svc
    server.shutdown()
    server.server_close()


@dataclass
class Browser:
    """The keys a browser makes when it subscribes (RFC 8291 §3)."""

    endpoint: str
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    def subscription(self, lang: str = "ko") -> dict[str, Any]:
        public = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "keys": {"p256dh": b64(public), "auth": b64(self.auth)},
            "expirationTime": None,
            "lang": lang,
        }

    def decrypt(self, body: bytes) -> dict[str, Any]:
        plain = http_ece.decrypt(
            body, private_key=self.key, auth_secret=self.auth, version="aes128gcm"
        )
        return dict(json.loads(plain))


# -- the application ---------------------------------------------------------------------------


@dataclass
class Env:
    ctx: AppContext
    api: httpx.AsyncClient
    clock: ManualClock
    headers: dict[str, dict[str, str]]
    order: int
    offender: int
    victim: int
    ankle: int
    phone: int

    async def walk(self, t: float, d: float, bearing: float = 90.0) -> None:
        """Both report at ``t``: she at home, he ``d`` metres from her."""
        self.clock.set(T0 + t)
        await self.ctx.ingest.submit([fix(self.phone, t, 0), fix(self.ankle, t, d, bearing)])

    async def settled(self) -> None:
        """Wait until every stored event has had its reactions (the notices among them)."""
        r = self.ctx.reactions
        await until(lambda: r.caught_up(self.ctx.ingest.stats.events))

    def told_victim(self) -> list[tuple[str, float]]:
        return [
            (n.kind, n.at)
            for n in self.ctx.store.notices(audience="victim")
            if n.person_id == self.victim
        ]


@pytest.fixture
def profile() -> str:
    return "kr"


@pytest.fixture
def order_kw() -> dict[str, float]:
    return {}


@pytest.fixture
def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'bangpae.sqlite'}"


@pytest.fixture
async def env(
    database: str, tmp_path: Path, profile: str, order_kw: dict[str, float]
) -> AsyncIterator[Env]:
    clock = ManualClock(T0)
    settings = Settings(
        data_dir=tmp_path,
        database_url=database,
        tick_s=60,  # the tests step the timers themselves
        push_allowed_hosts="127.0.0.1",
    )
    ctx = build(settings, clock=clock)
    s = ctx.store
    off = s.add_person("offender", "O")
    vic = s.add_person("victim", "V")
    ankle = s.add_device("ANKLE", "ankle_monitor", "osmand", off)
    phone = s.add_device("PHONE", "phone", "osmand", vic)
    order = s.add_order(Order(0, off, vic, profile=profile, **order_kw))
    users = (
        ("op", "operator", None),
        ("sup", "supervisor", None),
        ("vic", "victim", vic),
        ("off", "offender", off),
    )
    headers = signed_in(s, ctx.secret, users, T0, ttl_s=36000)
    await ctx.start()
    api = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(ctx)), base_url="http://test"
    )
    yield Env(ctx, api, clock, headers, order, off, vic, ankle, phone)
    await api.aclose()
    await ctx.stop()


def no_digit(texts: dict[str, str]) -> bool:
    return not any(re.search(r"\d", t) for t in texts.values())


# -- what each party is told, per profile ----------------------------------------------------

WALK = [(0, 5000), (600, 1800), (900, 500), (1000, 50), (1100, 700), (1500, 5000)]
KR_TOLD = [
    ("tier_notify", T0 + 600),
    ("tier_reveal", T0 + 900),
    ("tier_breach", T0 + 1000),
    ("tier_clear", T0 + 1500),
]


@pytest.mark.parametrize(
    ("profile", "order_kw", "expected"),
    [
        ("kr", {}, KR_TOLD),
        ("es", {"keep_away_m": 500.0}, [KR_TOLD[0], ("tier_breach", T0 + 900), KR_TOLD[3]]),
        # France: alert at 1 km, pre-alert at 2 km; she is told of the alert alone
        (
            "fr",
            {"keep_away_m": 1000.0, "reveal_radius_m": 1000.0, "notify_radius_m": 2000.0},
            # still inside 1 km at t=1100 and silent after: his signal is lost 120 s later
            [
                ("tier_breach", T0 + 900),
                ("offender_signal_lost", T0 + 1500),
                ("tier_clear", T0 + 1500),
            ],
        ),
    ],
)
async def test_the_victim_is_told_each_tier_her_profile_shows_her_and_nothing_else(
    env: Env, profile: str, expected: list[tuple[str, float]]
) -> None:
    statuses = []
    for t, d in WALK:
        await env.walk(t, d)
        r = await env.api.get("/api/v1/victim/status", headers=env.headers["vic"])
        statuses.append(r.json()["orders"][0]["tier"])
    await env.settled()
    assert env.told_victim() == expected
    if profile == "fr":  # the pre-alert is withheld from her screen too
        assert statuses[1] == "clear"
    told = env.ctx.store.notices()
    assert told, "somebody was told something"
    for n in told:
        assert n.person_id != env.offender, "the offender is never told"
        if n.audience == "victim":
            assert no_digit(n.text), n.text  # no distance, no position on a lock screen
            assert n.text["ko"] and n.text["en"]
            assert n.delivery["stream"] == "no open app"
            assert n.delivery["push"] == "no subscription"
    # the operators' phones are told of the critical incidents: the breach, the lost signal
    staff = [(n.role, n.text["en"], n.at) for n in told if n.audience == "staff"]
    critical = {"tier_breach": "breach", "offender_signal_lost": "signal_lost"}
    assert staff == [
        ("operator", f"Critical incident: {critical[kind]} (order {env.order})", at)
        for kind, at in expected
        if kind in critical
    ]
    # what she was told, she can read back; the offender has no way to read any of it
    mine = (await env.api.get("/api/v1/victim/notices", headers=env.headers["vic"])).json()
    assert [(n["kind"], n["at"]) for n in mine] == expected
    for path in ("/api/v1/victim/notices", "/api/v1/notices"):
        r = await env.api.get(path, headers=env.headers["off"])
        assert r.status_code == 403


async def test_a_thousand_fixes_jittering_at_the_notify_boundary_buzz_her_phone_twice_at_most(
    env: Env,
) -> None:
    decided = env.ctx.bus.subscribe()
    rng = random.Random(20261123)
    await env.walk(0, 5000)
    for k in range(1000):  # one fix every 0.5 s, 1,850-2,150 m from her (notify at 2,000 m)
        await env.walk(1 + k * 0.5, rng.uniform(1850.0, 2150.0))
    await env.settled()
    flips = 0
    while not decided.empty():
        flips += decided.get_nowait().kind == EventKind.TIER_CHANGED
    assert flips >= 20, "the walk must cross the boundary again and again"
    told = [n.kind for n in env.ctx.store.notices(audience="victim")]
    # once "caution", at most once "safe" within the de-duplication windows: not one per
    # flip (she is told from his 1 km cell, so the exact flips need not reach her at all)
    assert told[0] == "tier_notify" and told[1:] in ([], ["tier_clear"])
    assert env.ctx.notifier is not None and env.ctx.notifier.stats.sent <= 2


async def test_she_is_told_within_ten_minutes_when_his_device_stops_reporting(env: Env) -> None:
    await env.walk(0, 5000)
    for t in range(60, 1200, 60):  # her phone keeps reporting; his ankle monitor is silent
        env.clock.set(T0 + t)
        await env.ctx.ingest.submit([fix(env.phone, t, 0)])
        await env.ctx.ingest.tick()
    await env.settled()
    [(kind, at)] = env.told_victim()
    assert kind == "offender_device_down"
    assert at - T0 <= 600
    [n] = env.ctx.store.notices(audience="victim")
    assert "not reporting" in n.text["en"] and "상대방" in n.text["ko"]


async def test_she_is_told_when_bangpae_itself_is_failing_and_when_it_is_back(
    env: Env, database: str
) -> None:
    assert env.ctx.notifier is not None
    await env.walk(0, 5000)
    # the fixes table disappears under the running service: storing fails for real
    path = database.removeprefix("sqlite:///")
    with sqlite3.connect(path) as c:
        c.execute("ALTER TABLE fixes RENAME TO fixes_away")
    env.clock.set(T0 + 30)
    with pytest.raises(Exception, match="fixes"):
        await env.ctx.ingest.submit([fix(env.phone, 30, 0)])
    assert await env.ctx.notifier.check_service(env.ctx.ingest) == 1
    assert env.told_victim() == [("service_degraded", T0 + 30)]
    # the offender is not told: there is no notice for anyone but her
    assert {n.person_id for n in env.ctx.store.notices()} == {env.victim}
    with sqlite3.connect(path) as c:
        c.execute("ALTER TABLE fixes_away RENAME TO fixes")
    await env.walk(60, 5000)
    env.clock.set(T0 + 100)  # a minute without a failure
    assert await env.ctx.notifier.check_service(env.ctx.ingest) == 1
    assert [k for k, _ in env.told_victim()] == ["service_degraded", "service_restored"]


async def test_urgent_notices_reach_her_phone_number_through_the_sms_gateway(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    env.ctx.store.set_person_phone(env.victim, "+821012345678")
    caplog.set_level(logging.WARNING, logger="bangpae.handoff")
    await env.walk(0, 5000)
    await env.walk(600, 1800)  # notify: high
    await env.walk(1000, 50)  # breach: critical
    await env.walk(1100, 700)
    await env.walk(1200, 5000)  # clear (beyond any cell within 2 km): normal, not texted
    await env.settled()
    sms = [(n.kind, n.delivery["sms"]) for n in env.ctx.store.notices(audience="victim")]
    assert sms == [
        ("tier_notify", "logged"),
        ("tier_breach", "logged"),
        ("tier_clear", "not texted"),
    ]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sms to")]
    assert len(lines) == 2
    assert all("+821012345678" not in line and "5678" in line for line in lines)


async def test_her_open_app_gets_the_notice_on_its_stream(env: Env) -> None:
    from starlette.testclient import TestClient

    # the stream runs in the test client's own loop: drive the notifier from there
    with TestClient(create_app(env.ctx)) as client:
        with client.websocket_connect("/api/v1/victim/stream") as ws:
            token = env.headers["vic"]["Authorization"][7:]
            ws.send_text(json.dumps({"token": token}))
            assert ws.receive_json()["type"] == "status"
            n = env.ctx.notifier
            assert n is not None
            from bangpae.domain.notices import service_notices

            order = env.ctx.store.get_order(env.order)
            [notice] = service_notices([order], True, T0)
            assert client.portal.call(n.send_all, [notice]) == 1  # type: ignore[union-attr]
            msg = ws.receive_json()
            while msg["type"] != "notice":
                msg = ws.receive_json()
    assert msg["kind"] == "service_degraded" and msg["order_id"] == env.order
    assert set(msg["text"]) == {"ko", "en"}
    [kept] = env.ctx.store.notices(audience="victim")
    assert kept.delivery["stream"] == "sent 1"


# -- Web Push ----------------------------------------------------------------------------------


async def test_web_push_reaches_her_browser_encrypted_and_signed(
    env: Env, push_service: PushService
) -> None:
    key = (await env.api.get("/api/v1/push/key")).json()["public_key"]
    assert len(unb64(key)) == 65  # an uncompressed P-256 point
    browser = Browser(f"{push_service.base}/push/v1/abc")
    r = await env.api.post(
        "/api/v1/push/subscriptions",
        json=browser.subscription("en"),
        headers=env.headers["vic"],
    )
    assert r.status_code == 201, r.text
    # the VAPID key pair was made on first start and is kept private
    pem = env.ctx.settings.data_dir / "vapid-private.pem"
    assert pem.stat().st_mode & 0o777 == 0o600

    await env.walk(0, 5000)
    await env.walk(1000, 50)
    await env.settled()
    await until(lambda: len(push_service.received) >= 1)
    path, headers, body = push_service.received[0]
    assert path == "/push/v1/abc"
    assert headers["content-encoding"] == "aes128gcm"
    assert int(headers["ttl"]) > 0 and headers["urgency"] == "high"
    # VAPID (RFC 8292): a JWT for this push service, signed with the key browsers were given
    m = re.fullmatch(r"vapid t=([^,]+),\s*k=(\S+)", headers["authorization"])
    assert m is not None and m.group(2) == key
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64(key))
    claims = jwt.decode(m.group(1), public, algorithms=["ES256"], audience=push_service.base)
    assert claims["sub"].startswith("mailto:")
    message = browser.decrypt(body)
    assert message["kind"] == "tier_breach"
    assert message["tag"] == f"bangpae-order-{env.order}"
    assert message["body"] == "Danger step. Open the app now."  # the language she chose
    assert not re.search(r"\d", message["body"])
    [n] = [n for n in env.ctx.store.notices(audience="victim")]
    assert n.delivery["push"] == "sent 1/1"


async def test_a_push_service_saying_gone_drops_the_subscription(
    env: Env, push_service: PushService
) -> None:
    push_service.status = 410
    browser = Browser(f"{push_service.base}/push/v1/gone")
    r = await env.api.post(
        "/api/v1/push/subscriptions", json=browser.subscription(), headers=env.headers["vic"]
    )
    assert r.status_code == 201
    await env.walk(0, 5000)
    await env.walk(1000, 50)
    await env.settled()
    await until(lambda: bool(env.ctx.store.notices(audience="victim")))
    assert env.ctx.store.notices(audience="victim")[0].delivery["push"] == "sent 0/1"
    assert env.ctx.store.push_targets(person_id=env.victim) == []


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://10.0.0.1/internal",  # not a push service: the server must not call into it
        "https://evil.example/push",
        "http://user:pw@127.0.0.1/x",
        "ftp://127.0.0.1/x",
    ],
)
async def test_a_subscription_elsewhere_than_a_push_service_is_refused(
    env: Env, endpoint: str
) -> None:
    body = Browser(endpoint).subscription()
    r = await env.api.post("/api/v1/push/subscriptions", json=body, headers=env.headers["vic"])
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"


async def test_only_those_sent_notices_may_subscribe_and_only_their_own_is_removed(
    env: Env, push_service: PushService
) -> None:
    body = Browser(f"{push_service.base}/push/v1/x").subscription()
    r = await env.api.post("/api/v1/push/subscriptions", json=body, headers=env.headers["off"])
    assert r.status_code == 403
    r = await env.api.post("/api/v1/push/subscriptions", json=body, headers=env.headers["vic"])
    assert r.status_code == 201
    # her endpoint cannot be taken over by another account (her alerts would go silent)
    thief = Browser(body["endpoint"]).subscription()
    r = await env.api.post("/api/v1/push/subscriptions", json=thief, headers=env.headers["op"])
    assert r.status_code == 409
    [kept] = env.ctx.store.push_targets(person_id=env.victim)
    assert kept.p256dh == body["keys"]["p256dh"]
    params = {"endpoint": body["endpoint"]}
    r = await env.api.delete("/api/v1/push/subscriptions", params=params, headers=env.headers["op"])
    assert r.status_code == 404
    r = await env.api.delete(
        "/api/v1/push/subscriptions", params=params, headers=env.headers["vic"]
    )
    assert r.status_code == 204
    assert env.ctx.store.push_targets(person_id=env.victim) == []


async def test_staff_phones_are_pushed_critical_incidents_and_supervisors_the_pages(
    env: Env, push_service: PushService
) -> None:
    op, sup = Browser(f"{push_service.base}/op"), Browser(f"{push_service.base}/sup")
    for who, b in (("op", op), ("sup", sup)):
        r = await env.api.post(
            "/api/v1/push/subscriptions", json=b.subscription("en"), headers=env.headers[who]
        )
        assert r.status_code == 201
    await env.walk(0, 5000)
    await env.walk(10, 50)
    env.clock.set(T0 + 75)
    assert env.ctx.escalation is not None
    assert len(await env.ctx.escalation.step(env.clock.now())) == 1
    # pushed first, kept after: wait for both
    await until(
        lambda: (
            len(push_service.received) >= 2 and len(env.ctx.store.notices(audience="staff")) >= 2
        )
    )
    by_path = {p: (h, body) for p, h, body in push_service.received}
    incident = op.decrypt(by_path["/op"][1])
    page = sup.decrypt(by_path["/sup"][1])
    assert incident["kind"] == "incident" and "breach" in incident["body"]
    assert page["kind"] == "escalated" and "supervisor" in page["body"]
    staff = (await env.api.get("/api/v1/notices?audience=staff", headers=env.headers["sup"])).json()
    assert [(n["kind"], n["role"], n["delivery"]["push"]) for n in staff] == [
        ("incident", "operator", "sent 1/1"),
        ("escalated", "supervisor", "sent 1/1"),
    ]


async def test_an_open_stream_ends_soon_after_its_session_is_revoked(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    from bangpae.api.routes import streams

    monkeypatch.setattr(streams, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(streams, "SESSION_CHECK_S", 0.05)
    token = env.headers["vic"]["Authorization"][7:]
    who = read_token(token, env.ctx.secret, T0)
    assert who is not None and who.sid is not None
    with TestClient(create_app(env.ctx)) as client:
        with client.websocket_connect("/api/v1/victim/stream") as ws:
            ws.send_text(json.dumps({"token": token}))
            assert ws.receive_json()["type"] == "status"
            assert ws.receive_json()["type"] == "heartbeat"  # still signed in
            env.ctx.store.revoke_session(who.sid, T0, "admin")
            with pytest.raises(WebSocketDisconnect) as closed:
                for _ in range(200):  # heartbeats 50 ms apart: 10 s at most
                    ws.receive_json()
    assert closed.value.code == 4401


async def test_the_control_centre_stream_says_when_it_fell_behind(env: Env) -> None:
    """A screen's queue is bounded (the reactions' are not): past it, the oldest events
    go, and the operator's stream says how many before the next one."""
    from starlette.testclient import TestClient

    from bangpae.adapters.bus import SCREEN_QUEUE
    from bangpae.domain.model import make_event

    burst = [
        make_event(EventKind.LOW_BATTERY, T0 + k, "burst", k, person_id=env.offender)
        for k in range(SCREEN_QUEUE + 50)
    ]
    with TestClient(create_app(env.ctx)) as client:
        with client.websocket_connect("/api/v1/ops/stream") as ws:
            ws.send_text(json.dumps({"token": env.headers["op"]["Authorization"][7:]}))
            assert ws.receive_json()["type"] == "hello"
            client.portal.call(env.ctx.bus.publish, burst)  # type: ignore[union-attr]
            first = ws.receive_json()
            while first["type"] == "heartbeat":
                first = ws.receive_json()
            assert first == {"type": "dropped", "events": 50}
            nxt = ws.receive_json()
            assert nxt["type"] == "event" and nxt["id"] == burst[50].id
