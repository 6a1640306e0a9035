"""The victim app and the field app in a real browser (Debian's Chromium) on a real server.

The page is served from http://127.0.0.1 so Chromium accepts a faked position; the
offender's tracker reports over OsmAnd on real sockets. Screenshots go to
``artifacts/screenshots``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.conftest import need_service

from .conftest import Server
from .test_serve import HOME, PASSWORD, at

pw = pytest.importorskip("playwright.sync_api")
axe_sync = pytest.importorskip("axe_playwright_python.sync_playwright")

CHROMIUM = os.environ.get("BANGPAE_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("BANGPAE_ARTIFACTS", "artifacts")) / "screenshots"
BEARING = 45.0  # he walks in from the north-east, so neither coordinate is hers
# Routes of the SOS loop and the PINs the app already asks for, which the server gains on
# another branch: until then they answer 404 or 405 (the app carries on without them).
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}


# A fake microphone that needs no one to allow it (recordings on SOS, docs/evidence.md).
FAKE_MICROPHONE = ("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream")


def chromium(*extra_args: str) -> Iterator[Any]:
    """Debian's Chromium for a module's tests (a skip, or a failure in CI, without it)."""
    if not shutil.which(CHROMIUM):
        need_service(f"no Chromium at {CHROMIUM} (apt-get install chromium fonts-nanum)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with pw.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", *extra_args],
        )
        yield b
        b.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium()


def _create_user(srv: Server, name: str, role: str, person: int | None = None) -> None:
    srv.add_user(name, role, PASSWORD, person)


def seed(
    srv: Server, stale_after_s: float = 120.0, radii: dict[str, float] | None = None
) -> dict[str, Any]:
    """Staff, a victim with an app, an offender with an ankle monitor, one order, an officer."""
    _create_user(srv, "sup1", "supervisor")
    _create_user(srv, "op1", "operator")
    srv.start()
    sup = srv.login("sup1", PASSWORD)
    api = f"{srv.api}/api/v1"

    def post(path: str, body: dict[str, Any]) -> int:
        r = httpx.post(f"{api}{path}", json=body, headers=sup)
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    off = post("/people", {"kind": "offender", "name": "O"})
    vic = post("/people", {"kind": "victim", "name": "V"})
    officer = post("/people", {"kind": "officer", "name": "F"})
    post(
        "/devices",
        {"identifier": "ANKLE-1", "kind": "ankle_monitor", "protocol": "osmand", "person_id": off},
    )
    order = post(
        "/orders",
        {"offender_id": off, "victim_id": vic, "stale_after_s": stale_after_s, **(radii or {})},
    )
    _create_user(srv, "victim1", "victim", vic)
    _create_user(srv, "officer1", "field_officer", officer)
    return {
        "staff": srv.login("op1", PASSWORD),
        "supervisor": sup,
        "order": order,
        "officer": officer,
        "api": api,
        "victim": vic,
    }


def offender_at(
    srv: Server, d: float, speed_kn: float | None = None, heading: float | None = None
) -> tuple[float, float]:
    """One fix of his ankle monitor, ``d`` m from her, with a speed and a heading if given
    (OsmAnd: knots, degrees); returns once it is stored."""
    lat, lon = at(d, BEARING)
    moving = {} if speed_kn is None else {"speed": str(speed_kn)}
    if heading is not None:
        moving["bearing"] = str(heading)
    r = httpx.get(
        srv.osmand,
        params={
            "id": "ANKLE-1",
            "lat": f"{lat:.7f}",
            "lon": f"{lon:.7f}",
            "timestamp": f"{time.time():.3f}",
            "accuracy": "5",
            **moving,
        },
    )
    assert r.status_code == 200
    return lat, lon


class Recorder:
    """Everything the page received: API responses and WebSocket frames."""

    def __init__(self, page: Any) -> None:
        self.frames: list[str] = []
        self.bodies: list[str] = []
        page.on("websocket", lambda ws: ws.on("framereceived", self._frame))
        page.on("response", self._response)

    def _frame(self, payload: Any) -> None:
        self.frames.append(payload if isinstance(payload, str) else payload.decode())

    def _response(self, r: Any) -> None:
        if "/api/" in r.url:
            try:
                self.bodies.append(r.text())
            except pw.Error:  # a body can be gone once the page navigates
                pass

    def mark(self) -> tuple[int, int]:
        return len(self.frames), len(self.bodies)

    def since(self, mark: tuple[int, int]) -> list[str]:
        return self.frames[mark[0] :] + self.bodies[mark[1] :]


def open_app(browser: Any, srv: Server, path: str = "/app/") -> tuple[Any, Any]:
    ctx = browser.new_context(
        **PHONE,
        geolocation={"latitude": HOME[0], "longitude": HOME[1], "accuracy": 10},
        permissions=["geolocation", "notifications"],
        locale="ko-KR",
    )
    # notifications are recorded as the page asks for them (a headless browser shows none)
    ctx.add_init_script(
        """
        window.__notes = [];
        if (window.ServiceWorkerRegistration) {
          const show = ServiceWorkerRegistration.prototype.showNotification;
          ServiceWorkerRegistration.prototype.showNotification = function (title, options) {
            window.__notes.push({ title, body: (options || {}).body || "" });
            return show.call(this, title, options);
          };
        }
        """
    )
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"{page.url}: {e}"))

    def console(m: Any) -> None:
        # a test browser context is incognito, where Chromium has no push service: the
        # app's subscribing fails (it says so on screen) and Chromium logs why
        if m.type == "error" and "Push API in incognito" not in m.text:
            errors.append(f"{page.url}: {m.text} {m.location}")

    page.on("console", console)
    page.errors = errors  # type: ignore[attr-defined]
    page.goto(f"{srv.api}{path}")
    page.wait_for_selector("body[data-ready='1']")
    return ctx, page


def share(page: Any, ctx: Any) -> None:
    """She turns location sharing on; her first two reports confirm her track.

    The app sends the phone's next reading from 6 s after its first report
    (docs/disclosure.md); an emulated position keeps its time until it is set again,
    so the phone's next reading is made here.
    """
    page.check("#share")
    pw.expect(page.locator("#share-state")).to_contain_text("위치를 보냈습니다")
    page.wait_for_timeout(6300)
    ctx.set_geolocation({"latitude": HOME[0], "longitude": HOME[1], "accuracy": 10})
    page.wait_for_timeout(700)


def sign_in(page: Any, user: str) -> None:
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.click("#login-form button[type=submit]")


def onboard(page: Any) -> None:
    """She goes through the onboarding's steps without the asks (each is tested on its own)."""
    page.wait_for_selector("#onboarding:not([hidden])")
    while page.locator("#onb-next").is_visible():
        page.click("#onb-next")
    page.click("#onboarding-done")
    page.wait_for_selector("#status:not([hidden])")


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def serious(page: Any) -> list[str]:
    """Accessibility violations of impact serious or critical on the page as it is now."""
    result = axe_sync.Axe().run(page)
    return [
        f"{v['id']}: {v['help']} ({len(v['nodes'])} nodes: {v['nodes'][0]['target']})"
        for v in result.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def hold(page: Any, selector: str, ms: int) -> None:
    page.locator(selector).hover()
    page.mouse.down()
    page.wait_for_timeout(ms)
    page.mouse.up()


TIER = "body"


def test_a_walk_from_3_km_to_50_m_and_back_in_the_victim_app(server: Server, browser: Any) -> None:
    case = seed(server)
    ctx, page = open_app(browser, server)
    rec = Recorder(page)
    a11y: dict[str, list[str]] = {}
    a11y["login"] = serious(page)
    shot(page, "victim-login-ko")
    sign_in(page, "victim1")
    page.wait_for_selector("#onboarding:not([hidden])")
    # the tiers are taught with her order's radii, which come with her status
    pw.expect(page.locator("#onboarding")).to_contain_text("600 m")
    a11y["onboarding"] = serious(page)
    shot(page, "victim-onboarding-ko")
    onboard(page)
    pw.expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    page.click("#notify-on")
    share(page, ctx)  # consent: her position goes to the control centre

    # (distance from her, the tiers the app may show within 1 s of the fix being stored).
    # Beyond 600 m she is told from his 1 km cell on the server's secret grid
    # (docs/disclosure.md): up to 1.4 km more cautious than the exact rule, never less.
    walk = [
        (3000, "clear|notify"),
        (2500, "clear|notify"),
        (1900, "notify|reveal"),
        (1000, "notify|reveal"),
        (590, "reveal"),
        (300, "reveal"),
        (120, "reveal"),
        (50, "breach"),
        (150, "breach"),
        (300, "reveal"),
        (700, "reveal"),  # near enough that his cell is within the reveal radius
        (1500, "notify|reveal"),
        (2100, "clear|notify|reveal"),
        (6000, "clear"),  # beyond any cell within 2 km: safe again
    ]
    seen_tiers = set()
    for step, (d, tiers) in enumerate(walk):
        mark = rec.mark()
        lat, lon = offender_at(server, d)
        pattern = re.compile(f"^({tiers})$")
        pw.expect(page.locator(TIER)).to_have_attribute("data-tier", pattern, timeout=1000)
        page.wait_for_timeout(150)  # let any later frame of this fix arrive
        tier = page.get_attribute(TIER, "data-tier")
        told = " ".join(rec.since(mark))
        dom = page.content()
        his = (f"{lat:.4f}", f"{lon:.4f}")
        if d > 600:
            # nothing of where he is: not in the page, not in anything it received
            assert not any(x in dom or x in told for x in his), (d, tier)
            for frame in rec.frames[mark[0] :]:
                msg = json.loads(frame)
                for o in msg.get("orders", []):
                    assert o["offender"] is None and "lat" not in json.dumps(o), (d, o)
            assert page.locator("#map").is_hidden()
        if tier == "notify":
            pw.expect(page.locator("#tier-detail")).to_contain_text("이내에 있습니다")
        if tier == "reveal" and d > 600:  # close: warned, his position withheld
            pw.expect(page.locator("#tier-detail")).to_contain_text("위치는 아직 표시되지")
        if tier == "reveal" and d <= 600:
            pw.expect(page.locator("#map")).to_be_visible(timeout=1000)
            pw.expect(page.locator("#fact-distance")).to_contain_text("m")
            pw.expect(page.locator("#advice")).to_contain_text("멀어지세요")
        if tier == "breach":
            pw.expect(page.locator("#breach")).to_be_visible()
            assert page.locator("#call112").get_attribute("href") == "tel:112"
        if tier not in seen_tiers:
            seen_tiers.add(tier)
            shot(page, f"victim-{tier}-ko")
            a11y[tier] = serious(page)
        if step == 9:  # back in reveal on the way out: the overlay is gone
            assert page.locator("#breach").is_hidden()

    notes = page.evaluate("window.__notes")
    assert [n["body"] for n in notes], "tier changes were announced"
    for n in notes:  # lock screens are seen by others: no position, no distance
        assert not re.search(r"\d", n["title"] + n["body"]), n

    # English
    page.click("#lang")
    pw.expect(page.locator("#tier-title")).to_have_text("Safe")
    pw.expect(page.locator("#exit")).to_have_text("Quick exit")
    shot(page, "victim-clear-en")
    page.click("a[data-go='help']")
    pw.expect(page.locator("#help")).to_be_visible()
    a11y["help"] = serious(page)
    shot(page, "victim-help-en")
    page.click("#help a[data-go='status']")
    page.click("#lang")
    pw.expect(page.locator("#tier-title")).to_have_text("안전")

    # SOS: a short press sends nothing; a 2 s hold opens a critical incident at once
    staff = case["staff"]
    with connect(server.api.replace("http", "ws") + "/api/v1/ops/stream") as ops:
        ops.send(json.dumps({"token": staff["Authorization"][7:]}))
        assert json.loads(ops.recv(timeout=5))["type"] == "hello"
        hold(page, "#sos", 500)
        page.wait_for_timeout(500)
        assert page.get_attribute("body", "data-sos") is None
        sent = time.monotonic()
        hold(page, "#sos", 2300)  # then a 3 s count she could cancel
        pw.expect(page.locator("body")).to_have_attribute("data-sos", "sent", timeout=6000)
        kinds = []
        while "sos" not in kinds:
            msg = json.loads(ops.recv(timeout=8))
            kinds.append(msg.get("kind"))
        assert time.monotonic() - sent < 8.0
    incidents = httpx.get(
        f"{case['api']}/incidents", params={"status": "open"}, headers=staff
    ).json()
    sos = [i for i in incidents if i["kind"] == "sos"]
    assert len(sos) == 1 and sos[0]["priority"] == "critical"
    shot(page, "victim-sos-sent-ko")

    # quick exit: a neutral page, the session gone, nothing of the app behind it
    page.click("#exit")
    page.wait_for_url(re.compile(r"/today$"))
    assert "방패" not in page.content() and "bangpae" not in page.content().lower()
    assert page.evaluate("sessionStorage.length") == 0
    shot(page, "quick-exit")
    a11y["today"] = serious(page)
    page.go_back()
    assert not page.url.endswith("/app/")
    assert page.errors == [], page.errors  # type: ignore[attr-defined]
    assert {k: v for k, v in a11y.items() if v} == {}
    ctx.close()


def test_signal_lost_offline_sos_and_the_offline_shell(server: Server, browser: Any) -> None:
    case = seed(server, stale_after_s=10)
    ctx, page = open_app(browser, server)
    sign_in(page, "victim1")
    onboard(page)
    share(page, ctx)
    offender_at(server, 400)
    pw.expect(page.locator(TIER)).to_have_attribute("data-tier", "reveal", timeout=1000)
    # his tracker falls silent: after stale_after_s the app says so, with the time
    pw.expect(page.locator(TIER)).to_have_attribute("data-tier", "uncertain", timeout=15000)
    pw.expect(page.locator("#tier-detail")).to_contain_text("신호가")
    pw.expect(page.locator(".leaflet-tooltip", has_text="마지막 위치")).to_be_visible()
    assert page.locator(".pin-him").count() == 0  # never a stale dot shown as current
    # the control centre's notice of it ("check the app") is not repeated in the open app,
    # whose live screen already says it (tests/e2e/test_victim_app.py)
    page.wait_for_timeout(1000)
    assert page.locator("#notice").is_hidden()
    shot(page, "victim-uncertain-ko")
    assert serious(page) == []

    # offline: the app says its data is stale, keeps an SOS and sends it when back
    page.evaluate("navigator.serviceWorker.ready")
    ctx.set_offline(True)
    pw.expect(page.locator("#conn")).to_have_attribute("data-state", "offline", timeout=10000)
    page.check("#silent")
    hold(page, "#sos", 2300)
    pw.expect(page.locator("body")).to_have_attribute("data-sos", "queued", timeout=6000)
    shot(page, "victim-sos-queued-ko")
    # the installed shell opens without a network
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    pw.expect(page.locator("#tier-card")).to_be_attached()
    ctx.set_offline(False)
    pw.expect(page.locator("body")).to_have_attribute("data-sos", "sent", timeout=10000)
    # a silent SOS: a small plain note, not the loop
    pw.expect(page.locator("#sos-quiet")).to_contain_text("보냈습니다")
    staff = case["staff"]
    incidents = httpx.get(
        f"{case['api']}/incidents", params={"status": "open"}, headers=staff
    ).json()
    sos = [i for i in incidents if i["kind"] == "sos"]
    assert len(sos) == 1
    timeline = httpx.get(f"{case['api']}/incidents/{sos[0]['id']}", headers=staff).json()
    assert timeline["timeline"][0]["data"]["data"]["alarm"] == "sos_silent"
    ctx.close()


def test_the_field_officer_sees_only_their_dispatch_and_reports_arrival(
    server: Server, browser: Any
) -> None:
    case = seed(server)
    staff, api = case["staff"], case["api"]
    victim = server.login("victim1", PASSWORD)
    for ago in (10, 0):  # her phone's track: two agreeing reports (docs/disclosure.md)
        at_ = datetime.fromtimestamp(time.time() - ago, UTC).isoformat()
        r = httpx.post(
            f"{api}/victim/location",
            json={"lat": HOME[0], "lon": HOME[1], "accuracy_m": 10, "fix_time": at_},
            headers=victim,
        )
        assert r.status_code == 202, r.text
    offender_at(server, 60)  # breach: a critical incident
    incidents = httpx.get(f"{api}/incidents", params={"status": "open"}, headers=staff).json()
    breach = next(i for i in incidents if i["kind"] == "breach")

    ctx, page = open_app(browser, server, "/field/")
    sign_in(page, "officer1")
    pw.expect(page.locator("#none")).to_be_visible()
    a11y = {"field-empty": serious(page)}
    r = httpx.post(
        f"{api}/incidents/{breach['id']}/dispatch",
        json={"note": "go", "officer_id": case["officer"]},
        headers=staff,
    )
    assert r.status_code == 200, r.text
    item = page.locator(f"button.dispatch[data-id='{breach['id']}']")
    pw.expect(item).to_be_visible(timeout=8000)
    item.click()
    pw.expect(page.locator("#detail-target")).to_contain_text("보호대상자 위치")
    assert page.locator("#map .pin-victim").count() == 1
    page.check("#on-duty")
    shot(page, "field-dispatch-ko")
    a11y["field-dispatch"] = serious(page)
    page.click("#arrive")
    pw.expect(page.locator("#detail-state")).to_contain_text("도착")
    page.check("input[value='false_alarm']")
    page.fill("#note", "he left before we arrived")
    page.click("#outcome-form button[type=submit]")
    page.click("#confirm-false-ok")  # a false alarm is confirmed (test_field_app.py)
    pw.expect(page.locator("#none")).to_be_visible(timeout=8000)
    done = httpx.get(f"{api}/incidents/{breach['id']}", headers=staff).json()
    assert done["status"] == "false_alarm"
    assert [e["action"] for e in done["timeline"]][-3:] == ["dispatch", "on_scene", "false_alarm"]
    page.click("#lang")
    pw.expect(page.locator("h1[data-i18n='dispatches']")).to_have_text("My dispatches")
    shot(page, "field-done-en")
    assert page.errors == []  # type: ignore[attr-defined]
    ctx.close()

    # she sees that a field officer read her position, for the dispatch: a role, not a name
    vctx, vpage = open_app(browser, server)
    sign_in(vpage, "victim1")
    vpage.click("#breach-map")  # he is still near: the emergency screen comes first
    onboard(vpage)
    vpage.click("a[data-go='accesses']")
    rows = vpage.locator("#access-list li")
    pw.expect(rows.filter(has_text="현장 보호관찰관 · 출동").first).to_be_visible(timeout=5000)
    assert "officer1" not in vpage.locator("#access-list").inner_text()
    shot(vpage, "victim-accesses-ko")
    a11y["victim-accesses"] = serious(vpage)
    vpage.click("#lang")  # the roles and purposes in English too, on the screen she is on
    pw.expect(rows.filter(has_text="Field officer · Dispatch").first).to_be_visible(timeout=5000)
    shot(vpage, "victim-accesses-en")
    assert {k: v for k, v in a11y.items() if v} == {}
    assert vpage.errors == []  # type: ignore[attr-defined]
    vctx.close()


def test_a_web_push_message_becomes_a_discreet_notification(server: Server, browser: Any) -> None:
    """The service worker shows what the server pushes (delivered through DevTools, since a
    headless browser has no push service); asking for alerts works with or without one."""
    from bangpae.adapters.webpush import payload
    from bangpae.domain.notices import TEXTS, Notice

    case = seed(server)
    ctx, page = open_app(browser, server)
    sign_in(page, "victim1")
    onboard(page)
    page.click("#notify-on")
    pw.expect(page.locator("#notify-state")).to_contain_text("알림", timeout=10000)
    page.evaluate("navigator.serviceWorker.ready")
    cdp = ctx.new_cdp_session(page)
    registrations: list[dict[str, Any]] = []
    cdp.on(
        "ServiceWorker.workerRegistrationUpdated",
        lambda e: registrations.extend(e["registrations"]),
    )
    cdp.send("ServiceWorker.enable")
    notice = Notice(
        "victim", "tier_breach", "critical", TEXTS["tier_breach"], "k", time.time(), case["order"]
    )
    script = """navigator.serviceWorker.ready
        .then((r) => r.getNotifications())
        .then((ns) => ns.map((n) => ({ title: n.title, body: n.body, tag: n.tag })))"""
    shown: list[dict[str, str]] = []
    deadline = time.monotonic() + 20
    # The worker may still be starting, or be stopped between events: push until it shows
    # (a push with the same tag replaces the last one, so repeats cannot add any).
    while not shown and time.monotonic() < deadline:
        live = [
            r
            for r in registrations
            if r["scopeURL"].endswith("/app/") and not r.get("isDeleted", False)
        ]
        if live:
            cdp.send(
                "ServiceWorker.deliverPushMessage",
                {
                    "origin": server.api,
                    "registrationId": live[-1]["registrationId"],
                    "data": payload(notice, "ko"),
                },
            )
        for _ in range(20):
            page.wait_for_timeout(50)
            shown = page.evaluate(script)
            if shown:
                break
    assert shown == [
        {
            "title": "방패",
            "body": "위험 단계입니다. 지금 앱을 여세요.",
            "tag": f"bangpae-order-{case['order']}",
        }
    ]
    assert not any(re.search(r"\d", n["body"]) for n in shown)
    ctx.close()


def test_the_api_explorer_works_offline_under_the_same_policy(server: Server, browser: Any) -> None:
    server.start()
    page = browser.new_page()
    blocked: list[str] = []
    page.on("console", lambda m: blocked.append(m.text) if "Content Security" in m.text else None)
    outside: list[str] = []
    page.on(
        "request",
        lambda r: outside.append(r.url) if not r.url.startswith(server.api) else None,
    )
    r = page.goto(server.api + "/api/v1/docs")
    assert r is not None and "script-src 'self'" in r.headers["content-security-policy"]
    page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
    assert "bangpae" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector(".opblock-summary-path", timeout=20_000)  # the operations listed
    assert outside == [] and blocked == []
    page.close()
