"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from bangpae import __version__
from bangpae.api import problems
from bangpae.api.context import RouteContext
from bangpae.api.routes import (
    access,
    audit,
    auth,
    devices,
    disclosure,
    evidence,
    fixes,
    incident_response,
    incidents,
    notices,
    ops,
    orders,
    people,
    phone_apps,
    pins,
    refuges,
    streams,
)
from bangpae.api.routes.evidence import body_limit
from bangpae.web import content_security_policy, mount_web
from bangpae.web.docs import mount_docs

MAX_BODY = 1_000_000


class _Hardening(BaseHTTPMiddleware):
    def __init__(self, app: ASGIApp, csp: str) -> None:
        super().__init__(app)
        self.csp = csp

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        length = request.headers.get("content-length")
        limit = body_limit(request.url.path, MAX_BODY)  # a recording may be larger
        if length and length.isdigit() and int(length) > limit:
            return problems.problem(413, f"request bodies are limited to {limit} bytes")
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("Content-Security-Policy", self.csp)
        if request.url.scheme == "https":
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response


def create_app(ctx: RouteContext) -> FastAPI:
    """The API and its documents, bound to an application context."""
    app = FastAPI(
        title="bangpae",
        version=__version__,
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # served from the package under our policy (bangpae.web.docs)
        swagger_ui_oauth2_redirect_url=None,
        redoc_url=None,
        max_body_size=MAX_BODY,  # counted as it arrives: a chunked body has no length to check
        responses=problems.RESPONSES,  # every client error is problem+json
    )
    app.state.ctx = ctx
    problems.install(app)
    app.add_middleware(_Hardening, csp=content_security_policy(ctx.settings.tile_origin()))
    for routes in (
        ops,
        auth,
        incident_response,  # before incidents: /incidents/{id}/{action} would catch these
        people,
        devices,
        orders,
        fixes,
        incidents,
        audit,
        streams,
        phone_apps,
        pins,
        notices,
        disclosure,
        access,
        refuges,
        evidence,
    ):
        app.include_router(routes.router)
    if ctx.settings.api_docs:
        mount_docs(app)
    mount_web(app, ctx.settings)
    return app
