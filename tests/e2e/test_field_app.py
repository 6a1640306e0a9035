"""The field officer's app under real conditions, in a real browser on a real server.

One server for the module (a victim, her order against an offender with an ankle
monitor, an officer); each test raises incidents of its own kind (one open incident per
order and kind) and dispatches them to the officer. Phone viewport, Korean and English;
screenshots go to ``artifacts/screenshots``. What is shown, and why: docs/field-app.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import Server
from .test_apps import (
    BEARING,
    PHONE,
    browser,  # noqa: F401 -- the module's browser
    offender_at,
    pw,
    seed,
    serious,
    shot,
    sign_in,
)
from .test_serve import HOME, PASSWORD, at

CONTROL_ROOM = "02-1234-5678"
NOTE = '<img src=x onerror="window.__xss=1">뒷문으로 접근, 사이렌 끄고'
HER_FIX_AGO_S = 200.0  # her phone's newest report: older than the 2 min the app calls old


@dataclass
class FieldServer(Server):
    """A server whose field app has a control room number to call."""

    def env(self) -> dict[str, str]:
        return {**super().env(), "BANGPAE_CONTROL_ROOM_PHONE": CONTROL_ROOM}


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data = Path(tmp_path_factory.mktemp("field")) / "data"
    data.mkdir(mode=0o700)
    srv = FieldServer(data, Server.free(), Server.free())
    # her reports are 200 s old: still fresh for the order (10 min), old for an officer
    c = seed(srv, stale_after_s=600.0)
    c["srv"] = srv
    c["officer_headers"] = srv.login("officer1", PASSWORD)
    yield c
    srv.kill()


def her_phone_reports(c: dict[str, Any], ago: float) -> None:
    """Two agreeing reports of her phone at home, the newest ``ago`` s old."""
    victim = c["srv"].login("victim1", PASSWORD)
    for back in (ago + 10, ago):
        when = datetime.fromtimestamp(time.time() - back, UTC).isoformat()
        r = httpx.post(
            f"{c['api']}/victim/location",
            json={"lat": HOME[0], "lon": HOME[1], "accuracy_m": 10, "fix_time": when},
            headers=victim,
        )
        assert r.status_code == 202, r.text


def ankle_alarm(c: dict[str, Any], alarm: str, d: float = 60.0) -> None:
    """One fix of his ankle monitor ``d`` m from her, carrying an alarm."""
    lat, lon = at(d, BEARING)
    params = {"id": "ANKLE-1", "lat": f"{lat:.7f}", "lon": f"{lon:.7f}"}
    params |= {"timestamp": f"{time.time():.3f}", "accuracy": "5", "alarm": alarm}
    assert httpx.get(c["srv"].osmand, params=params).status_code == 200


def open_incident(c: dict[str, Any], kind: str) -> int:
    """The id of the open incident of this kind (waiting a moment for it to open)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rows = httpx.get(
            f"{c['api']}/incidents", params={"status": "open"}, headers=c["staff"]
        ).json()
        found = [i["id"] for i in rows if i["kind"] == kind]
        if found:
            return int(found[0])
        time.sleep(0.1)
    raise AssertionError(f"no open {kind} incident")


def dispatch(c: dict[str, Any], incident: int, note: str) -> None:
    r = httpx.post(
        f"{c['api']}/incidents/{incident}/dispatch",
        json={"note": note, "officer_id": c["officer"]},
        headers=c["staff"],
    )
    assert r.status_code == 200, r.text


def status(c: dict[str, Any], incident: int) -> dict[str, Any]:
    r = httpx.get(f"{c['api']}/incidents/{incident}", headers=c["staff"])
    return dict(r.json())


