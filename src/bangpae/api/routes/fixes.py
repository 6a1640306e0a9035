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
from bangpae.domain.retention import MAX_FUTURE_S, fix_time_refusal
from bangpae.services import devicekeys

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
    found = await ctx.device_keys.authenticate(ident, key, source, now)
    if not isinstance(found, str) and found.secret is None:  # API devices always need a key
        found = ctx.device_keys.refuse(source, now, devicekeys.NO_KEY)
    if isinstance(found, str):
        await ctx.device_keys.delay_refusal()
        if found == devicekeys.LIMITED:
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
        if t > now + MAX_FUTURE_S:
            raise HTTPException(422, "fix_time is more than 5 minutes in the future")
        late = fix_time_refusal(t, now, device.registered_at, ctx.settings.retention_days)
        if late is not None:
            raise HTTPException(422, late)
        fixes.append(
            Fix(
                device.device_id,
                t,
                f.lat,
                f.lon,
                f.accuracy_m,
                f.speed_mps,
                f.heading_deg,
                f.battery_pct,
                f.valid,
                frozenset(f.alarms),
                now,
            )
        )
    ids = await ctx.ingest.submit(fixes)
    return {"accepted": len(ids)}
