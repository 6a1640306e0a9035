"""Routes of fixes sent by a device in bangpae's own format, with its key."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request

from bangpae.api.context import RouteContext
from bangpae.api.deps import Ctx
from bangpae.api.schemas import FixBatch
from bangpae.domain.model import Fix
from bangpae.domain.retention import fix_time_refusal
from bangpae.services import devices

router = APIRouter(prefix="/api/v1")


def _epoch(dt: datetime | None) -> float | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        raise HTTPException(422, "times need a zone, e.g. 2026-11-23T09:00:00+09:00")
    return dt.timestamp()


async def _device_auth(ctx: RouteContext, request: Request) -> Any:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        raise HTTPException(401, "device credentials (HTTP Basic identifier:key) are required")
    try:
        ident, _, key = base64.b64decode(header[6:]).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(401, "malformed Basic credentials") from None
    source = request.client.host if request.client else "?"
    now = ctx.clock.now()
    found = await ctx.device_gate.admit("api", ident, key, source, now)
    if isinstance(found, devices.Refused):
        await ctx.device_gate.delay_refusal()
        if found.reason == devices.LIMITED:
            raise HTTPException(429, "too many failed identifications, slow down")
        raise HTTPException(401, "unknown device or wrong key")
    return found


@router.post("/fixes", status_code=202, tags=["devices"])
async def post_fixes(body: FixBatch, request: Request, ctx: Ctx) -> dict[str, Any]:
    """Accept a batch of native fixes from an authenticated device (stored before the reply)."""
    device = await _device_auth(ctx, request)
    now = ctx.clock.now()
    fixes = []
    for f in body.fixes:
        if f.device not in (None, device.identifier):
            raise HTTPException(403, "a device may only send its own fixes")
        t = _epoch(f.fix_time)
        assert t is not None
        late = fix_time_refusal(t, now, device.registered_at, ctx.settings.retention_days)
        if late is not None:
            raise HTTPException(422, late)
        fixes.append(
            Fix(
                device_id=device.device_id,
                fix_time=t,
                lat=f.lat,
                lon=f.lon,
                accuracy_m=f.accuracy_m,
                speed_mps=f.speed_mps,
                heading_deg=f.heading_deg,
                battery_pct=f.battery_pct,
                valid=f.valid,
                alarms=frozenset(f.alarms),
                received_at=now,
            )
        )
    ids = await ctx.ingest.submit(fixes)
    return {"accepted": len(ids)}
