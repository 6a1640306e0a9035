"""Routes of notices: Web Push subscriptions, and the record of what was told to whom.

Notices carry no position and no distance, so reading them is not a position read;
still, a victim reads only her own, and staff read them for the control centre.
The offender has no route here: he is never told anything by notices.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

import phonenumbers
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response
from pydantic import BaseModel, Field, field_validator

from bangpae.adapters.store import Store
from bangpae.adapters.webpush import endpoint_allowed
from bangpae.api.context import RouteContext
from bangpae.api.deps import Ctx, RequestId, require
from bangpae.api.routes.pins import answer_floor, her_pin
from bangpae.api.schemas import MAX_ID, Strict
from bangpae.domain.audit import AuditEntry
from bangpae.domain.errors import Invalid, NotFound
from bangpae.domain.notices import SHOWN, SMS_TIERS, sms_prefs
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
    # the texts that carried it: state (queued, submitted, delivered, failed, expired,
    # undeliverable), parts, attempts and times; never the number nor the words
    sms: list[dict[str, Any]] = []


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


# -- her contact: the phone number texts go to, and her choices (docs/sms.md) ------------

ContactStaff = Annotated[Principal, Depends(require("supervisor", "admin"))]
SmsTier = Literal["notify", "reveal", "breach", "uncertain"]
# Why staff read a protected person's phone number (the read is audited with it).
ContactPurpose = Literal["administration", "victim_safety", "incident_response"]


def e164(phone: str) -> str:
    """A phone number as E.164 (``+821012345678``); a national number is read as Korean."""
    try:
        parsed = phonenumbers.parse(phone, "KR")
    except phonenumbers.NumberParseException:
        raise ValueError("not a phone number: give +821012345678 or 010-1234-5678") from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError("not a valid phone number: give +821012345678 or 010-1234-5678")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


class SmsChoice(Strict):
    """Whether she is texted, and for which tiers (his device going silent and bangpae
    failing are texted whenever texts are on)."""

    enabled: bool
    tiers: list[SmsTier] = Field(max_length=4)


class ContactIn(Strict):
    """Her phone number (None: none) and her choices of texts."""

    phone: str | None = Field(None, min_length=3, max_length=32)
    sms: SmsChoice
    lang: Literal["ko", "en"] = "ko"

    @field_validator("phone")
    @classmethod
    def _e164(cls, v: str | None) -> str | None:
        return None if v is None or not v.strip() else e164(v)


class VictimContactIn(ContactIn):
    """Her own contact, with her app PIN once she has one (docs/sms.md)."""

    pin: str | None = Field(None, max_length=8)


class ContactOut(BaseModel):
    """Her contact as kept: the number in E.164, the choices of texts, the language."""

    phone: str | None
    sms: SmsChoice
    lang: Literal["ko", "en"]


def _profile(store: Store, person_id: int, now: float) -> str:
    """The profile of her active order (her texts' defaults follow it); kr without one."""
    mine = [o for o in store.orders_for_person(person_id) if o.victim_id == person_id]
    active = [o for o in mine if o.active(now)] or mine
    return active[0].profile if active else "kr"


def _contact(store: Store, person_id: int, now: float, hers: bool = False) -> ContactOut:
    """Her contact as kept; ``hers``: as her own phone is shown it (after a change made
    with her duress PIN, the change she seemed to make; docs/sms.md)."""
    c = store.contact(person_id)
    if c is None:
        raise HTTPException(404, f"person {person_id} not found")
    if c.kind != "victim":
        # the offender is never told anything: he has no contact for notices
        raise HTTPException(404, f"person {person_id} is not a protected person")
    shown = (c.sms_prefs or {}).get(SHOWN)
    if hers and isinstance(shown, dict):
        return ContactOut.model_validate(shown)
    prefs = sms_prefs(c.sms_prefs, _profile(store, person_id, now))
    return ContactOut(
        phone=c.phone,
        sms=SmsChoice(enabled=prefs.enabled, tiers=list(prefs.tiers)),  # type: ignore[arg-type]
        lang=prefs.lang,  # type: ignore[arg-type]
    )


def _store_contact(
    ctx: RouteContext,
    who: Principal,
    person_id: int,
    body: ContactIn,
    rid: str,
    shown: dict[str, Any] | None = None,
) -> None:
    prefs = {"enabled": body.sms.enabled, "tiers": sorted(set(body.sms.tiers)), "lang": body.lang}
    try:
        changed = ctx.store.set_contact(person_id, body.phone, prefs, shown)
    except NotFound:
        raise HTTPException(404, f"person {person_id} not found") from None
    except Invalid as exc:
        raise HTTPException(422, str(exc)) from None
    # who and when, and what changed; never the number itself
    ctx.store.audit_append(
        AuditEntry(
            actor=f"user:{who.user_id}:{who.username}",
            role=who.role,
            action="contact.set",
            subject=f"person:{person_id}",
            purpose="victim_safety" if who.role == "victim" else "administration",
            fields=(["phone"] if changed else []) + ["sms", "lang"] + (["shown"] if shown else []),
            at=ctx.clock.now(),
            request_id=rid,
        )
    )


def _contact_under_duress(
    ctx: RouteContext, who: Principal, person_id: int, body: ContactIn, rid: str
) -> None:
    """A change made with her duress PIN: her choices as asked, her number kept, and the
    number he gave kept (sealed) as the one her phone is shown."""
    c = ctx.store.contact(person_id)
    kept = None if c is None else c.phone
    tiers = [t for t in SMS_TIERS if t in body.sms.tiers]  # as a change reads back
    shown = {"phone": body.phone, "sms": {"enabled": body.sms.enabled, "tiers": tiers}}
    mine = body.model_copy(update={"phone": kept})
    _store_contact(ctx, who, person_id, mine, rid, {**shown, "lang": body.lang})


@router.get("/victim/contact", response_model=ContactOut)
async def my_contact(who: Victim, ctx: Ctx) -> ContactOut:
    """Her own phone number and choices of texts."""
    if who.person_id is None:
        raise HTTPException(404, "no protected person is linked to this account")
    return await asyncio.to_thread(_contact, ctx.store, who.person_id, ctx.clock.now(), True)


@router.put("/victim/contact", response_model=ContactOut)
async def set_my_contact(
    body: VictimContactIn, who: Victim, ctx: Ctx, rid: RequestId
) -> ContactOut:
    """Set her own phone number and choices of texts (audited, without the number).

    Once she has an app PIN it is asked: whoever holds her unlocked phone must not move
    her texts to his own number. Her duress PIN gets the answer of a change that was made,
    changes nothing and calls for help in silence (docs/sms.md).
    """
    if who.person_id is None:
        raise HTTPException(404, "no protected person is linked to this account")
    authority, checked = await her_pin(ctx, who, body.pin, "contact")
    if authority == "duress":
        # Her choices of texts and their language are made as asked: they only change what
        # reaches the phone he holds, and a text he had turned off arriving would tell
        # him. The number is not: his would be texted whenever he is near her. Her phone
        # is shown the number he gave (docs/sms.md).
        await asyncio.to_thread(_contact_under_duress, ctx, who, who.person_id, body, rid)
        out = await asyncio.to_thread(_contact, ctx.store, who.person_id, ctx.clock.now(), True)
        await answer_floor(ctx, checked)
        return out
    await asyncio.to_thread(_store_contact, ctx, who, who.person_id, body, rid)
    out = await asyncio.to_thread(_contact, ctx.store, who.person_id, ctx.clock.now(), True)
    await answer_floor(ctx, checked)
    return out


@router.get("/people/{person_id}/contact", response_model=ContactOut)
async def person_contact(
    person_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    who: ContactStaff,
    ctx: Ctx,
    rid: RequestId,
    purpose: Annotated[ContactPurpose, Query(description="Why the number is read.")],
) -> ContactOut:
    """A protected person's contact, for a purpose; the read is audited with it."""
    out = await asyncio.to_thread(_contact, ctx.store, person_id, ctx.clock.now())
    await asyncio.to_thread(
        ctx.store.audit_append,
        AuditEntry(
            actor=f"user:{who.user_id}:{who.username}",
            role=who.role,
            action="contact.read",
            subject=f"person:{person_id}",
            purpose=purpose,
            fields=["phone"],
            at=ctx.clock.now(),
            request_id=rid,
        ),
    )
    return out


@router.put("/people/{person_id}/contact", response_model=ContactOut)
async def set_person_contact(
    person_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    body: ContactIn,
    who: ContactStaff,
    ctx: Ctx,
    rid: RequestId,
) -> ContactOut:
    """Set a protected person's phone number and choices of texts (audited, without the
    number)."""
    await asyncio.to_thread(_store_contact, ctx, who, person_id, body, rid)
    return await asyncio.to_thread(_contact, ctx.store, person_id, ctx.clock.now())
