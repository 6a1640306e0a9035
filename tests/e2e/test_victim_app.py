"""The protected person's app as a frightened person with a phone meets it: the offender
walking in and out, the link lost, an SOS, a quick exit. Phone viewport, Korean and
English, a real ``bangpae serve`` and Debian's Chromium (see test_apps.py).

The rules these tests hold the app to are in docs/victim-app.md; the server's side of
the SOS loop, the cancel with a PIN and the PIN lock is in docs/sos.md.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

import bangpae.web

from . import test_apps
from .conftest import Server
from .test_apps import (
    BEARING,
    PHONE,
    offender_at,
    onboard,
    open_app,
    seed,
    serious,
    share,
    shot,
    sign_in,
)
from .test_serve import HOME, PASSWORD, at

pw = pytest.importorskip("playwright.sync_api")
browser = test_apps.browser  # one Chromium for the module, as in test_apps.py

GREEN = "rgb(30, 107, 52)"  # --clear: the colour that says "safe"
LOCALES = Path(bangpae.web.__file__).parent / "static" / "locales"


def signed_in(browser: Any, server: Server) -> tuple[Any, Any]:
    """Her app, signed in and through the onboarding, with live data on screen."""
    ctx, page = open_app(browser, server)
    sign_in(page, "victim1")
    onboard(page)
    pw.expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=5000)
    pw.expect(page.locator("#tier-title")).not_to_have_text("", timeout=5000)
    return ctx, page


def card_colour(page: Any) -> str:
    return str(page.eval_on_selector("#tier-card", "el => getComputedStyle(el).backgroundColor"))


def in_view(page: Any, selector: str) -> None:
    """The element is wholly inside the 390x844 screen, and nothing covers its centre."""
    box = page.locator(selector).bounding_box()
    assert box is not None, selector
    assert box["x"] >= 0 and box["y"] >= 0, (selector, box)
    assert box["x"] + box["width"] <= 390 and box["y"] + box["height"] <= 844, (selector, box)
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    hit = page.evaluate(
        "([x, y, sel]) => { const el = document.elementFromPoint(x, y);"
        " return Boolean(el && el.closest(sel)); }",
        [cx, cy, selector],
    )
    assert hit, f"{selector} is covered"


def english(page: Any) -> None:
    page.click("#lang")
    pw.expect(page.locator("html")).to_have_attribute("lang", "en")


def korean(page: Any) -> None:
    page.click("#lang")
    pw.expect(page.locator("html")).to_have_attribute("lang", "ko")


# -- 1. never "safe" without live data ---------------------------------------------------


def test_the_screen_is_never_safe_without_live_data(server: Server, browser: Any) -> None:
    seed(server)
    ctx, page = signed_in(browser, server)
    pw.expect(page.locator("body")).to_have_attribute("data-tier", "clear")
    assert card_colour(page) == GREEN  # live and clear: safe, in green
    page.evaluate("navigator.serviceWorker.ready")
    a11y = {}

    ctx.set_offline(True)
    # well within the watchdog's 45 s: the link is gone, so is "safe"
    pw.expect(page.locator("#conn")).not_to_have_attribute("data-state", "live", timeout=10000)
    page.wait_for_timeout(300)
    assert card_colour(page) != GREEN
    assert page.get_attribute("body", "data-freshness") == "stale"
    pw.expect(page.locator("#tier-title")).to_contain_text("연결 끊김")
    pw.expect(page.locator("#tier-detail")).to_have_text("마지막으로 받은 상태: 안전")
    assert "평소처럼 지내셔도 됩니다" not in page.inner_text("body")
    assert re.search(r"\d\d:\d\d", page.inner_text("#tier-title"))
    pw.expect(page.locator("#action-bar")).to_be_visible()  # it cannot tell: 112 in reach
    shot(page, "victim-stale-ko")
    a11y["stale-ko"] = serious(page)
    english(page)
    pw.expect(page.locator("#tier-title")).to_contain_text("Offline — as of")
    pw.expect(page.locator("#tier-detail")).to_have_text("Last status received: Safe")
    assert "Go about your day" not in page.inner_text("body")
    assert card_colour(page) != GREEN
    shot(page, "victim-stale-en")
    korean(page)

    # a reload without a connection: nothing known, and never "safe" nor "no orders"
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_timeout(1500)
    assert page.get_attribute("body", "data-freshness") == "unknown"
    pw.expect(page.locator("#tier-title")).to_have_text("확인 중…")
    text = page.inner_text("body")
    assert "안전" not in page.inner_text("#tier-card") and "연결된 보호명령이 없습니다" not in text
    assert card_colour(page) != GREEN
    shot(page, "victim-unknown-ko")
    a11y["unknown-ko"] = serious(page)
    english(page)
    pw.expect(page.locator("#tier-title")).to_have_text("Checking…")
    assert "No protective order" not in page.inner_text("body")
    shot(page, "victim-unknown-en")
    a11y["unknown-en"] = serious(page)

    # back online: live again, and only now safe
    ctx.set_offline(False)
    pw.expect(page.locator("body")).to_have_attribute("data-freshness", "live", timeout=20000)
    pw.expect(page.locator("#tier-title")).to_have_text("Safe")
    assert card_colour(page) == GREEN
    assert {k: v for k, v in a11y.items() if v} == {}
    ctx.close()


# -- 2. the breach screen, and 112 and SOS always in view -------------------------------


def test_breach_keeps_112_and_sos_in_view_and_a_way_back_to_the_guidance(
    server: Server, browser: Any
) -> None:
    case = seed(server)
    ctx, page = signed_in(browser, server)
    share(page, ctx)
    offender_at(server, 50)
    pw.expect(page.locator("#breach")).to_be_visible(timeout=3000)
    # the way to go: the server's direction away from him (docs/refuges.md)
    pw.expect(page.locator("#breach-away")).to_contain_text("방향으로 멀어지세요", timeout=5000)
    a11y = {"breach": serious(page)}

    # an SOS from the breach screen is confirmed in the breach screen
    page.locator("#sos-breach").hover()
    page.mouse.down()
    page.wait_for_timeout(2300)
    page.mouse.up()
    pw.expect(page.locator("#countdown")).to_be_visible()
    pw.expect(page.locator("#countdown-n")).to_have_text(re.compile("^[123]$"))
    shot(page, "victim-sos-countdown-ko")
    a11y["countdown"] = serious(page)
    pw.expect(page.locator("body")).to_have_attribute("data-sos", "sent", timeout=6000)
    pw.expect(page.locator("#breach-sos-state")).to_have_text("SOS를 보냈습니다.")
    in_view(page, "#breach-sos-state")
    pw.expect(page.locator("#breach .loop li[data-state='received']")).to_contain_text("접수됨")
    shot(page, "victim-breach-sos-ko")
    a11y["breach-sos"] = serious(page)
    incidents = httpx.get(
        f"{case['api']}/incidents", params={"status": "open"}, headers=case["staff"]
    ).json()
    assert [i["kind"] for i in incidents].count("sos") == 1

    # the map: 112, SOS and the way back stay on screen, above the map, however far she scrolls
    page.click("#breach-map")
    pw.expect(page.locator("#action-bar")).to_be_visible()
    for lang in ("ko", "en"):
        for scroll in (0, 10000):
            page.evaluate(f"window.scrollTo(0, {scroll})")
            for sel in ("#action-bar a[href='tel:112']", "#bar-sos", "#bar-guide"):
                in_view(page, sel)
        shot(page, f"victim-breach-map-{lang}")
        a11y[f"breach-map-{lang}"] = serious(page)
        if lang == "ko":
            english(page)
    pw.expect(page.locator("#bar-guide")).to_have_text("Back to guidance")
    pw.expect(page.locator("#share-state")).to_contain_text("Location sent")  # said again
    page.click("#bar-guide")
    pw.expect(page.locator("#breach")).to_be_visible()
    pw.expect(page.locator("#breach-title")).to_be_focused()
    korean(page)

    # in reveal (and signal lost) the same bar, without the way back
    offender_at(server, 300)
    pw.expect(page.locator("body")).to_have_attribute("data-tier", "reveal", timeout=3000)
    pw.expect(page.locator("#action-bar")).to_be_visible()
    assert page.locator("#bar-guide").is_hidden()
    for lang in ("ko", "en"):
        for scroll in (0, 10000):
            page.evaluate(f"window.scrollTo(0, {scroll})")
            in_view(page, "#action-bar a[href='tel:112']")
            in_view(page, "#bar-sos")
        shot(page, f"victim-reveal-bar-{lang}")
        a11y[f"reveal-{lang}"] = serious(page)
        if lang == "ko":
            english(page)
    assert page.get_attribute("#action-bar a", "href") == "tel:112"
    assert {k: v for k, v in a11y.items() if v} == {}
    assert page.errors == []  # type: ignore[attr-defined]
    ctx.close()


# -- 3, 4. only what happens; the count, the cancel, the loop; practice ------------------


def test_the_app_promises_only_what_happens() -> None:
    """No text says the police or help were already sent: nothing does that by itself."""
    ko = json.loads((LOCALES / "ko.json").read_text("utf-8"))
    en = json.loads((LOCALES / "en.json").read_text("utf-8"))
    for text in ko.values():
        promise = r"경찰에 이미|이미 알렸|출동을 요청했|곧 연락합니다|지켜보고 있습"
        assert not re.search(promise, text), text
    for text in en.values():
        assert not re.search(
            r"already (sent|know)|police already|will contact you|is watching", text
        ), text


def test_an_sos_counts_down_can_be_cancelled_then_shows_what_happens(
    server: Server, browser: Any
) -> None:
    case = seed(server)
    ctx, page = signed_in(browser, server)
    sos_posts: list[str] = []

    def sent(r: Any) -> None:
        if r.method == "POST" and "/victim/sos" in r.url:
            sos_posts.append(r.url)

    page.on("request", sent)
    # a hold, then the count: cancelled, nothing is sent
    page.locator("#sos").hover()
    page.mouse.down()
    page.wait_for_timeout(2300)
    page.mouse.up()
    pw.expect(page.locator("#countdown")).to_be_visible()
    pw.expect(page.locator("#countdown-text")).to_contain_text("초 뒤에 보냅니다")
    page.click("#countdown-cancel")
    pw.expect(page.locator("#countdown")).to_be_hidden()
    page.wait_for_timeout(3500)
    assert sos_posts == []
    assert page.get_attribute("body", "data-sos") == "cancelled"

    # English this time, to the end of the count
    english(page)
    page.locator("#sos").hover()
    page.mouse.down()
    page.wait_for_timeout(2300)
    page.mouse.up()
    pw.expect(page.locator("#countdown-text")).to_contain_text("Sending in")
    pw.expect(page.locator("#countdown-cancel")).to_have_text("Cancel")
    pw.expect(page.locator("body")).to_have_attribute("data-sos", "sent", timeout=6000)
    assert len(sos_posts) == 1
    pw.expect(page.locator("#sos-state")).to_have_text("SOS sent.")
    pw.expect(page.locator("#status .loop li[data-state='received']")).to_contain_text("Received")
    assert re.search(r"\d\d:\d\d:\d\d", page.inner_text("#status .loop li"))
    shot(page, "victim-sos-loop-en")
    a11y = serious(page)
    korean(page)
    pw.expect(page.locator("#status .loop li[data-state='received']")).to_contain_text("접수됨")
    shot(page, "victim-sos-loop-ko")
    incidents = httpx.get(
        f"{case['api']}/incidents", params={"status": "open"}, headers=case["staff"]
    ).json()
    assert [i["kind"] for i in incidents].count("sos") == 1
    assert a11y == [] and serious(page) == []
    ctx.close()


def test_practice_runs_the_same_steps_and_sends_nothing(server: Server, browser: Any) -> None:
    seed(server)
    ctx, page = open_app(browser, server)
    sign_in(page, "victim1")
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if "/victim/sos" in r.url else None)
    # from the onboarding's SOS step
    page.wait_for_selector("#onboarding:not([hidden])")
    page.click("#onb-next")
    page.wait_for_timeout(500)
    sent.clear()  # (the app asks for her SOS's progress on signing in)
    page.click("#onboarding button[data-go='practice']")
    pw.expect(page.locator("#practice")).to_be_visible()
    pw.expect(page.locator("#practice h1")).to_be_focused()
    label = "연습 — 실제로 보내지 않았습니다"
    pw.expect(page.locator("#practice .practice-label")).to_have_text(label)
    page.locator("#practice-sos").hover()
    page.mouse.down()
    page.wait_for_timeout(2300)
    page.mouse.up()
    pw.expect(page.locator("#countdown")).to_be_visible()
    pw.expect(page.locator("#countdown-title")).to_have_text(label)
    loop = page.locator("#practice-loop")
    pw.expect(loop.locator("li[data-state='seen']")).to_contain_text(
        "상황실 요원이 확인 중", timeout=8000
    )
    pw.expect(loop.locator("li[data-state='officer_assigned']")).to_contain_text(
        "출동 요원 배정 — 약 7분", timeout=5000
    )
    shot(page, "victim-practice-ko")
    a11y = serious(page)
    english(page)
    pw.expect(loop.locator("h2")).to_have_text("Practice — nothing was sent")
    pw.expect(loop.locator("li[data-state='closed']")).to_contain_text("Closed", timeout=6000)
    shot(page, "victim-practice-en")
    a11y += serious(page)
    page.click("#practice-back")
    pw.expect(page.locator("#onboarding")).to_be_visible()
    assert page.get_attribute("body", "data-onboarding") == "sos"
    assert sent == []  # not one request to /victim/sos
    assert page.locator("#sos-state").inner_text() == ""
    assert a11y == []
    ctx.close()


# -- 9. a silent SOS is discreet ----------------------------------------------------------


def test_a_silent_sos_shows_only_a_small_note_that_goes_away(server: Server, browser: Any) -> None:
    case = seed(server)
    ctx, page = open_app(browser, server)
    sign_in(page, "victim1")
    onboard(page)
    page.evaluate(
        "() => { window.__buzz = [];"
        " navigator.vibrate = (p) => { window.__buzz.push(p); return true; }; }"
    )
    for lang in ("ko", "en"):
        page.check("#silent")
        page.locator("#sos").hover()
        page.mouse.down()
        page.wait_for_timeout(2300)
        page.mouse.up()
        # the count is a small strip, not a full screen
        pw.expect(page.locator("#countdown.quiet")).to_be_visible()
        box = page.locator("#countdown").bounding_box()
        assert box is not None and box["height"] < 150
        shot(page, f"victim-silent-countdown-{lang}")
        pw.expect(page.locator("body")).to_have_attribute("data-sos", "sent", timeout=6000)
        note = page.locator("#sos-quiet")
        pw.expect(note).to_have_text("보냈습니다." if lang == "ko" else "Sent.")
        style = page.eval_on_selector(
            "#sos-quiet",
            "el => { const s = getComputedStyle(el); return [s.fontWeight, s.color]; }",
        )
        assert int(style[0]) < 600, style  # not bold
        assert style[1] != "rgb(176, 0, 32)"  # not alarm red
        assert page.inner_text("#sos-state") == "" and page.locator(".sos-loop").first.is_hidden()
        a11y = serious(page)
        assert a11y == [], a11y
        pw.expect(note).to_have_text("", timeout=7000)  # gone after a few seconds
        page.evaluate("document.body.dataset.sos = ''")
        if lang == "ko":
            english(page)
    assert page.evaluate("window.__buzz") == []  # no vibration
    incidents = httpx.get(
        f"{case['api']}/incidents", params={"status": "open"}, headers=case["staff"]
    ).json()
    assert [i["kind"] for i in incidents].count("sos") >= 1
    ctx.close()


# -- 5. facts that went stale -------------------------------------------------------------


def his_fix(srv: Server, d: float, speed_kn: float, bearing: float) -> None:
    """One fix of his ankle monitor with a speed and a heading (OsmAnd: knots, degrees)."""
    offender_at(srv, d, speed_kn, bearing)


def test_signal_lost_shows_when_he_was_last_seen_not_a_heading_or_speed(
    server: Server, browser: Any
) -> None:
    seed(server, stale_after_s=10)
    ctx, page = signed_in(browser, server)
    share(page, ctx)
    his_fix(server, 400, 3.0, 200.0)
    pw.expect(page.locator("body")).to_have_attribute("data-tier", "reveal", timeout=3000)
    pw.expect(page.locator("#fact-heading")).to_be_visible()
    pw.expect(page.locator("#fact-heading")).to_have_text(re.compile("쪽$"))
    pw.expect(page.locator("#fact-speed")).to_contain_text("km/h")
    assert page.locator("#fact-last-seen").is_hidden()
    pw.expect(page.locator(".pin-me")).to_have_count(1)  # her own pin, while she shares
    pw.expect(page.locator(".pin-him")).to_have_count(1)
    pw.expect(page.locator("body")).to_have_attribute("data-tier", "uncertain", timeout=15000)
    for sel in ("#fact-heading", "#fact-speed", "#fact-age"):
        pw.expect(page.locator(sel)).to_be_hidden()
    pw.expect(page.locator("#fact-last-seen")).to_have_text(re.compile(r"^\d\d:\d\d$"))
    pw.expect(page.locator(".pin-me")).to_have_count(1)
    assert page.locator(".pin-him").count() == 0
    assert "km/h" not in page.inner_text("#status")
    shot(page, "victim-uncertain-facts-ko")
    a11y = serious(page)
    english(page)
    pw.expect(page.locator("#facts")).to_contain_text("Last seen")
    assert "km/h" not in page.inner_text("#status")
    shot(page, "victim-uncertain-facts-en")
    assert a11y == [] and serious(page) == []
    ctx.close()


# -- 6, 8, 10. onboarding with her radii and the asks; Korean line breaks; screens ---------


def test_onboarding_teaches_her_radii_asks_for_location_and_alerts_and_sharing_resumes(
    server: Server, browser: Any
) -> None:
    radii = {"notify_radius_m": 1500.0, "reveal_radius_m": 400.0, "keep_away_m": 80.0}
    case = seed(server, radii=radii)
    api, sup = case["api"], case["supervisor"]

    def post(path: str, body: dict[str, Any]) -> int:
        r = httpx.post(f"{api}{path}", json=body, headers=sup)
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    # someone else's order comes between hers, so her second order's id is not 2
    off2 = post("/people", {"kind": "offender", "name": "O2"})
    vic2 = post("/people", {"kind": "victim", "name": "V2"})
    post("/orders", {"offender_id": off2, "victim_id": vic2})
    second = post("/orders", {"offender_id": off2, "victim_id": case["victim"]})
    assert second > 2
    offender_at(server, 1000)  # his first fix: the orders are live in the engine

    ctx, page = open_app(browser, server)
    sign_in(page, "victim1")
    page.wait_for_selector("#onboarding:not([hidden])")
    tiers = page.locator("#onboarding .tiers")
    pw.expect(tiers).to_contain_text("1.5\u00a0km 밖에")
    pw.expect(tiers).to_contain_text("400\u00a0m 안에")
    pw.expect(tiers).to_contain_text("80\u00a0m")
    assert "600" not in tiers.inner_text() and "2 km" not in tiers.inner_text()
    # Korean breaks between words only
    style = page.eval_on_selector(
        "#onboarding .tiers dd",
        "el => { const s = getComputedStyle(el); return [s.wordBreak, s.overflowWrap]; }",
    )
    assert style == ["keep-all", "anywhere"], style
    a11y = {"onb-tiers": serious(page)}
    shot(page, "victim-onboarding-radii-ko")
    steps = ["sos", "exit", "share", "alerts", "evidence"]
    for step in steps:
        page.click("#onb-next")
        pw.expect(page.locator("body")).to_have_attribute("data-onboarding", step)
        heading = page.locator(f"#onboarding .step[data-step='{step}'] h1")
        pw.expect(heading).to_be_focused()
        assert page.evaluate("window.scrollY") == 0
        a11y[f"onb-{step}"] = serious(page)
        shot(page, f"victim-onboarding-{step}-ko")
        if step == "exit":
            pw.expect(page.locator("#onboarding")).to_contain_text("Esc")
        if step == "share":
            pw.expect(page.locator("#onboarding")).to_contain_text("상대방에게는 절대")
            page.click("#onb-share")
            pw.expect(page.locator("#onb-share-state")).to_contain_text("위치를 보냈습니다")
        if step == "alerts":
            page.click("#onb-notify")
            pw.expect(page.locator("#onb-notify-state")).to_contain_text("알림", timeout=10000)
        if step == "evidence":  # recording after an SOS: explained, and off unless she says
            pw.expect(page.locator("#onboarding")).to_contain_text("최대 1분")
            assert not page.is_checked("#onb-evidence")
    page.evaluate("window.scrollTo(0, 10000)")
    page.click("#onboarding-done")
    # the status screen from its top, its heading focused, the card clear of the header
    pw.expect(page.locator("#tier-title")).to_be_focused()
    assert page.evaluate("window.scrollY") == 0
    header = page.locator("header.bar").bounding_box()
    card = page.locator("#tier-card").bounding_box()
    assert header and card and card["y"] >= header["y"] + header["height"]
    pw.expect(page.locator("body")).to_have_attribute("data-freshness", "live", timeout=5000)
    # her other order by its place among hers, never by its internal id
    pw.expect(page.locator("#others")).to_have_text(re.compile(r"^다른 보호명령 \(2\): "))
    assert f"보호명령 {second}" not in page.inner_text("body")
    assert page.is_checked("#share")

    # a reload: her choice is remembered, and sharing resumes without asking again
    page.reload()
    page.wait_for_selector("#status:not([hidden])")
    assert page.is_checked("#share")
    pw.expect(page.locator("#share-state")).to_contain_text("위치를 보냈습니다", timeout=10000)
    english(page)
    pw.expect(page.locator("#others")).to_have_text(re.compile(r"^Other order \(2\): "))
    page.click("a[data-go='help']")
    pw.expect(page.locator("#help h1")).to_be_focused()
    pw.expect(page.locator("#help .tiers")).to_contain_text("within 400\u00a0m")
    pw.expect(page.locator("#help")).to_contain_text("within 400\u00a0m, and every look")
    a11y["help-en"] = serious(page)
    shot(page, "victim-help-radii-en")
    assert {k: v for k, v in a11y.items() if v} == {}
    ctx.close()


def test_location_failures_say_which_failure_and_offer_a_retry(
    server: Server, browser: Any
) -> None:
    seed(server)
    # no permission: the browser refuses her position
    ctx = browser.new_context(**PHONE, locale="ko-KR")
    page = ctx.new_page()
    page.goto(f"{server.api}/app/")
    page.wait_for_selector("body[data-ready='1']")
    sign_in(page, "victim1")
    onboard(page)
    page.check("#share")
    pw.expect(page.locator("#share-state")).to_contain_text("위치 권한이 없습니다")
    pw.expect(page.locator("#share-retry")).to_be_visible()
    a11y = serious(page)
    ctx.close()

    # permission, but the phone cannot find itself: not "no permission"
    ctx = browser.new_context(**PHONE, locale="ko-KR", permissions=["geolocation"])
    page = ctx.new_page()
    cdp = ctx.new_cdp_session(page)
    cdp.send("Emulation.setGeolocationOverride", {})  # "position unavailable"
    page.goto(f"{server.api}/app/")
    page.wait_for_selector("body[data-ready='1']")
    sign_in(page, "victim1")
    onboard(page)
    page.check("#share")
    state = page.locator("#share-state")
    pw.expect(state).to_contain_text("위치를 찾지 못합니다")
    assert "권한" not in state.inner_text()
    pw.expect(page.locator("#share-retry")).to_be_visible()
    shot(page, "victim-location-unavailable-ko")
    english(page)
    page.click("#share-retry")
    pw.expect(state).to_contain_text("cannot find its position")
    # once the phone finds itself again, it is shared and the retry goes away
    cdp.send(
        "Emulation.setGeolocationOverride",
        {"latitude": HOME[0], "longitude": HOME[1], "accuracy": 10},
    )
    pw.expect(state).to_contain_text("Location sent")
    pw.expect(page.locator("#share-retry")).to_be_hidden()
    assert a11y == [] and serious(page) == []
    ctx.close()


# -- 7. notices in the open app -------------------------------------------------------------


def test_notices_in_the_open_app_say_nothing_the_screen_contradicts(
    server: Server, browser: Any
) -> None:
    seed(server)
    ctx, page = signed_in(browser, server)
    share(page, ctx)
    offender_at(server, 50)
    pw.expect(page.locator("#breach")).to_be_visible(timeout=3000)
    page.wait_for_timeout(1500)  # the breach notice has come and gone on the stream
    offender_at(server, 300)
    pw.expect(page.locator("body")).to_have_attribute("data-tier", "reveal", timeout=3000)
    page.wait_for_timeout(1000)
    # the danger notice ("open the app now") is not left over a screen that says otherwise
    assert page.locator("#notice").is_hidden()
    assert "앱을 여세요" not in page.inner_text("body")
    assert "앱을 확인하세요" not in page.inner_text("body")

    # bangpae failing (its fixes table gone): she is told, in the app's own words, in her
    # language, and the banner follows the page's language
    db = server.data_dir / "bangpae.sqlite"
    with sqlite3.connect(db) as c:
        c.execute("ALTER TABLE fixes RENAME TO fixes_away")
    try:
        lat, lon = at(300, BEARING)
        httpx.get(
            server.osmand,
            params={"id": "ANKLE-1", "lat": lat, "lon": lon, "timestamp": f"{time.time():.3f}"},
        )
        notice = page.locator("#notice")
        pw.expect(notice).to_be_visible(timeout=10000)
        pw.expect(page.locator("#notice-text")).to_contain_text("이 화면의 정보와 알림이 늦을 수")
        shot(page, "victim-notice-ko")
        a11y = serious(page)
        english(page)
        late = "this screen and alerts may be late"
        pw.expect(page.locator("#notice-text")).to_contain_text(late)
        shot(page, "victim-notice-en")
        a11y += serious(page)
    finally:
        with sqlite3.connect(db) as c:
            c.execute("ALTER TABLE fixes_away RENAME TO fixes")
    assert a11y == []
    ctx.close()


# -- 9. quick exit and the discreet install -------------------------------------------------


def test_quick_exit_leaves_nothing_of_the_app_and_sends_a_waiting_sos_first(
    server: Server, browser: Any
) -> None:
    case = seed(server)
    ctx, page = signed_in(browser, server)
    page.evaluate("navigator.serviceWorker.ready")
    english(page)  # the language is remembered on the device...
    page.check("#share")  # ...and her choice to share
    assert page.evaluate("localStorage.length") > 0
    # an SOS that could not go yet waits in the queue
    page.route("**/api/v1/victim/sos", lambda route: route.abort())
    page.locator("#sos").hover()
    page.mouse.down()
    page.wait_for_timeout(2300)
    page.mouse.up()
    pw.expect(page.locator("body")).to_have_attribute("data-sos", "queued", timeout=6000)
    assert "sosQueue" in page.evaluate("Object.keys(localStorage)")
    page.unroute("**/api/v1/victim/sos")
    # and a recording of an SOS waits in the evidence queue, in IndexedDB
    page.route("**/api/v1/victim/sos/*/evidence", lambda route: route.abort())
    queued = page.evaluate(
        """async () => { const ev = await import('/static/js/evidence.js');
        await ev.queueEvidence(1, new Blob(["recording"], { type: "audio/webm" }), null);
        return (await ev.queuedEvidence()).length; }"""
    )
    assert queued == 1
    assert "bangpae-evidence" in page.evaluate(
        "async () => (await indexedDB.databases()).map((d) => d.name)"
    )

    page.click("#exit")
    page.wait_for_url(re.compile(r"/today$"))
    assert page.evaluate("localStorage.length") == 0
    assert page.evaluate("sessionStorage.length") == 0
    # no database of the app's is left, the evidence queue's included
    assert page.evaluate("async () => (await indexedDB.databases()).map((d) => d.name)") == []
    # what the offline shell keeps: the same public files for everyone, nothing of hers
    cached = page.evaluate(
        """async () => {
            const out = {};
            for (const k of await caches.keys()) {
                out[k] = (await (await caches.open(k)).keys()).map((r) => new URL(r.url).pathname);
            }
            return out;
        }"""
    )
    for name, paths in cached.items():
        assert name.startswith("bangpae-shell"), name
        for path in paths:
            assert not path.startswith("/api/"), path
            assert path.startswith(("/static/", "/app/", "/today", "/basemap/")), path
    # the SOS went out before the page did
    deadline = time.monotonic() + 5
    sos: list[Any] = []
    while not sos and time.monotonic() < deadline:
        incidents = httpx.get(
            f"{case['api']}/incidents", params={"status": "open"}, headers=case["staff"]
        ).json()
        sos = [i for i in incidents if i["kind"] == "sos"]
        time.sleep(0.2)
    assert len(sos) == 1
    ctx.close()


def test_the_app_can_be_installed_under_a_neutral_name_and_icon(
    server: Server, browser: Any
) -> None:
    seed(server)
    ctx, page = open_app(browser, server, "/app/?look=notes")
    href = page.get_attribute("link[rel=manifest]", "href")
    assert href == "/app/manifest.webmanifest?look=notes"
    assert page.title() == "메모"
    assert page.get_attribute("link[rel=icon]", "href") == "/static/icons/notes.svg"
    for lang, name in (("ko", "메모"), ("en", "Notes")):
        m = httpx.get(f"{server.api}{href}&lang={lang}").json()
        assert m["name"] == m["short_name"] == name
        assert m["start_url"] == "/app/?look=notes"
        assert m["icons"][0]["src"] == "/static/icons/notes.svg"
        assert httpx.get(f"{server.api}{m['icons'][0]['src']}").status_code == 200
    weather = httpx.get(f"{server.api}/app/manifest.webmanifest?look=weather").json()
    assert weather["name"] == "날씨" and weather["icons"][0]["src"].endswith("weather.svg")
    plain = httpx.get(f"{server.api}/app/manifest.webmanifest?look=../../x").json()
    assert plain["name"] == "방패" and plain["start_url"] == "/app/"
    # the help screen offers the looks
    sign_in(page, "victim1")
    onboard(page)
    page.click("a[data-go='help']")
    pw.expect(page.locator("#help a[href='/app/?look=weather']")).to_be_visible()
    a11y = serious(page)
    # the settings screen, its PIN section (saving: tested further down)
    page.click("#help a[data-go='status']")
    page.click("a[data-go='settings']")
    pw.expect(page.locator("#settings h1")).to_be_focused()
    pw.expect(page.locator("#pins-title")).to_have_text("PIN 설정")
    a11y += serious(page)
    shot(page, "victim-pins-ko")
    english(page)
    pw.expect(page.locator("#settings h1")).to_have_text("Settings")
    pw.expect(page.locator("#pins-title")).to_have_text("PIN settings")
    a11y += serious(page)
    shot(page, "victim-pins-en")
    assert a11y == []
    ctx.close()


# -- the server's SOS loop and PINs (docs/sos.md) --------------------------------------------
# These drive GET /victim/sos, the stream's "sos" messages, the cancel, and the PINs.


def needs(server: Server, path: str) -> dict[str, str]:
    """Her API session, once ``path`` answers her."""
    her = server.login("victim1", PASSWORD)
    r = httpx.get(f"{server.api}/api/v1{path}", headers=her)
    assert r.status_code == 200, r.text
    return her


def test_the_sos_loop_follows_the_control_centre_step_by_step(server: Server, browser: Any) -> None:
    case = seed(server)
    needs(server, "/victim/sos")
    ctx, page = signed_in(browser, server)
    page.locator("#sos").hover()
    page.mouse.down()
    page.wait_for_timeout(2300)
    page.mouse.up()
    pw.expect(page.locator("body")).to_have_attribute("data-sos", "sent", timeout=6000)
    loop = page.locator("#status .loop")
    pw.expect(loop.locator("li[data-state='received']")).to_be_visible()
    # the operator takes it and sends an officer: each step appears with its time
    staff, api = case["staff"], case["api"]
    incidents = httpx.get(f"{api}/incidents", params={"status": "open"}, headers=staff).json()
    sos = next(i for i in incidents if i["kind"] == "sos")
    httpx.post(f"{api}/incidents/{sos['id']}/acknowledge", json={"note": "seen"}, headers=staff)
    pw.expect(loop.locator("li[data-state='seen']")).to_contain_text(
        "상황실 요원이 확인 중", timeout=10000
    )
    httpx.post(
        f"{api}/incidents/{sos['id']}/dispatch",
        json={"note": "go", "officer_id": case["officer"]},
        headers=staff,
    )
    pw.expect(loop.locator("li[data-state='officer_assigned']")).to_contain_text(
        "출동 요원 배정", timeout=10000
    )
    assert re.search(r"\d\d:\d\d:\d\d", loop.locator("li").last.inner_text())
    english(page)
    pw.expect(loop.locator("li[data-state='officer_assigned']")).to_contain_text("Officer assigned")
    shot(page, "victim-sos-loop-server-en")
    assert serious(page) == []
    # a reload keeps showing it, from the server
    page.reload()
    pw.expect(page.locator("#status .loop li[data-state='officer_assigned']")).to_be_visible(
        timeout=10000
    )
    ctx.close()


def test_cancelling_an_sos_looks_the_same_with_the_duress_pin(server: Server, browser: Any) -> None:
    case = seed(server)
    her = needs(server, "/victim/pins")
    r = httpx.put(
        f"{server.api}/api/v1/victim/pins",
        json={"app_pin": "1357", "duress_pin": "2468"},
        headers=her,
    )
    assert r.status_code in (200, 204), r.text
    screens = []
    for pin in ("1357", "2468"):  # her app PIN, then her duress PIN
        ctx, page = signed_in(browser, server)
        page.locator("#sos").hover()
        page.mouse.down()
        page.wait_for_timeout(2300)
        page.mouse.up()
        safe = page.locator("#status .sos-safe")
        pw.expect(safe).to_be_visible(timeout=8000)
        safe.click()
        pw.expect(page.locator("#pin-ask")).to_be_visible()
        page.fill("#pin-ask-input", pin)
        page.click("#pin-ask-form button[type=submit]")
        done = page.locator("#status .loop li[data-state='cancel_requested']")
        pw.expect(done).to_have_text(re.compile("^취소 요청을 보냈습니다 — 상황실이 확인합니다"))
        screens.append(re.sub(r"\d\d:\d\d:\d\d", "T", page.inner_text("#status .sos-panel")))
        assert serious(page) == []
        ctx.close()
        # the operator verifies and closes it, so that the next SOS is a new one
        for i in httpx.get(
            f"{case['api']}/incidents", params={"status": "open"}, headers=case["staff"]
        ).json():
            if i["kind"] == "sos":
                r = httpx.post(
                    f"{case['api']}/incidents/{i['id']}/resolve",
                    json={"note": "verified by phone"},
                    headers=case["staff"],
                )
                assert r.status_code == 200, r.text
    assert screens[0] == screens[1]


def test_the_app_pin_locks_a_reload_and_a_duress_pin_opens_it_the_same(
    server: Server, browser: Any
) -> None:
    seed(server)
    needs(server, "/victim/pins")
    ctx, page = signed_in(browser, server)
    page.click("a[data-go='settings']")
    pw.expect(page.locator("#settings h1")).to_be_focused()
    page.fill("#app-pin", "12")
    page.click("#pins-form button[type=submit]")
    pw.expect(page.locator("#pins-state")).to_contain_text("숫자 4–8자리")
    page.fill("#app-pin", "1234")
    page.fill("#duress-pin", "9876")
    page.click("#pins-form button[type=submit]")
    pw.expect(page.locator("#pins-state")).to_have_text("저장했습니다.")
    assert serious(page) == []
    for pin in ("0000", "1234", "9876"):
        page.reload()
        pw.expect(page.locator("#lock")).to_be_visible(timeout=10000)
        assert page.locator("#status").is_hidden() and page.locator("#action-bar").is_hidden()
        assert page.get_attribute("#lock a.button", "href") == "tel:112"
        page.fill("#lock-pin", pin)
        page.click("#lock-form button[type=submit]")
        if pin == "0000":
            pw.expect(page.locator("#lock-error")).to_have_text("PIN이 맞지 않습니다.")
            shot(page, "victim-lock-ko")
            assert serious(page) == []
            continue
        pw.expect(page.locator("#status")).to_be_visible()
    ctx.close()


def test_who_saw_my_location_groups_repeated_reads(server: Server, browser: Any) -> None:
    case = seed(server)
    her = server.login("victim1", PASSWORD)
    api, staff = case["api"], case["staff"]
    for ago in (10, 0):  # her phone's track, then a breach and a dispatch that reads it
        fix_at = datetime.fromtimestamp(time.time() - ago, UTC).isoformat()
        httpx.post(
            f"{api}/victim/location",
            json={"lat": HOME[0], "lon": HOME[1], "accuracy_m": 10, "fix_time": fix_at},
            headers=her,
        )
    offender_at(server, 60)
    incidents = httpx.get(f"{api}/incidents", params={"status": "open"}, headers=staff).json()
    breach = next(i for i in incidents if i["kind"] == "breach")
    httpx.post(
        f"{api}/incidents/{breach['id']}/dispatch",
        json={"note": "go", "officer_id": case["officer"]},
        headers=staff,
    )
    officer = server.login("officer1", PASSWORD)
    for _ in range(3):
        httpx.get(f"{api}/field/dispatches", headers=officer)
    rows = httpx.get(f"{api}/victim/accesses", headers=her).json()
    assert any(r.get("count", 0) > 1 for r in rows), rows  # repeated reads, one row
    ctx, page = open_app(browser, server)
    sign_in(page, "victim1")
    page.click("#breach-map")
    onboard(page)
    page.click("a[data-go='accesses']")
    pw.expect(page.locator("#access-list li").first).to_contain_text(
        re.compile(r"\d+회, \d\d:\d\d–\d\d:\d\d")
    )
    english(page)
    pw.expect(page.locator("#access-list li").first).to_contain_text(
        re.compile(r"\d+ times, \d\d:\d\d–\d\d:\d\d")
    )
    ctx.close()
