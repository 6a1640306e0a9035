"""Routes of protective orders."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException

from bangpae.api.deps import Ctx, RequestId, audit_admin, require
from bangpae.api.schemas import Created, OrderCreate, ZoneIn
from bangpae.domain.model import Order, WeeklyWindow, Zone
from bangpae.domain.zones import compile_zone
from bangpae.services.auth import Principal

router = APIRouter(prefix="/api/v1")
Admin = Annotated[Principal, Depends(require("admin", "supervisor"))]


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def _zone(i: int, z: ZoneIn) -> Zone:
    gtype = z.geometry.get("type")
    radius = z.properties.get("radius_m")
    if gtype == "Point" and not (isinstance(radius, int | float) and 0 < radius <= 50000):
        raise HTTPException(422, "a Point zone needs properties.radius_m between 0 and 50,000 m")
    if gtype not in ("Point", "Polygon"):
        raise HTTPException(422, "a zone is a GeoJSON Polygon, or a Point with radius_m")
    zone = Zone(
        id=str(z.properties.get("id", i)),
        name=str(z.properties.get("name", "")),
        geometry=z.geometry,
        radius_m=float(radius) if radius else None,
        schedule=tuple(WeeklyWindow(w.day, _minutes(w.start), _minutes(w.end)) for w in z.schedule),
    )
    try:
        compile_zone(zone)
    except (ValueError, TypeError, IndexError) as exc:
        raise HTTPException(422, f"zone {i}: {exc}") from None
    return zone


def _epoch(dt: datetime | None) -> float | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        raise HTTPException(422, "times need a zone, e.g. 2026-11-23T09:00:00+09:00")
    return dt.timestamp()


@router.post("/orders", status_code=201, response_model=Created, tags=["admin"])
async def create_order(body: OrderCreate, ctx: Ctx, who: Admin, rid: RequestId) -> Created:
    """Enter a protective order."""
    if not body.keep_away_m < body.reveal_radius_m < body.notify_radius_m:
        raise HTTPException(
            422, "radii must satisfy keep_away_m < reveal_radius_m < notify_radius_m"
        )
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(body.timezone)
    except (KeyError, ValueError, OSError):  # "Asia" is a directory of the zone database
        raise HTTPException(422, f"unknown time zone {body.timezone!r}") from None
    valid_from = _epoch(body.valid_from) or ctx.clock.now()
    valid_until = _epoch(body.valid_until)
    if valid_until is not None and valid_until <= valid_from:
        raise HTTPException(422, "valid_until must come after valid_from")
    order = Order(
        id=0,
        offender_id=body.offender_id,
        victim_id=body.victim_id,
        notify_radius_m=body.notify_radius_m,
        reveal_radius_m=body.reveal_radius_m,
        keep_away_m=body.keep_away_m,
        hysteresis_m=body.hysteresis_m,
        zones=tuple(_zone(i, z) for i, z in enumerate(body.zones)),
        curfews=tuple(_zone(i, z) for i, z in enumerate(body.curfews)),
        stale_after_s=body.stale_after_s,
        valid_from=valid_from,
        valid_until=valid_until,
        profile=body.profile,
        timezone=body.timezone,
    )
    oid = ctx.store.add_order(order, at=ctx.clock.now())
    audit_admin(
        ctx,
        who,
        "create_order",
        f"order:{oid}",
        ["offender_id", "victim_id", "radii", "zones", "curfews"],
        rid,
    )
    await ctx.ingest.reload_registry()
    return Created(id=oid)
