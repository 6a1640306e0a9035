"""The installable apps: the protected person's at ``/app/``, the field officer's at
``/field/``, and the neutral page ``/today`` a quick exit lands on.

Pages are server-rendered from templates in Korean (``?lang=en`` for English), with
small ES modules that speak to the API; Leaflet comes from the ``xstatic-leaflet``
package. No inline script or style, so the content security policy needs no
``unsafe-inline``.

The map needs no third party: the offline base map (``/basemap/korea.json``,
bangpae.web.basemap) and, when an archive is there, street maps read by byte ranges
(``/basemap/streets.pmtiles``, bangpae.web.streets) come from bangpae itself; an
external tile server is drawn only when ``tile_url`` is set. See docs/maps.md.
"""

from __future__ import annotations

import json
import logging
from functools import cache
from pathlib import Path
from typing import Any

import xstatic.pkg.leaflet as leaflet
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from bangpae.web import basemap, streets

HERE = Path(__file__).parent
STATIC = HERE / "static"
LANGS = ("ko", "en")
APPS = {"app": "victim", "field": "field"}
BASEMAP_CACHE = "public, max-age=86400"  # the same file for everyone; revalidated by ETag
log = logging.getLogger(__name__)
# Neutral names and icons the victim app may be installed under (``/app/?look=notes``),
# so that a home screen does not say what it is: look -> icon under static/icons/.
LOOKS = {"notes": "notes.svg", "weather": "weather.svg"}


@cache
def catalog(lang: str) -> dict[str, str]:
    """The messages of one language."""
    data: dict[str, str] = json.loads((STATIC / "locales" / f"{lang}.json").read_text("utf-8"))
    return data


def content_security_policy(tile_origin: str) -> str:
    """Our pages load only our own scripts and styles; tiles from the configured server."""
    img = f"'self' data: {tile_origin}".strip()
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        f"img-src {img}; connect-src 'self'; worker-src 'self'; manifest-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def _lang(request: Request) -> str:
    wanted = request.query_params.get("lang", "ko")
    return wanted if wanted in LANGS else "ko"


def _look(request: Request) -> str | None:
    wanted = request.query_params.get("look")
    return wanted if wanted in LOOKS else None


def web_router(settings: Any) -> APIRouter:
    """The pages, manifests and service workers of both apps."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    router = APIRouter(include_in_schema=False)

    def page(request: Request, name: str) -> HTMLResponse:
        lang = _lang(request)
        messages = catalog(lang)
        look = _look(request) if name == "victim.html" else None
        return templates.TemplateResponse(
            request,
            name,
            {
                "lang": lang,
                "t": lambda key: messages.get(key, key),
                "tile_url": settings.tile_url,
                "control_room_phone": settings.control_room_phone,
                "look": look,
                "icon": LOOKS[look] if look else "shield.svg",
            },
        )

    @router.get("/app/", response_class=HTMLResponse)
    async def victim_app(request: Request) -> HTMLResponse:
        return page(request, "victim.html")

    @router.get("/field/", response_class=HTMLResponse)
    async def field_app(request: Request) -> HTMLResponse:
        return page(request, "field.html")

    @router.get("/today", response_class=HTMLResponse)
    async def neutral(request: Request) -> HTMLResponse:
        return page(request, "today.html")

    for prefix, kind in APPS.items():
        _app_files(router, prefix, kind)
    _basemap_routes(router, settings)
    return router


def _street_archive(settings: Any) -> streets.Archive | None:
    """The configured archive checked; a configured path that fails refuses to start."""
    path = settings.resolved_pmtiles_path()
    try:
        archive = streets.open_archive(path)
    except streets.ArchiveError:
        if settings.pmtiles_path is not None:
            raise
        log.warning("street maps: %s is not a PMTiles archive of vector tiles; not served", path)
        return None
    if archive is None and settings.pmtiles_path is not None:
        raise streets.ArchiveError(f"pmtiles_path: no file at {path}")
    return archive


def _basemap_routes(router: APIRouter, settings: Any) -> None:
    """The offline base map, the street map archive, and what the page should draw.

    The archive is looked for when bangpae starts; one replaced while it runs is served
    anew (a new entity tag), one removed is no longer described.
    """
    archive = _street_archive(settings)
    served = archive is not None  # the route exists only when an archive was there at start

    def current() -> streets.Archive | None:
        # The operator may replace the archive while bangpae runs: a new entity tag
        # makes a reader that had the old one start again (If-Match answers 412).
        nonlocal archive
        if not served:
            return None
        path = settings.resolved_pmtiles_path()
        try:
            stamp = streets.stamp(path.stat())
        except FileNotFoundError:
            archive = None
            return None
        if archive is None or archive.stamp != stamp:
            try:
                archive = streets.open_archive(path)
            except streets.ArchiveError:
                log.warning("street maps: %s is not a PMTiles archive of vector tiles", path)
                archive = None
        return archive

    @router.get("/basemap/index.json")
    def basemap_index() -> JSONResponse:
        found = current()
        return JSONResponse(
            {
                "boundaries": "/basemap/korea.json",
                "streets": found.describe() if found else None,
            }
        )

    @router.get("/basemap/korea.json")
    def basemap_boundaries(request: Request) -> Response:
        data = basemap.payload()
        headers = {"ETag": data.etag, "Cache-Control": BASEMAP_CACHE, "Vary": "Accept-Encoding"}
        if data.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return Response(data.gzip, headers=headers, media_type="application/json")
        return Response(data.plain(), headers=headers, media_type="application/json")

    if not served:
        return

    @router.api_route("/basemap/streets.pmtiles", methods=["GET", "HEAD"])
    def street_tiles(request: Request) -> Response:
        found = current()
        if found is None:
            return Response("the street map archive is gone", 404, media_type="text/plain")
        return streets.serve(found, request)


def _app_files(router: APIRouter, prefix: str, kind: str) -> None:
    @router.get(f"/{prefix}/manifest.webmanifest")
    async def manifest(request: Request) -> JSONResponse:
        messages = catalog(_lang(request))
        look = _look(request) if kind == "victim" else None
        name = messages[f"look_{look}_name" if look else f"manifest_{kind}_name"]
        icon = LOOKS[look] if look else "shield.svg"
        body = {
            "name": name,
            "short_name": name,
            "lang": _lang(request),
            "start_url": f"/{prefix}/" + (f"?look={look}" if look else ""),
            "scope": f"/{prefix}/",
            "display": "standalone",
            "orientation": "portrait",
            "background_color": "#f7f8fa",
            "theme_color": "#12263a",
            "icons": [
                {"src": f"/static/icons/{icon}", "sizes": "any", "type": "image/svg+xml"},
            ],
        }
        return JSONResponse(body, media_type="application/manifest+json")

    @router.get(f"/{prefix}/sw.js")
    async def worker() -> FileResponse:
        return FileResponse(STATIC / "sw.js", media_type="text/javascript")


def mount_web(app: FastAPI, settings: Any) -> None:
    """Pages and static files on an application."""
    app.include_router(web_router(settings))
    app.mount("/static/leaflet", StaticFiles(directory=leaflet.BASE_DIR), name="leaflet")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