@pytest.fixture(scope="module")
def breach_and_tamper(case: dict[str, Any]) -> tuple[int, int]:
    """A breach (go to her; her position is 200 s old) and a tamper (go to him), dispatched."""
    her_phone_reports(case, HER_FIX_AGO_S)
    offender_at(case["srv"], 60)
    breach = open_incident(case, "breach")
    dispatch(case, breach, NOTE)
    ankle_alarm(case, "tamper")
    tamper = open_incident(case, "tamper")
    dispatch(case, tamper, "발찌 상태 확인")
    return breach, tamper


def open_field(
    browser: Any,  # noqa: F811
    c: dict[str, Any],
    lang: str = "ko",
    permissions: tuple[str, ...] = ("geolocation", "notifications"),
    fake_clock: bool = False,
) -> tuple[Any, Any]:
    """The field app on a phone, signed in as the officer; notifications and vibrations
    the page makes are recorded (a headless browser shows and shakes nothing)."""
    ctx = browser.new_context(
        **PHONE,
        geolocation={"latitude": HOME[0], "longitude": HOME[1], "accuracy": 10},
        permissions=list(permissions),
        locale="ko-KR" if lang == "ko" else "en-GB",
    )
    ctx.add_init_script(
        f"""
        localStorage.setItem("lang", "{lang}");
        window.__notes = [];
        window.__vibrations = [];
        navigator.vibrate = (p) => (window.__vibrations.push(p), true);
        if (window.ServiceWorkerRegistration) {{
          const show = ServiceWorkerRegistration.prototype.showNotification;
          ServiceWorkerRegistration.prototype.showNotification = function (title, options) {{
            window.__notes.push({{ title, body: (options || {{}}).body || "" }});
            return show.call(this, title, options);
          }};
        }}
        """
    )
    page = ctx.new_page()
    if fake_clock:
        page.clock.install()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.errors = errors  # type: ignore[attr-defined]
    page.goto(f"{c['srv'].api}/field/")
    page.wait_for_selector("body[data-ready='1']")
    pw.expect(page.locator("body")).to_have_attribute("data-freshness", "unknown")
    sign_in(page, "officer1")
    pw.expect(page.locator("body")).to_have_attribute("data-freshness", "live")
    return ctx, page


def pins(page: Any) -> dict[str, int]:
    return {k: page.locator(f"#map .pin-{k}").count() for k in ("requester", "victim", "offender")}


