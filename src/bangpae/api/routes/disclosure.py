"""Routes of the misuse guard's pause: operators keep or lift it, with a reason, audited.

The guard pauses an order's disclosure at once when her reports look like a hunt
(``docs/disclosure.md``); the control centre gets a ``disclosure_misuse`` incident
with the evidence. An operator or supervisor then keeps the pause or lifts it, and
may pause an order by hand. Each decision is a ``disclosure_decided`` event (so it
survives a restart and joins the incident's timeline) and an audit record.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path
from pydantic import BaseModel, Field

from bangpae.api.context import RouteContext
from bangpae.api.deps import Ctx, RequestId, audit_admin, require
from bangpae.api.schemas import MAX_ID, Strict
from bangpae.domain.disclosure import iso
from bangpae.domain.model import EventKind, make_event
from bangpae.services.auth import Principal

router = APIRouter(prefix="/api/v1", tags=["disclosure"])
Staff = Annotated[Principal, Depends(require("operator", "supervisor"))]
OrderId = Annotated[int, Path(ge=1, le=MAX_ID)]


class Decision(Strict):
    """Keep (``paused: true``) or lift (``false``) the pause, and why."""

    paused: bool
    reason: str = Field(min_length=10, max_length=500)


class DisclosureState(BaseModel):
    """Whether an order's disclosure is paused, and the guard's and operators' record."""

    order_id: int
    paused: bool
    history: list[dict[str, Any]]


def _history(ctx: RouteContext, order_id: int) -> list[dict[str, Any]]:
    return [
        {
            "kind": e.kind.value,
            "at": iso(e.at),
            **{k: e.data[k] for k in ("reason", "paused", "role") if k in e.data},
        }
        for e in ctx.store.disclosure_history(order_id)
    ]


def _state(ctx: RouteContext, order_id: int) -> DisclosureState:
    view = ctx.engine.order_view(order_id)
    if view is None:
        raise HTTPException(404, f"order {order_id} does not exist")
    return DisclosureState(
        order_id=order_id, paused=view.misuse_paused, history=_history(ctx, order_id)
    )


@router.get("/orders/{order_id}/disclosure")
async def disclosure_state(order_id: OrderId, ctx: Ctx, who: Staff) -> DisclosureState:
    """Whether the order's disclosure is paused, with the detections and decisions."""
    return await asyncio.to_thread(_state, ctx, order_id)


@router.post("/orders/{order_id}/disclosure")
async def decide_disclosure(
    order_id: OrderId, body: Decision, ctx: Ctx, who: Staff, rid: RequestId
) -> DisclosureState:
    """Keep, lift or set the pause of an order's disclosure; the reason is kept and audited."""
    if ctx.engine.order_view(order_id) is None:
        raise HTTPException(404, f"order {order_id} does not exist")
    now = ctx.clock.now()
    event = make_event(
        EventKind.DISCLOSURE_DECIDED,
        now,
        order_id,
        who.user_id,
        body.paused,
        order_id=order_id,
        data={"paused": body.paused, "reason": body.reason, "role": who.role},
    )

    def record() -> None:
        ctx.store.add_events([event])
        audit_admin(
            ctx,
            who,
            "disclosure_pause" if body.paused else "disclosure_resume",
            f"order:{order_id}",
            ["reason"],
            rid,
        )

    await asyncio.to_thread(record)
    ctx.engine.set_misuse_pause(order_id, body.paused)
    return await asyncio.to_thread(_state, ctx, order_id)
