"""Three server features as she meets them in her app (``/app/``): places of refuge on
the status screen, a recording after a real SOS, and her number and choices of texts in
the settings. Phone screen 390x844, Korean and English, a real ``bangpae serve`` and
Debian's Chromium (see test_apps.py); the rules are in docs/victim-app.md,
docs/refuges.md, docs/evidence.md and docs/sms.md.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from geographiclib.geodesic import Geodesic

import bangpae.web

from .conftest import Server
from .test_apps import (
    FAKE_MICROPHONE,
    chromium,
    hold,
    offender_at,
    onboard,
    open_app,
    seed,
    serious,
    share,
    shot,
    sign_in,
)
from .test_serve import HOME, PASSWORD
from .test_victim_app import english, korean, signed_in

pw = pytest.importorskip("playwright.sync_api")

SAMPLE = Path(bangpae.web.__file__).parents[1] / "samples" / "refuges-seoul.geojson"
LOCALES = Path(bangpae.web.__file__).parent / "static" / "locales"
POINTS = ["n", "ne", "e", "se", "s", "sw", "w", "nw"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium for the module, with a fake microphone that needs no one to allow it
    (as test_evidence.py); the app asks for it only when told to."""
    yield from chromium(*FAKE_MICROPHONE)


def catalog(lang: str) -> dict[str, str]:
    return dict(json.loads((LOCALES / f"{lang}.json").read_text(encoding="utf-8")))


def names(page: Any) -> list[str]:
    return [n.strip() for n in page.locator("#refuge-list .refuge-name").all_inner_texts()]


# -- 1. places of refuge --------------------------------------------------------------------


def test_her_safe_places_leave_out_those_towards_him_only_while_he_is_shown(
    server: Server, browser: Any
) -> None:
    case = seed(server)
    sample = json.loads(SAMPLE.read_text(encoding="utf-8"))
    r = httpx.post(f"{case['api']}/refuges/import", json=sample, headers=case["supervisor"])
    assert r.status_code == 200, r.text
    # the five nearest her, by distance alone, computed here independently
    places = sorted(
        (
            Geodesic.WGS84.Inverse(
                HOME[0], HOME[1], f["geometry"]["coordinates"][1], f["geometry"]["coordinates"][0]
            )["s12"],
            f["properties"]["name_ko"],
        )
        for f in sample["features"]
    )
    nearest = [name for _, name in places[:5]]
    a11y: dict[str, list[str]] = {}

    offender_at(server, 1500)  # near enough for a warning, his position withheld
    ctx, page = signed_in(browser, server)
    assert page.locator("#refuges").is_hidden()  # not without her position
    share(page, ctx)
    box = page.locator("#refuges")
    pw.expect(box).to_have_attribute("data-for", re.compile(r"\|withheld$"), timeout=5000)
    pw.expect(page.locator("body")).to_have_attribute("data-tier", re.compile("notify|reveal"))
    assert page.locator("#map").is_hidden()
    pw.expect(page.locator("#refuges-title")).to_have_text("가까운 안전한 곳")
    assert names(page) == nearest  # by distance only: nothing of him in it
    assert page.locator(".refuge-avoided").count() == 0
    police = page.locator("#refuge-list a.refuge-call")
    assert police.count() >= 1 and police.first.get_attribute("href") == "tel:112"
    assert "방향" not in page.inner_text("#advice")  # no direction from a position not shown
    shot(page, "victim-refuges-notify-ko")
    a11y["notify-ko"] = serious(page)
    english(page)
    pw.expect(page.locator("#refuges-title")).to_have_text("Safe places nearby")
    pw.expect(page.locator("#refuge-list")).to_contain_text("City Hall Station")
    pw.expect(page.locator("#refuge-list")).to_contain_text("Station")
    assert "시청역" not in page.inner_text("#refuge-list")
    shot(page, "victim-refuges-notify-en")
    a11y["notify-en"] = serious(page)
    korean(page)

    # he is 300 m to her north-east: shown, and the places towards him are left out
    offender_at(server, 300)
    pw.expect(box).to_have_attribute("data-for", "reveal|shown", timeout=5000)
    kept = names(page)
    assert "광화문역" not in kept and "을지로입구역" not in kept and "명동파출소" not in kept
    assert "시청역" in kept and kept != nearest
    pw.expect(page.locator(".refuge-avoided")).to_be_visible()
    # the advice is the server's direction away from him and out of his path
    her = server.login("victim1", PASSWORD)
    data = httpx.get(
        f"{case['api']}/victim/refuges",
        params={"lat": f"{HOME[0]:.6f}", "lon": f"{HOME[1]:.6f}"},
        headers=her,
    ).json()
    assert data["away_deg"] is not None
    point = POINTS[round(data["away_deg"] / 45) % 8]
    ko = catalog("ko")
    expected = ko["advice_move_away"].replace("{direction}", ko[f"dir_{point}"])
    pw.expect(page.locator("#advice")).to_have_text(expected)
    assert [p["name"]["ko"] for p in data["refuges"]] == kept
    shot(page, "victim-refuges-reveal-ko")
    a11y["reveal-ko"] = serious(page)
    english(page)
    en = catalog("en")
    pw.expect(page.locator("#advice")).to_have_text(
        en["advice_move_away"].replace("{direction}", en[f"dir_{point}"])
    )
    assert "Gwanghwamun" not in page.inner_text("#refuge-list")
    pw.expect(page.locator("#refuge-list")).to_contain_text("City Hall Station")
    shot(page, "victim-refuges-reveal-en")
    a11y["reveal-en"] = serious(page)

    # she stops sharing: the list goes with her position
    page.uncheck("#share")
    pw.expect(box).to_be_hidden()
    assert a11y == {k: [] for k in a11y}, a11y
    assert page.errors == []  # type: ignore[attr-defined]
    ctx.close()


