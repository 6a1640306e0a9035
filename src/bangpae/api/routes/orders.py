"""Routes of protective orders."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException

from bangpae.api.deps import Ctx, RequestId, audit_admin, require
from bangpae.api.schemas import Created, OrderCreate
from bangpae.domain.orders import OrderError, order_from
from bangpae.services.auth import Principal

router = APIRouter(prefix="/api/v1")
Admin = Annotated[Principal, Depends(require("admin", "supervisor"))]


@router.post("/orders", status_code=201, response_model=Created, tags=["admin"])
async def create_order(body: OrderCreate, ctx: Ctx, who: Admin, rid: RequestId) -> Created:
    """Enter a protective order."""
    try:
        order = order_from(body, ctx.clock.now())
    except OrderError as exc:
        raise HTTPException(422, str(exc)) from None
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
