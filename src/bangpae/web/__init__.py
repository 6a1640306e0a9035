"""The installable apps: the protected person's at ``/app/``, the field officer's at
``/field/``, and the neutral page ``/today`` a quick exit lands on.

Pages are server-rendered from templates in Korean (``?lang=en`` for English), with
small ES modules that speak to the API; Leaflet comes from the ``xstatic-leaflet``
package. No inline script or style, so the content security policy needs no
``unsafe-inline``.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import xstatic.pkg.leaflet as leaflet
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

HERE = Path(__file__).parent
STATIC = HERE / "static"
LANGS = ("ko", "en")
APPS = {"app": "victim", "field": "field"}
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
    return router


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