# -- 2. a recording after a real SOS ----------------------------------------------------


MIC = """
window.__mic = 0;
if (navigator.mediaDevices) {
  const ask = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = (c) => { window.__mic += 1; return ask(c); };
}
"""


def evidence_of(case: dict[str, Any], incident: int) -> list[dict[str, Any]]:
    r = httpx.get(
        f"{case['api']}/incidents/{incident}/evidence",
        params={"purpose": "incident_response"},
        headers=case["staff"],
    )
    assert r.status_code == 200, r.text
    return list(r.json()["evidence"])


def open_sos(case: dict[str, Any]) -> int:
    incidents = httpx.get(
        f"{case['api']}/incidents", params={"status": "open"}, headers=case["staff"]
    ).json()
    [sos] = [i["id"] for i in incidents if i["kind"] == "sos"]
    return int(sos)


def evidence_app(browser: Any, server: Server) -> tuple[Any, Any]:
    """Her app with a clock the test can move on (a recording runs a minute) and a count
    of the app's asks for the microphone."""
    ctx, page = open_app(browser, server)
    ctx.add_init_script(MIC)
    page.clock.install()
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    sign_in(page, "victim1")
    onboard(page)
    pw.expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=5000)
    return ctx, page


def test_a_real_sos_is_recorded_with_her_consent_and_practice_records_nothing(
    server: Server, browser: Any
) -> None:
    case = seed(server)
    ctx, page = evidence_app(browser, server)
    a11y: dict[str, list[str]] = {}

    # consent off (as it starts): an SOS records nothing, and nothing asks for the microphone
    hold(page, "#sos", 2300)
    pw.expect(page.locator("body")).to_have_attribute("data-sos", "sent", timeout=10000)
    sos = open_sos(case)
    page.wait_for_timeout(1500)
    assert page.evaluate("window.__mic") == 0
    assert page.inner_text("#status .evidence-state") == ""

    # she turns it on in the settings: the browser asks for the microphone then, once
    page.click("a[data-go='settings']")
    pw.expect(page.locator("#settings h1")).to_be_focused()
    page.check("#evidence-consent")
    pw.expect(page.locator("#evidence-state")).to_have_text(catalog("ko")["evidence_saved_on"])
    assert page.evaluate("window.__mic") == 1
    shot(page, "victim-settings-evidence-ko")
    a11y["settings-ko"] = serious(page)
    english(page)
    pw.expect(page.locator("#evidence-title")).to_have_text("Recording on SOS")
    pw.expect(page.locator("#evidence-state")).to_have_text(catalog("en")["evidence_saved_on"])
    a11y["settings-en"] = serious(page)
    korean(page)
    page.click("#settings a[data-go='status']")

    # practice: the same hold and count, nothing recorded
    page.click("a[data-go='help']")
    page.click("#help button[data-go='practice']")
    hold(page, "#practice-sos", 2300)
    pw.expect(page.locator("#practice-loop li").first).to_be_visible(timeout=6000)
    assert page.evaluate("window.__mic") == 1
    page.click("#practice-back")
    page.click("#help a[data-go='status']")

    # a real SOS: recorded after the count, for the module's bounded time, then uploaded
    hold(page, "#sos", 2300)
    pw.expect(page.locator("#status .evidence-state")).to_have_text("녹음 중", timeout=10000)
    assert page.evaluate("window.__mic") == 2
    page.wait_for_timeout(1500)  # a second and a half of the fake microphone
    page.clock.fast_forward("01:01")  # the recording's minute runs out
    pw.expect(page.locator("#status .evidence-state")).to_have_text(
        catalog("ko")["evidence_sent"], timeout=10000
    )
    [rec] = evidence_of(case, sos)
    assert rec["content_type"] == "audio/webm" and rec["size"] > 1000, rec
    assert open_sos(case) == sos  # the press joined her open SOS: one incident, one recording
    a11y["sent-ko"] = serious(page)
    english(page)
    pw.expect(page.locator("#status .evidence-state")).to_have_text(catalog("en")["evidence_sent"])
    shot(page, "victim-sos-recorded-en")
    # nothing of it stays on the phone once sent
    assert (
        page.evaluate(
            """async () => { const ev = await import('/static/js/evidence.js');
        return (await ev.queuedEvidence()).length; }"""
        )
        == 0
    )
    assert a11y == {k: [] for k in a11y}, a11y
    ctx.close()