def test_the_officer_is_told_whom_to_go_to_with_its_own_pin_label_and_age(
    case: dict[str, Any],
    breach_and_tamper: tuple[int, int],
    browser: Any,  # noqa: F811
) -> None:
    breach, tamper = breach_and_tamper
    ctx, page = open_field(browser, case, permissions=("geolocation",))
    a11y: dict[str, list[str]] = {}
    page.click(f"button.dispatch[data-id='{breach}']")
    # a breach: the officer goes to her, the protected person; he is a party of the order,
    # so the policy shows him too, apart, under his own label and pin
    pw.expect(page.locator("#headline")).to_have_text("보호대상자에게 가세요")
    target = page.locator("#detail-target")
    pw.expect(target).to_contain_text("보호대상자 위치")
    pw.expect(target).to_contain_text("3분 전")
    assert pins(page) == {"requester": 0, "victim": 1, "offender": 1}
    pw.expect(page.locator("#legend")).to_contain_text("보호대상자 위치")
    pw.expect(page.locator("#legend")).to_contain_text("감독대상자 위치")
    pw.expect(page.locator("#detail-offender")).to_contain_text("감독대상자 위치")
    assert "감독대상자" not in page.inner_text("#detail-target")
    assert "요청자" not in page.inner_text("#detail")
    # her position is over 2 min old: said where it cannot be missed
    pw.expect(page.locator("#target-old")).to_be_visible()
    pw.expect(page.locator("#target-old")).to_contain_text("3분 전")
    # the operator's note, shown as text
    pw.expect(page.locator("#dispatch-note")).to_have_text(NOTE)
    assert page.locator("#detail img").count() == 0
    assert page.evaluate("window.__xss") is None
    # navigation any phone opens, and the hint that the maps company learns the place
    page.click("#nav-choice summary")
    lat, lon = HOME
    hrefs = {k: page.get_attribute(f"#nav-{k}", "href") for k in ("geo", "apple", "kakao", "naver")}
    assert hrefs["geo"] == f"geo:{lat},{lon}"
    assert hrefs["apple"] == f"https://maps.apple.com/?daddr={lat},{lon}"
    assert (
        hrefs["kakao"] == f"https://map.kakao.com/link/to/%EB%AA%A9%EC%A0%81%EC%A7%80,{lat},{lon}"
    )
    assert (hrefs["naver"] or "").startswith(f"nmap://route/walk?dlat={lat}&dlng={lon}&")
    assert "appname=" in (hrefs["naver"] or "")
    pw.expect(page.locator("#nav-hint")).to_contain_text("전달")
    # the control room is one tap away; she is never called back (a silent SOS)
    assert page.get_attribute("#call-room", "href") == "tel:0212345678"
    pw.expect(page.locator("#call-room")).to_have_text("상황실 전화")
    assert page.locator("a[href^='tel:']").count() == 1
    # alerts are asked for with a button (not allowed yet in this browser)
    pw.expect(page.locator("#notify-on")).to_be_visible()
    pw.expect(page.locator("#notify-on")).to_have_text("알림 켜기")
    # Korean breaks lines between words
    assert page.eval_on_selector("#headline", "e => getComputedStyle(e).wordBreak") == "keep-all"
    shot(page, "field-victim-ko")
    a11y["victim-ko"] = serious(page)

    page.click(f"button.dispatch[data-id='{tamper}']")
    pw.expect(page.locator("#headline")).to_have_text("감독대상자 위치로 가세요")
    pw.expect(page.locator("#detail-target")).to_contain_text("감독대상자 위치")
    pw.expect(page.locator("#detail-target")).to_contain_text("초 전")
    assert pins(page) == {"requester": 0, "victim": 0, "offender": 1}
    pw.expect(page.locator("#target-old")).to_be_hidden()
    # (the map's label of the pin before fades out)
    pw.expect(page.locator("#detail")).not_to_contain_text("보호대상자")
    shot(page, "field-offender-ko")
    a11y["offender-ko"] = serious(page)

    page.click("#lang")
    pw.expect(page.locator("#headline")).to_have_text("Go to the supervised person")
    pw.expect(page.locator("#detail-target")).to_contain_text("Supervised person")
    page.click(f"button.dispatch[data-id='{breach}']")
    pw.expect(page.locator("#headline")).to_have_text("Go to the protected person")
    pw.expect(page.locator("#detail-target")).to_contain_text("Protected person")
    pw.expect(page.locator("#target-old")).to_contain_text("3 min ago")
    pw.expect(page.locator("#call-room")).to_have_text("Call control room")
    page.click("#nav-choice summary")
    pw.expect(page.locator("#nav-hint")).to_contain_text("Apple")
    kakao = page.get_attribute("#nav-kakao", "href") or ""
    assert kakao.startswith("https://map.kakao.com/link/to/Destination,")
    shot(page, "field-victim-en")
    a11y["victim-en"] = serious(page)
    assert {k: v for k, v in a11y.items() if v} == {}
    assert page.errors == []  # type: ignore[attr-defined]
    ctx.close()


