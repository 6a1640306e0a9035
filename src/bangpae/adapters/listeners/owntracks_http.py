"""OwnTracks over HTTP: ``POST /owntracks``, stored before the reply ``[]``."""

from __future__ import annotations

import base64
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from bangpae.adapters.listeners.metrics import counter
from bangpae.domain.model import Fix
from bangpae.domain.retention import fix_time_refusal
from bangpae.protocols import owntracks
from bangpae.protocols.errors import FrameError
from bangpae.protocols.osmand import DecodedFix
from bangpae.services import devices

log = logging.getLogger(__name__)
# The device gate's refusals as the OwnTracks app is answered: status, metric reason, body.
REFUSALS = {
    devices.UNKNOWN: (403, devices.UNKNOWN, "unknown device"),
    devices.NO_KEY: (401, devices.NO_KEY, "this device has no password: register one"),
    devices.BAD_KEY: (401, devices.BAD_KEY, "wrong or missing device password"),
    devices.LIMITED: (429, "rate_limited", "too many failed identifications, slow down"),
}
IDENTIFICATION = frozenset(reason for _, reason, _ in REFUSALS.values())


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
    protocol: str,
    decoded: list[DecodedFix],
    password: str | None,
    now: float,
    source: str = "?",
) -> tuple[list[Fix], tuple[int, str, str] | None]:
    """Fixes for the devices the gate lets in over ``protocol``; else why not.

    ``owntracks`` (HTTP) checks the password from memory with the keyed hash
    (docs/robustness.md); ``owntracks_mqtt`` needs the device registered only (the
    broker authenticated the client). Only unknown identifiers and wrong passwords count
    against the source.
    """
    fixes = []
    for d in decoded:
        device = await ctx.device_gate.admit(protocol, d.identifier, password, source, now)
        if isinstance(device, devices.Refused):
            return [], REFUSALS[device.reason]
        late = fix_time_refusal(d.fix_time, now, device.registered_at, ctx.settings.retention_days)
        if late is not None:
            return [], (400, "fix_time", late)
        fixes.append(d.fix(device.device_id, now))
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
        source = request.client.host if request.client else "?"
        fixes, refusal = await resolve(ctx, "owntracks", decoded.fixes, password, now, source)
        if refusal is not None:
            status, reason, detail = refusal
            if reason in IDENTIFICATION:
                await ctx.device_gate.delay_refusal()
            return refuse(status, reason, detail)
        if fixes:
            await ctx.ingest.submit(fixes)
        return JSONResponse([])

    return router