def test_a_silent_sos_records_without_a_sign_and_quick_exit_throws_a_recording_away(
    server: Server, browser: Any
) -> None:
    case = seed(server)
    ctx, page = evidence_app(browser, server)
    page.click("a[data-go='settings']")
    page.check("#evidence-consent")
    pw.expect(page.locator("#evidence-state")).not_to_be_empty()
    page.click("#settings a[data-go='status']")
    page.check("#silent")
    before = page.inner_text("body")
    hold(page, "#sos", 2300)
    pw.expect(page.locator("body")).to_have_attribute("data-sos", "sent", timeout=10000)
    deadline = time.monotonic() + 5
    while page.evaluate("window.__mic") < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert page.evaluate("window.__mic") == 2  # recording...
    sos = open_sos(case)
    # ...with nothing on screen beyond the silent SOS's own small note
    for el in page.locator(".evidence-state").all():
        assert el.inner_text() == ""
    text = page.inner_text("body")
    assert "녹음" not in text and "Recording" not in text, text
    assert "녹음" not in before

    # quick exit while it records: stopped, thrown away, nothing uploaded, nothing kept
    page.click("#exit")
    page.wait_for_url(re.compile(r"/today$"))
    assert page.evaluate("async () => (await indexedDB.databases()).map((d) => d.name)") == []
    assert page.evaluate("localStorage.length") == 0
    page.wait_for_timeout(1000)
    assert evidence_of(case, sos) == []
    ctx.close()


# -- 3. her number and her choices of texts -------------------------------------------


