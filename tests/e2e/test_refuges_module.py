"""The refuges module (``static/js/refuges.js``) in a real browser against a real server.

The apps' pages are being rebuilt, so the module is loaded here by a page that exists
only in this test (Playwright answers its address; everything it loads comes from the
server): the demo's sample places, her list from the API, in Korean and in English,
on a phone-sized screen, scanned with axe-core.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import Server
from .test_apps import PHONE, SHOTS, browser, serious  # noqa: F401 - browser is a fixture
from .test_serve import HOME, PASSWORD

pw = pytest.importorskip("playwright.sync_api")

SAMPLE = Path(__file__).parents[2] / "src/bangpae/samples/refuges-seoul.geojson"
PAGE = """<!doctype html>
<html lang="ko"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>refuges</title><link rel="stylesheet" href="/static/css/app.css"></head>
<body><main><h1>Refuges</h1><p id="away"></p><ul id="list"></ul></main>
<script type="module">
import { api, loadLang, t } from "/static/js/common.js";
import { awayText, loadRefuges, renderRefuges } from "/static/js/refuges.js";
window.show = async (lang, me) => {
  await loadLang(lang);
  const data = await loadRefuges(api, me);
  renderRefuges(document.getElementById("list"), data, t);
  document.getElementById("away").textContent = awayText(data, t) || "";
  return data;
};
</script></body></html>"""


def test_her_list_renders_in_korean_and_english_with_call_links(
    server: Server,
    browser: Any,  # noqa: F811 - the fixture
) -> None:
    assert server.cli("import-refuges", str(SAMPLE)).returncode == 0
    r = server.cli(
        "admin", "create-user", "--username", "sup1", "--password", PASSWORD, "--role", "supervisor"
    )
    assert r.returncode == 0, r.stderr
    server.start()
    sup = server.login("sup1", PASSWORD)
    r = httpx.post(f"{server.api}/api/v1/people", json={"kind": "victim", "name": "V"}, headers=sup)
    person = str(r.json()["id"])
    r = server.cli(
        "admin",
        "create-user",
        "--username",
        "victim1",
        "--password",
        PASSWORD,
        "--role",
        "victim",
        "--person-id",
        person,
    )
    assert r.returncode == 0, r.stderr
    token = server.login("victim1", PASSWORD)["Authorization"][7:]

    context = browser.new_context(**PHONE)
    page = context.new_page()
    url = f"{server.api}/__refuges_test"
    page.route(url, lambda route: route.fulfill(status=200, content_type="text/html", body=PAGE))
    page.goto(url)
    page.evaluate("(tok) => sessionStorage.setItem('token', tok)", token)
    me = {"lat": HOME[0], "lon": HOME[1]}

    data = page.evaluate("(me) => window.show('ko', me)", me)
    items = page.locator("#list li.refuge")
    assert items.count() == 5 and data["away_deg"] is None  # nobody is shown to her
    first = data["refuges"][0]
    assert items.first.locator(".refuge-name").inner_text() == first["name"]["ko"]
    assert "m" in items.first.locator(".refuge-distance").inner_text()
    calls = page.locator("#list a.refuge-call")
    assert calls.count() >= 1 and calls.first.get_attribute("href") == "tel:112"
    kinds = set(page.locator("#list .refuge-kind").all_inner_texts())
    assert kinds and kinds <= {"지구대·파출소", "경찰서", "역", "병원", "24시간 편의점"}, kinds
    assert serious(page) == []
    page.screenshot(path=str(SHOTS / "refuges-ko.png"), full_page=True)

    page.evaluate("(me) => window.show('en', me)", me)
    assert items.first.locator(".refuge-name").inner_text() == first["name"]["en"]
    assert "Call 112" in page.locator("#list").inner_text()
    assert serious(page) == []
    page.screenshot(path=str(SHOTS / "refuges-en.png"), full_page=True)
    context.close()