def test_a_new_dispatch_raises_an_alert_within_one_poll(
    case: dict[str, Any],
    browser: Any,  # noqa: F811
) -> None:
    ctx, page = open_field(browser, case, fake_clock=True)
    pw.expect(page.locator("#notify-on")).to_be_hidden()  # already allowed
    if page.locator("#new-banner").is_visible():  # dispatches from before this session
        page.click("#new-dismiss")
    before = len(page.evaluate("window.__notes"))
    ankle_alarm(case, "powercut")
    incident = open_incident(case, "device_integrity")
    dispatch(case, incident, "")
    banner = page.locator("#new-banner")
    page.clock.fast_forward("00:05")  # one poll
    pw.expect(banner).to_be_visible(timeout=2000)
    assert banner.get_attribute("role") == "alert"
    pw.expect(banner).to_contain_text(f"#{incident}")
    pw.expect(banner).to_contain_text("새 출동")
    item = page.locator(f"button.dispatch[data-id='{incident}']")
    pw.expect(item).to_have_class("dispatch prio-high is-new")
    notes = page.evaluate("window.__notes")
    assert len(notes) == before + 1 and f"#{incident}" in notes[-1]["body"]
    assert page.evaluate("window.__vibrations.length") >= 1
    shot(page, "field-new-ko")
    a11y = serious(page)
    page.click("#new-open")
    pw.expect(page.locator("#detail-title")).to_contain_text(f"#{incident}")
    pw.expect(banner).to_be_hidden()
    pw.expect(item).to_have_class("dispatch prio-high")
    # the next poll brings nothing new: no second alert
    conn = page.inner_text("#conn")
    page.clock.fast_forward("00:05")
    pw.expect(page.locator("#conn")).not_to_have_text(conn)
    pw.expect(banner).to_be_hidden()
    assert len(page.evaluate("window.__notes")) == before + 1
    assert a11y == []
    assert page.errors == []  # type: ignore[attr-defined]
    ctx.close()


def test_a_false_alarm_is_sent_only_after_a_confirmation_with_a_reason(
    case: dict[str, Any],
    browser: Any,  # noqa: F811
) -> None:
    ankle_alarm(case, "lowBattery")
    incident = open_incident(case, "low_battery")
    dispatch(case, incident, "배터리 확인")
    ctx, page = open_field(browser, case)
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.url.endswith("/outcome") else None)
    page.click(f"button.dispatch[data-id='{incident}']")
    page.check("input[value='false_alarm']")
    page.click("#outcome-form button[type=submit]")
    dialog = page.locator("#confirm-false")
    pw.expect(dialog).to_be_visible()
    assert page.eval_on_selector("#confirm-false", "e => e.open && e.tagName") == "DIALOG"
    pw.expect(page.locator("#confirm-false-title")).to_have_text("오경보로 종료할까요?")
    # no reason: refused on the phone, nothing sent
    page.click("#confirm-false-ok")
    pw.expect(page.locator("#false-reason-error")).to_have_text("이유를 적어 주세요.")
    assert page.get_attribute("#false-reason", "aria-invalid") == "true"
    shot(page, "field-false-alarm-ko")
    a11y = {"dialog-ko": serious(page)}
    page.click("#confirm-false-cancel")
    pw.expect(dialog).to_be_hidden()
    page.wait_for_timeout(300)
    assert sent == []
    assert status(case, incident)["status"] == "dispatched"

    page.click("#lang")
    page.click("#outcome-form button[type=submit]")
    pw.expect(page.locator("#confirm-false-title")).to_have_text("Close as a false alarm?")
    a11y["dialog-en"] = serious(page)
    page.fill("#false-reason", "battery swapped, strap intact")
    page.click("#confirm-false-ok")
    pw.expect(dialog).to_be_hidden()
    pw.expect(page.locator(f"button.dispatch[data-id='{incident}']")).to_have_count(0, timeout=8000)
    assert len(sent) == 1
    done = status(case, incident)
    assert done["status"] == "false_alarm"
    assert done["timeline"][-1]["note"] == "battery swapped, strap intact"
    assert {k: v for k, v in a11y.items() if v} == {}
    assert page.errors == []  # type: ignore[attr-defined]
    ctx.close()