def test_her_number_is_kept_as_e164_a_bad_one_is_refused_next_to_the_field(
    server: Server, browser: Any
) -> None:
    case = seed(server)
    ctx, page = signed_in(browser, server)
    a11y: dict[str, list[str]] = {}
    page.click("a[data-go='settings']")
    pw.expect(page.locator("#settings h1")).to_be_focused()
    pw.expect(page.locator("#sms-title")).to_have_text("문자 알림")
    # before she chooses: the kr profile's defaults, every tier
    pw.expect(page.locator("#sms-enabled")).to_be_checked()
    assert page.locator("input[name='sms-tier']:checked").count() == 4
    a11y["sms-ko"] = serious(page)

    page.fill("#sms-phone", "010-12")
    page.click("#sms-form button[type=submit]")
    err = page.locator("#sms-phone-error")
    pw.expect(err).to_have_text(catalog("ko")["sms_phone_invalid"])
    pw.expect(page.locator("#sms-phone")).to_have_attribute("aria-invalid", "true")
    shot(page, "victim-settings-sms-error-ko")
    a11y["sms-error-ko"] = serious(page)
    english(page)  # the server's own sentence, next to the field
    pw.expect(err).to_contain_text("phone number: give +821012345678 or 010-1234-5678")
    pw.expect(page.locator("#sms-title")).to_have_text("Text alerts")
    pw.expect(page.locator("label[for='sms-phone']")).to_have_text("Mobile number")
    pw.expect(page.locator("#sms-tiers legend")).to_have_text("Steps to text me about")
    pw.expect(page.locator("#sms-tiers")).to_contain_text("Danger")
    shot(page, "victim-settings-sms-error-en")
    a11y["sms-error-en"] = serious(page)
    her = server.login("victim1", PASSWORD)
    assert httpx.get(f"{case['api']}/victim/contact", headers=her).json()["phone"] is None

    # a Korean number as people write it: kept in E.164, shown back
    page.fill("#sms-phone", "010-1234-5678")
    page.uncheck("input[name='sms-tier'][value='notify']")
    page.select_option("#sms-lang", "en")
    page.click("#sms-form button[type=submit]")
    pw.expect(page.locator("#sms-state")).to_have_text("Saved. Number: +821012345678")
    pw.expect(page.locator("#sms-phone")).to_have_value("+821012345678")
    pw.expect(err).to_have_text("")
    assert page.get_attribute("#sms-phone", "aria-invalid") is None
    stored = httpx.get(f"{case['api']}/victim/contact", headers=her).json()
    assert stored == {
        "phone": "+821012345678",
        "sms": {"enabled": True, "tiers": ["reveal", "breach", "uncertain"]},
        "lang": "en",
    }, stored
    a11y["sms-saved-en"] = serious(page)
    korean(page)
    pw.expect(page.locator("#sms-state")).to_have_text("저장했습니다. 번호: +821012345678")

    # texts off: the tiers cannot be chosen; and it stays as saved on the next visit
    page.uncheck("#sms-enabled")
    pw.expect(page.locator("input[name='sms-tier'][value='breach']")).to_be_disabled()
    page.click("#sms-form button[type=submit]")
    pw.expect(page.locator("#sms-state")).to_contain_text("저장했습니다")
    page.click("#settings a[data-go='status']")
    page.click("a[data-go='settings']")
    pw.expect(page.locator("#sms-phone")).to_have_value("+821012345678")
    pw.expect(page.locator("#sms-enabled")).not_to_be_checked()
    pw.expect(page.locator("#sms-lang")).to_have_value("en")
    shot(page, "victim-settings-sms-ko")
    a11y["sms-off-ko"] = serious(page)
    assert a11y == {k: [] for k in a11y}, a11y
    ctx.close()


