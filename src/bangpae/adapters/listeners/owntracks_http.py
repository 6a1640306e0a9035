"""OwnTracks over HTTP: ``POST /owntracks``, stored before the reply ``[]``."""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from bangpae.adapters.listeners.metrics import counter
from bangpae.domain.model import Fix
from bangpae.protocols import owntracks
from bangpae.protocols.errors import FrameError
from bangpae.protocols.osmand import DecodedFix
from bangpae.services.auth import verify_password

log = logging.getLogger(__name__)


def _basic(request: Request) -> tuple[str | None, str | None]:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None, None
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None, None
    return user, password


async def resolve(
    ctx: Any,
    decoded: list[DecodedFix],
    password: str | None,
    now: float,
    check_password: bool = True,
) -> tuple[list[Fix], tuple[int, str, str] | None]:
    """Fixes for known devices whose password (if they have one) matches; else why not."""
    fixes = []
    for d in decoded:
        device = await asyncio.to_thread(ctx.store.get_device, d.identifier)
        if device is None or device.identifier != d.identifier:
            return [], (403, "unknown_device", f"unknown device {d.identifier!r}")
        secret = await asyncio.to_thread(ctx.store.device_secret_hash, device.id)
        if check_password and secret is None and not ctx.settings.allow_keyless_devices:
            return [], (401, "no_key", "this device has no password: register one")
        if (
            check_password
            and secret is not None
            and not (password and await asyncio.to_thread(verify_password, secret, password))
        ):
            return [], (401, "bad_key", "wrong or missing device password")
        fixes.append(
            Fix(
                device.id,
                d.fix_time,
                d.lat,
                d.lon,
                d.accuracy_m,
                d.speed_mps,
                d.heading_deg,
                d.battery_pct,
                True,
                frozenset(),
                now,
            )
        )
    return fixes, None


def owntracks_router(ctx: Any) -> APIRouter:
    """The OwnTracks endpoint bound to an application context."""
    router = APIRouter()
    rejected = counter(ctx, "bangpae_owntracks_rejected", "OwnTracks messages refused", ["reason"])

    def refuse(status: int, reason: str, detail: str) -> Response:
        rejected.labels(reason).inc()
        return PlainTextResponse(detail + "\n", status_code=status)

    @router.post("/owntracks", include_in_schema=False)
    async def post(request: Request) -> Response:
        now = ctx.clock.now()
        body = await request.body()
        if len(body) > 256_000:
            return refuse(413, "too_large", "body too large")
        user, password = _basic(request)
        identity = owntracks.identity_from_headers(
            request.headers.get("x-limit-u") or user, request.headers.get("x-limit-d")
        )
        try:
            decoded = owntracks.decode(body, identity, now)
        except FrameError as exc:
            log.info("owntracks: refused a malformed message: %s", exc.reason)
            return refuse(400, "malformed", f"malformed: {exc.reason}")
        if decoded.ignored:
            log.info("owntracks: ignored message types %s (no position)", decoded.ignored)
        fixes, refusal = await resolve(ctx, decoded.fixes, password, now)
        if refusal is not None:
            status, reason, detail = refusal
            return refuse(status, reason, detail)
        if fixes:
            await ctx.ingest.submit(fixes)
        return JSONResponse([])

    return router
