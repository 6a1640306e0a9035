"""The protected person's app as a frightened person with a phone meets it: the offender
walking in and out, the link lost, an SOS, a quick exit. Phone viewport, Korean and
English, a real ``bangpae serve`` and Debian's Chromium (see test_apps.py).

The rules these tests hold the app to are in docs/victim-app.md. Tests of the SOS loop,
the cancel with a PIN, the PIN lock and grouped access rows need the server's side of
them (``GET /api/v1/victim/sos``, ``/victim/pins``...): they skip themselves until the
server has those routes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from . import test_apps
from .conftest import Server
from .test_apps import (
    offender_at,
    onboard,
    open_app,
    seed,
    serious,
    share,
    shot,
    sign_in,
)

pw = pytest.importorskip("playwright.sync_api")
browser = test_apps.browser  # one Chromium for the module, as in test_apps.py

GREEN = "rgb(30, 107, 52)"  # --clear: the colour that says "safe"
LOCALES = Path(__file__).parents[2] / "src/bangpae/web/static/locales"


def signed_in(browser: Any, server: Server) -> tuple[Any, Any]:
    """Her app, signed in and through the onboarding, with live data on screen."""
    ctx, page = open_app(browser, server)
    sign_in(page, "victim1")
    onboard(page)
    pw.expect(page.locator("body")).to_have_attribute("data-freshness", "live", timeout=5000)
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
    pw.expect(page.locator("body")).to_have_attribute("data-freshness", "stale", timeout=10000)
    assert card_colour(page) != GREEN
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
