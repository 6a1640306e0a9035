"""The apps' map in a real browser on a real ``bangpae serve``: no third party, no network.

The map is the one the apps draw (``MapView`` of static/js/map.js) on the victim
app's own page, under its service worker. Every request the browser makes is
recorded: none may leave for a host other than the bangpae server. See docs/maps.md.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.integration.test_basemap_routes import tiny_archive

from .conftest import Server, free_port
from .test_apps import PHONE, browser, serious, shot  # noqa: F401 - browser is a fixture

pw = pytest.importorskip("playwright.sync_api")

# A district's label to look for in the default view (Seoul City Hall, zoom 15).
DISTRICT = {"ko": "종로구", "en": "Jongno-gu"}
CREDIT = {"ko": "국토지리정보원", "en": "NGII"}  # the boundaries' licence asks for it
MAP = """async ([tileUrl]) => {
  const { MapView } = await import("/static/js/map.js");
  document.querySelector("#test-map")?.remove();
  const el = document.createElement("div");
  el.id = "test-map";
  el.className = "map";
  el.setAttribute("role", "region");
  el.setAttribute("aria-label", "map");
  document.body.prepend(el);
  window.testMap = new MapView(el, tileUrl, "");
  await window.testMap.ready;
  return el.dataset.basemap;
}"""


def _serve(root: Path, archive: bool) -> Iterator[Server]:
    srv = Server(root / "data", free_port(), free_port())
    srv.data_dir.mkdir(mode=0o700)
    if archive:  # private like everything in the data dir (bangpae serve checks)
        tiny_archive(srv.data_dir / "maps" / "streets.pmtiles").chmod(0o600)
        (srv.data_dir / "maps").chmod(0o700)
    srv.start()
    yield srv
    srv.kill(signal.SIGTERM)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _serve(tmp_path_factory.mktemp("plain"), archive=False)


@pytest.fixture(scope="module")
def with_streets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _serve(tmp_path_factory.mktemp("streets"), archive=True)


class Requests:
    """Every request of a browser context (pages and service worker), by URL."""

    def __init__(self, ctx: Any) -> None:
        self.seen: list[Any] = []
        ctx.on("request", lambda r: self.seen.append(r))

    def hosts(self) -> set[str]:
        return {urlsplit(r.url).netloc for r in self.seen if not r.url.startswith("data:")}


def _open(browser: Any, srv: Server, lang: str) -> tuple[Any, Any, Requests]:  # noqa: F811
    ctx = browser.new_context(**PHONE, locale="ko-KR" if lang == "ko" else "en-GB")
    requests = Requests(ctx)
    page = ctx.new_page()
    page.goto(f"{srv.api}/app/?lang={lang}")
    page.evaluate("(lang) => localStorage.setItem('lang', lang)", lang)
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    page.evaluate("navigator.serviceWorker.ready.then(() => true)")
    return ctx, page, requests


def _expect_boundaries(page: Any, lang: str) -> None:
    assert page.evaluate(MAP, [""]) == "boundaries"
    pane = page.locator("#test-map .leaflet-basemap-pane canvas")
    pw.expect(pane).to_have_count(1)
    # the canvas is painted: land and sea differ under the district borders
    painted = page.evaluate(
        """() => {
          const c = document.querySelector('#test-map .leaflet-basemap-pane canvas');
          const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          let ink = 0;
          for (let i = 3; i < d.length; i += 4) if (d[i] > 0) ink++;
          return ink / (d.length / 4);
        }"""
    )
    assert painted > 0.5
    label = page.locator("#test-map .place", has_text=DISTRICT[lang])
    pw.expect(label).to_be_visible()
    pw.expect(page.locator("#test-map .leaflet-control-attribution")).to_contain_text(CREDIT[lang])
    pw.expect(page.locator("#test-map .leaflet-control-scale-line")).to_have_text(
        re.compile(r"^\d+ (m|km)$")
    )


@pytest.mark.parametrize("lang", ["ko", "en"])
def test_the_map_draws_korea_offline_and_asks_no_other_host(
    plain: Server,
    browser: Any,  # noqa: F811
    lang: str,
) -> None:
    ctx, page, requests = _open(browser, plain, lang)
    _expect_boundaries(page, lang)
    assert serious(page) == []
    shot(page, f"map-boundaries-{lang}")
    # no network at all: the page, the map code and the base map come from the worker
    ctx.set_offline(True)
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    _expect_boundaries(page, lang)
    shot(page, f"map-boundaries-offline-{lang}")
    assert requests.hosts() == {f"127.0.0.1:{plain.http_port}"}
    assert any(urlsplit(r.url).path == "/basemap/korea.json" for r in requests.seen)
    ctx.close()


def test_place_names_follow_the_page_language_and_never_overlap(
    plain: Server,
    browser: Any,  # noqa: F811
) -> None:
    ctx, page, _ = _open(browser, plain, "ko")
    page.evaluate(MAP, [""])
    pw.expect(page.locator("#test-map .place", has_text="종로구")).to_be_visible()
    page.click("#lang")  # the app's own switch to English
    pw.expect(page.locator("#test-map .place", has_text="Jongno-gu")).to_be_visible()
    for zoom in (7, 9, 11, 13, 15):
        page.evaluate(
            f"void window.testMap.map.setView([37.5665, 126.978], {zoom}, {{animate: false}})"
        )
        boxes = page.evaluate(
            "[...document.querySelectorAll('#test-map .place')].map(e => {"
            " const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; })"
        )
        assert boxes, zoom
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), zoom
    ctx.close()


PINS = """([zoom]) => {
  const m = window.testMap;
  // him and her 20 m apart (north-south), the target 20 m east of her
  m.draw([
    { kind: "him", lat: 37.56668, lon: 126.978, accuracy_m: 5, heading_deg: 90, label: "그 사람" },
    { kind: "me", lat: 37.5665, lon: 126.978, accuracy_m: 5, label: "나" },
    { kind: "target", lat: 37.5665, lon: 126.97823, label: "대상자 위치" },
  ]);
  if (zoom) m.map.setView([37.56659, 126.97811], zoom, { animate: false });
}"""
BOXES = """(selector) => [...document.querySelectorAll(selector)].map((e) => {
  const r = e.getBoundingClientRect();
  return [e.textContent, r.left, r.top, r.right, r.bottom];
})"""


@pytest.mark.parametrize("zoom", [None, 15, 16])
def test_pin_labels_of_pins_20_m_apart_do_not_overlap(
    plain: Server,
    browser: Any,  # noqa: F811
    zoom: int | None,
) -> None:
    ctx, page, _ = _open(browser, plain, "ko")
    page.evaluate(MAP, [""])
    page.evaluate(PINS, [zoom])
    boxes = page.evaluate(BOXES, "#test-map .leaflet-tooltip")
    assert sorted(b[0] for b in boxes) == sorted(["그 사람", "나", "대상자 위치"])
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not (a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]), (a, b)
    # the district's name is still shown, clear of the pins' labels
    places = page.evaluate(BOXES, "#test-map .place")
    assert "중구" in [p[0] for p in places]
    for a in places:
        for b in boxes:
            assert not (a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]), (a, b)
    if zoom is None:
        shot(page, "map-pins-20m")
    ctx.close()


def test_street_maps_are_read_by_ranges_from_bangpae_only(
    with_streets: Server,
    browser: Any,  # noqa: F811
) -> None:
    ctx, page, requests = _open(browser, with_streets, "ko")
    assert page.evaluate(MAP, [""]) == "streets"
    tiles = page.locator("#test-map .leaflet-tile-pane canvas")
    pw.expect(tiles.first).to_be_attached(timeout=10000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#test-map .leaflet-tile-pane canvas')]"
        ".some((c) => c.classList.contains('leaflet-tile-loaded'))",
        timeout=10000,
    )
    archive = [r for r in requests.seen if urlsplit(r.url).path == "/basemap/streets.pmtiles"]
    assert archive, "the archive was never read"
    for r in archive:
        assert r.headers.get("range", "").startswith("bytes="), r.headers
        response = r.response()
        assert response is not None and response.status == 206
    assert requests.hosts() == {f"127.0.0.1:{with_streets.http_port}"}
    assert serious(page) == []
    shot(page, "map-streets")
    ctx.close()


def test_a_configured_tile_server_is_drawn_over_the_offline_map(
    plain: Server,
    browser: Any,  # noqa: F811
) -> None:
    ctx, page, requests = _open(browser, plain, "en")
    # a loopback "tile server": bangpae's own icon stands in for every tile
    url = f"{plain.api}/static/icons/shield.svg?z={{z}}&x={{x}}&y={{y}}"
    assert page.evaluate(MAP, [url]) == "boundaries"
    tiles = page.locator("#test-map .leaflet-tile-pane img.leaflet-tile-loaded")
    pw.expect(tiles.first).to_be_attached()
    assert "z=15" in (tiles.first.get_attribute("src") or "")
    # the tiles' pane lies over the base map's
    order = page.evaluate(
        "['.leaflet-basemap-pane', '.leaflet-tile-pane'].map((s) =>"
        " Number(getComputedStyle(document.querySelector('#test-map ' + s)).zIndex))"
    )
    assert order[0] < order[1]
    assert requests.hosts() == {f"127.0.0.1:{plain.http_port}"}
    ctx.close()


def test_a_redraw_keeps_the_readers_zoom_until_someone_leaves_the_view(
    plain: Server,
    browser: Any,  # noqa: F811
) -> None:
    """The field list redraws every 5 s: the officer's zoom must not be undone by it."""
    ctx, page, _ = _open(browser, plain, "ko")
    page.evaluate(MAP, [""])
    draw = """([dlat, zoom]) => {
      const items = [
        {kind: "target", lat: 37.5665, lon: 126.978, label: "t"},
        {kind: "me", lat: 37.5665 + dlat, lon: 126.978, label: "me"},
      ];
      window.testMap.draw(items);
      if (zoom !== null) window.testMap.map.setZoom(zoom, {animate: false});
      return window.testMap.map.getZoom();
    }"""
    fitted = page.evaluate(draw, [0.002, None])
    assert page.evaluate(draw, [0.002, fitted - 2]) == fitted - 2  # the reader zooms out
    assert page.evaluate(draw, [0.0021, None]) == fitted - 2  # a poll: the same people, in view
    # someone far outside the view: the map fits everyone again
    assert page.evaluate(draw, [0.05, None]) < fitted - 2
    ctx.close()