def test_her_pins_and_her_number_change_only_with_her_app_pin(server: Server, browser: Any) -> None:
    """Whoever holds her unlocked phone cannot clear her duress PIN or move her texts to
    his number: once she has an app PIN, both forms ask for it (docs/sos.md)."""
    case = seed(server)
    her = server.login("victim1", PASSWORD)
    ctx, page = signed_in(browser, server)
    a11y: dict[str, list[str]] = {}
    page.click("a[data-go='settings']")
    pw.expect(page.locator("#settings h1")).to_be_focused()
    assert page.locator("#pins-current").is_hidden() and page.locator("#sms-pin").is_hidden()
    page.fill("#duress-pin", "9876")
    page.click("#pins-form button[type=submit]")
    pw.expect(page.locator("#pins-state")).to_have_text(catalog("ko")["pins_need_app"])
    page.fill("#app-pin", "1234")
    page.fill("#duress-pin", "9876")
    page.click("#pins-form button[type=submit]")
    pw.expect(page.locator("#pins-state")).to_have_text("저장했습니다.")
    for field in ("#pins-current", "#sms-pin", "#pins-clear"):
        pw.expect(page.locator(field)).to_be_visible()
    # the server never says whether a duress PIN is set
    assert httpx.get(f"{case['api']}/victim/pins", headers=her).json() == {"app_pin_set": True}

    # a change of PIN with a wrong current PIN changes nothing
    page.fill("#pins-current", "0000")
    page.fill("#app-pin", "5555")
    page.click("#pins-form button[type=submit]")
    pw.expect(page.locator("#pins-state")).to_have_text("지금 쓰는 앱 PIN이 맞지 않습니다.")
    pw.expect(page.locator("#pins-current")).to_be_focused()
    a11y["pins-wrong-ko"] = serious(page)
    shot(page, "victim-settings-pins-wrong-ko")
    # "remove all PINs" without her PIN: refused too
    page.fill("#pins-current", "")
    page.click("#pins-clear")
    pw.expect(page.locator("#pins-state")).to_have_text("지금 쓰는 앱 PIN이 맞지 않습니다.")

    # her texts moved to another number without her PIN: refused, nothing stored
    page.fill("#sms-phone", "010-9876-5432")
    page.click("#sms-form button[type=submit]")
    pw.expect(page.locator("#sms-state")).to_have_text(catalog("ko")["sms_pin_wrong"])
    assert httpx.get(f"{case['api']}/victim/contact", headers=her).json()["phone"] is None
    english(page)
    pw.expect(page.locator("#sms-state")).to_have_text(catalog("en")["sms_pin_wrong"])
    pw.expect(page.locator("label[for='sms-pin']")).to_have_text("App PIN (needed to make changes)")
    pw.expect(page.locator("label[for='pins-current']")).to_have_text("Your current app PIN")
    pw.expect(page.locator("#pins-state")).to_have_text("Your current app PIN is not right.")
    a11y["pins-wrong-en"] = serious(page)
    shot(page, "victim-settings-pins-wrong-en")
    page.fill("#sms-pin", "1234")
    page.click("#sms-form button[type=submit]")
    pw.expect(page.locator("#sms-state")).to_have_text("Saved. Number: +821098765432")
    pw.expect(page.locator("#sms-pin")).to_have_value("")

    # with her PIN: the app PIN changes, the duress PIN is kept (the field left empty)
    page.fill("#pins-current", "1234")
    page.fill("#app-pin", "5555")
    page.click("#pins-form button[type=submit]")
    pw.expect(page.locator("#pins-state")).to_have_text("Saved.")
    check = f"{case['api']}/victim/pin/check"
    assert httpx.post(check, json={"pin": "5555"}, headers=her).json() == {"ok": True}
    opened = httpx.get(f"{case['api']}/incidents", params={"status": "open"}, headers=case["staff"])
    assert [i for i in opened.json() if i["kind"] == "sos"] == []
    assert httpx.post(check, json={"pin": "9876"}, headers=her).json() == {"ok": True}
    opened = httpx.get(f"{case['api']}/incidents", params={"status": "open"}, headers=case["staff"])
    assert [i["duress"] for i in opened.json() if i["kind"] == "sos"] == [True]
    korean(page)
    a11y["pins-saved-ko"] = serious(page)
    assert a11y == {k: [] for k in a11y}, a11y
    ctx.close()
