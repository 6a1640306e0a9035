"""Routes of notices: Web Push subscriptions, and the record of what was told to whom.

Notices carry no position and no distance, so reading them is not a position read;
still, a victim reads only her own, and staff read them for the control centre.
The offender has no route here: he is never told anything by notices.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from pydantic import BaseModel, Field

from bangpae.adapters.webpush import endpoint_allowed
from bangpae.api.deps import Ctx, require
from bangpae.api.schemas import MAX_ID, Strict
from bangpae.services.auth import Principal

router = APIRouter(prefix="/api/v1", tags=["notices"])
# Who is sent notices and so may subscribe a browser: the victim, and the control centre.
Subscriber = Annotated[Principal, Depends(require("victim", "operator", "supervisor"))]
Victim = Annotated[Principal, Depends(require("victim"))]
Staff = Annotated[Principal, Depends(require("operator", "supervisor", "auditor"))]

B64URL = r"^[A-Za-z0-9_-]+={0,2}$"


class PushKeys(Strict):
    """The browser's keys for encrypting pushes to it (RFC 8291)."""

    p256dh: str = Field(min_length=80, max_length=200, pattern=B64URL)
    auth: str = Field(min_length=16, max_length=64, pattern=B64URL)


class PushSubscription(Strict):
    """``PushSubscription.toJSON()`` of the browser, and the language to write in."""

    endpoint: str = Field(min_length=10, max_length=1000)
    keys: PushKeys
    expirationTime: float | None = None  # noqa: N815 (the browser's own name)
    lang: Literal["ko", "en"] = "ko"


class PushKey(BaseModel):
    """The VAPID public key (``applicationServerKey``) browsers subscribe with."""

    public_key: str


class Subscribed(BaseModel):
    """A kept subscription."""

    id: int


class NoticeOut(BaseModel):
    """A notice as kept: what was said, to whom, when, and how each channel fared."""

    id: int
    at: float
    order_id: int | None
    audience: str
    person_id: int | None
    role: str | None
    kind: str
    priority: str
    text: dict[str, str]
    delivery: dict[str, str]


@router.get("/push/key", response_model=PushKey)
async def push_key(ctx: Ctx) -> PushKey:
    """The public half of the server's VAPID key pair."""
    return PushKey(public_key=ctx.push_key)


@router.post("/push/subscriptions", response_model=Subscribed, status_code=201)
async def subscribe(body: PushSubscription, who: Subscriber, ctx: Ctx) -> Subscribed:
    """Keep this browser's push subscription for the caller."""
    if not endpoint_allowed(body.endpoint, ctx.settings.push_hosts()):
        raise HTTPException(422, "the endpoint is not on an allowed push service")
    sid = await asyncio.to_thread(
        ctx.store.add_push_subscription,
        who.user_id,
        body.endpoint,
        body.keys.p256dh,
        body.keys.auth,
        body.lang,
        ctx.clock.now(),
    )
    return Subscribed(id=sid)


@router.delete("/push/subscriptions", status_code=204)
async def unsubscribe(
    who: Subscriber, ctx: Ctx, endpoint: Annotated[str, Query(max_length=1000)]
) -> Response:
    """Forget one of the caller's own subscriptions (404 if it is not theirs)."""
    if not await asyncio.to_thread(ctx.store.remove_push_subscription, endpoint, who.user_id):
        raise HTTPException(404, "no such subscription of yours")
    return Response(status_code=204)


def _out(records: list[Any]) -> list[NoticeOut]:
    return [NoticeOut(**r.as_dict()) for r in records]


@router.get("/victim/notices", response_model=list[NoticeOut])
async def my_notices(
    who: Victim, ctx: Ctx, after_id: Annotated[int, Query(ge=0, le=MAX_ID)] = 0
) -> list[NoticeOut]:
    """What the protected person was told, oldest first."""
    if who.person_id is None:
        return []
    records = await asyncio.to_thread(
        ctx.store.notices, person_id=who.person_id, audience="victim", after_id=after_id
    )
    return _out(records)


@router.get("/notices", response_model=list[NoticeOut])
async def all_notices(
    who: Staff,
    ctx: Ctx,
    order_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    audience: Annotated[Literal["victim", "staff"] | None, Query()] = None,
    after_id: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[NoticeOut]:
    """What victims and staff were told, and how each channel fared, oldest first."""
    records = await asyncio.to_thread(
        ctx.store.notices, order_id=order_id, audience=audience, after_id=after_id, limit=limit
    )
    return _out(records)