def test_a_list_not_refreshed_for_15_s_turns_neutral_and_says_since_when(
    case: dict[str, Any],
    breach_and_tamper: tuple[int, int],
    browser: Any,  # noqa: F811
) -> None:
    breach, _ = breach_and_tamper
    ctx, page = open_field(browser, case, fake_clock=True)
    page.click(f"button.dispatch[data-id='{breach}']")
    pw.expect(page.locator("#stale-note")).to_be_hidden()
    ctx.set_offline(True)
    page.clock.fast_forward("00:16")
    body = page.locator("body")
    pw.expect(body).to_have_attribute("data-freshness", "stale")
    note = page.locator("#stale-note")
    pw.expect(note).to_be_visible()
    pw.expect(note).to_contain_text("기준 — 연결 끊김")
    assert page.eval_on_selector("#map", "e => getComputedStyle(e).filter") != "none"
    shot(page, "field-stale-ko")
    a11y = serious(page)
    ctx.set_offline(False)
    page.clock.fast_forward("00:05")
    pw.expect(body).to_have_attribute("data-freshness", "live")
    pw.expect(note).to_be_hidden()
    assert a11y == []
    ctx.close()


def test_an_sos_sends_the_officer_to_the_requester_and_shows_him_apart(
    case: dict[str, Any],
    browser: Any,  # noqa: F811
) -> None:
    """Her SOS sends the officer to her as the one who asked for help, never as him."""
    offender_at(case["srv"], 860)
    victim = case["srv"].login("victim1", PASSWORD)
    r = httpx.post(
        f"{case['api']}/victim/sos",
        json={"lat": HOME[0], "lon": HOME[1], "accuracy_m": 10, "silent": True},
        headers=victim,
    )
    assert r.status_code == 201, r.text
    sos = open_incident(case, "sos")
    dispatch(case, sos, "조용한 SOS: 전화하지 말 것")
    mine = httpx.get(f"{case['api']}/field/dispatches", headers=case["officer_headers"]).json()
    item = next(d for d in mine["dispatches"] if d["id"] == sos)
    assert item["target"]["whom"] == "requester", item
    assert item["dispatch_note"] == "조용한 SOS: 전화하지 말 것"
    ctx, page = open_field(browser, case)
    page.click(f"button.dispatch[data-id='{sos}']")
    pw.expect(page.locator("#headline")).to_contain_text("요청자에게 가세요")
    pw.expect(page.locator("#detail-target")).to_contain_text("요청자 위치")
    legend = page.locator("#legend")
    pw.expect(legend).to_contain_text("요청자 위치")
    if item.get("offender"):
        assert pins(page) == {"requester": 1, "victim": 0, "offender": 1}
        pw.expect(page.locator("#detail-offender")).to_contain_text("감독대상자 위치")
        pw.expect(legend).to_contain_text("감독대상자 위치")
    else:
        assert pins(page) == {"requester": 1, "victim": 0, "offender": 0}
        pw.expect(page.locator("#detail-offender")).to_be_hidden()
    pw.expect(page.locator("#detail")).not_to_contain_text("보호대상자")
    assert page.locator("a[href^='tel:']").count() == 1  # the control room only
    shot(page, "field-sos-ko")
    a11y = serious(page)
    page.click("#lang")
    pw.expect(page.locator("#detail-target")).to_contain_text("Requester")
    shot(page, "field-sos-en")
    assert a11y == [] and serious(page) == []
    ctx.close()


def test_the_control_room_number_is_a_phone_number_or_nothing(case: dict[str, Any]) -> None:
    from pydantic import ValidationError

    from bangpae.config import Settings

    for bad in ("javascript:alert(1)", '1" onclick="x', "+", "0" * 33):
        with pytest.raises(ValidationError):
            Settings(control_room_phone=bad)
    for good in ("", "112", "+82 2-1234-5678", "(02) 1234 5678"):
        assert Settings(control_room_phone=good).control_room_phone == good
    page = httpx.get(f"{case['srv'].api}/field/").text
    assert f'data-control-room="{CONTROL_ROOM}"' in page
