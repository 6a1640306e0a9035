"""Her PINs: the app lock, the duress PIN, and the PIN that guards her settings.

The rules are in docs/sos.md ("PINs" and "The duress PIN"). Whoever holds her unlocked
phone must not be able to clear her duress PIN, move her texts to another number, or
learn whether she has a duress PIN at all; and her duress PIN, given wherever a PIN is
asked, seems to work and calls for help in silence.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Response

from bangpae.api.context import RouteContext
from bangpae.api.deps import Ctx, RequestId, audit_admin, require
from bangpae.api.schemas import PinCheck, PinsUpdate
from bangpae.domain.model import Alarm, DeviceKind, EventKind, make_event
from bangpae.services import sos
from bangpae.services.access import actor
from bangpae.services.auth import Principal
from bangpae.services.passwords import PoolBusy

router = APIRouter(prefix="/api/v1")
DUMMY_PIN = "0000"  # checked and hashed when there is nothing to check or hash
Victim = Annotated[Principal, Depends(require("victim"))]


def app_device(ctx: RouteContext, person_id: int, kind: str) -> int:
    """The person's app device, registered on first use."""
    for did in ctx.store.device_ids_of_person(person_id):
        device = ctx.store.get_device(did)
        if device is not None and device.protocol == "api":
            return int(did)
    did = ctx.store.add_device(f"app-{person_id}", kind, "api", person_id, at=ctx.clock.now())
    return int(did)


async def raise_duress(ctx: RouteContext, who: Principal, now: float, source: str) -> None:
    """A silent SOS for her under duress, kept from her phone's screens (docs/sos.md)."""
    assert who.person_id is not None
    did = await asyncio.to_thread(app_device, ctx, who.person_id, DeviceKind.PHONE.value)
    await ctx.ingest.record(
        make_event(
            EventKind.SOS,
            now,
            who.person_id,
            "duress",
            source,
            person_id=who.person_id,
            device_id=did,
            data={"alarm": Alarm.SOS_SILENT.value, "source": source},
        )
    )
    record = await asyncio.to_thread(sos.latest_sos, ctx.store, who.person_id, now)
    if record is not None:
        raised = record.opened_at == now  # opened by this: never listed on her phone
        await asyncio.to_thread(
            ctx.store.incident_duress,
            record.id,
            actor(who),
            now,
            "under duress: her duress PIN; do not call back",
            {"source": source, "silent": True, "raised": raised},
        )


async def which_pin(ctx: RouteContext, who: Principal, pin: str) -> str:
    """``app``, ``duress`` or ``wrong``, checked in the password pool."""
    app_hash, duress_hash = await asyncio.to_thread(ctx.store.pins, who.user_id)
    try:
        return str(await ctx.passwords.run(sos.check_pin, app_hash, duress_hash, pin))
    except PoolBusy as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "1"}) from exc


async def answer_floor(ctx: RouteContext, checked: float) -> None:
    """Wait until ``pin_answer_floor_s`` (0.5 s) after a PIN was checked: what follows
    differs by the PIN (her duress PIN records a silent SOS first), and the time of the
    answer must not say which (docs/sos.md)."""
    left = checked + ctx.settings.pin_answer_floor_s - time.monotonic()
    if left > 0:
        await asyncio.sleep(left)


async def _checked_pin(
    ctx: RouteContext, who: Principal, pin: str | None, source: str
) -> tuple[str, float]:
    """``app``, ``duress`` or ``wrong`` for a PIN she gave, and when it was checked.

    Checked even when locked out: her duress PIN still raises its silent SOS (from
    ``source``) after someone else's wrong guesses, and past the limit the answer is the
    same 429 whichever PIN it was. A wrong PIN counts towards the limit (docs/sos.md).
    Callers hold her ``pin_locks`` entry, so guesses sent at once are counted one by one.
    """
    now = ctx.clock.now()
    key = f"user:{who.user_id}"
    blocked = ctx.pin_failures.blocked(key, now)
    which = "wrong" if pin is None else await which_pin(ctx, who, pin)
    checked = time.monotonic()
    if which == "duress":
        await raise_duress(ctx, who, now, source)
    if blocked:
        wait = max(1, int(ctx.pin_failures.retry_after(key, now)) + 1)
        await answer_floor(ctx, checked)
        raise HTTPException(
            429, "too many wrong PINs; try again later", headers={"Retry-After": str(wait)}
        )
    if which == "wrong":
        ctx.pin_failures.failed(key, now)
    return which, checked


async def her_pin(
    ctx: RouteContext, who: Principal, pin: str | None, source: str
) -> tuple[Literal["app", "duress", "none"], float]:
    """Check the PIN she gave for a change of her settings (docs/sos.md, "PINs").

    ``none``: she has no app PIN, nothing is asked. ``app``: go ahead. ``duress``: the
    silent SOS is raised here; the route answers as for her app PIN. A missing or wrong
    PIN is refused (403) and counts with the app lock's wrong PINs; past the limit, 429
    whichever PIN it was. It returns ``pin_answer_floor_s`` after the check whichever PIN it
    was, with the time it returned: the route's own work differs by the PIN too, and it
    answers no sooner than ``answer_floor`` of that time.
    """
    async with ctx.pin_locks.setdefault(who.user_id, asyncio.Lock()):
        app_hash, _ = await asyncio.to_thread(ctx.store.pins, who.user_id)
        if app_hash is None:
            return "none", float("-inf")
        which, checked = await _checked_pin(ctx, who, pin, source)
        if which == "wrong":
            raise HTTPException(
                403, "your app PIN is needed to change this" if pin is None else "wrong PIN"
            )
        await answer_floor(ctx, checked)  # her duress PIN's SOS is recorded by now, unseen
        return ("duress" if which == "duress" else "app"), time.monotonic()


@router.get("/victim/pins", tags=["victim"])
async def my_pins(ctx: Ctx, who: Victim) -> dict[str, bool]:
    """Whether her app-lock PIN is set (never the PINs, nor whether a duress PIN is)."""
    app_hash, _ = await asyncio.to_thread(ctx.store.pins, who.user_id)
    return {"app_pin_set": app_hash is not None}


@router.put("/victim/pins", status_code=204, tags=["victim"])
async def set_my_pins(body: PinsUpdate, ctx: Ctx, who: Victim, rid: RequestId) -> Response:
    """Set, change or clear her PINs, with her current app PIN once she has one.

    A field left out is kept; null clears it, and clearing the app PIN clears both. Given
    her duress PIN as the current one, the change is made as if that PIN were her app PIN,
    and the silent SOS is raised: what her phone reads back afterwards, and which PINs
    open the app, are what they would be for her app PIN (docs/sos.md).
    """
    set_app = "app_pin" in body.model_fields_set  # a field left out is kept
    set_duress = "duress_pin" in body.model_fields_set
    # Refusals read only what was asked and the PIN given, never what is kept: they are the
    # same whichever PIN she gave and whether a duress PIN is set.
    if body.duress_pin is not None:
        if body.duress_pin == body.app_pin or (not set_app and body.duress_pin == body.current_pin):
            raise HTTPException(422, "the duress PIN must differ from the app PIN")
        if set_app and body.app_pin is None:
            raise HTTPException(422, "a duress PIN needs an app PIN")
    authority, checked = await her_pin(ctx, who, body.current_pin, "settings")
    if authority == "none" and body.duress_pin is not None and body.app_pin is None:
        raise HTTPException(422, "a duress PIN needs an app PIN")
    app_hash, duress_hash = await asyncio.to_thread(ctx.store.pins, who.user_id)
    # The same argon2 work whatever is set and whichever PIN was given: one check of the
    # new app PIN against those kept, and two hashes (docs/sos.md).
    clash = await which_pin(ctx, who, body.app_pin or DUMMY_PIN)
    try:
        hashed = await ctx.passwords.run(
            sos.pin_hashes, body.app_pin or DUMMY_PIN, body.duress_pin or DUMMY_PIN
        )
    except PoolBusy as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "1"}) from exc
    new_app_hash, new_duress_hash = hashed
    if authority == "duress":
        # the PIN she gave is the app PIN as far as this change goes: kept (its hash is
        # her duress PIN's) unless replaced; the duress PIN is whatever he asked, or none
        app: str | None = duress_hash if not set_app else body.app_pin and new_app_hash
        duress: str | None = new_duress_hash if body.duress_pin else None
    else:
        app = app_hash if not set_app else body.app_pin and new_app_hash
        if app is None:
            duress = None  # no duress PIN without an app PIN
        elif set_duress:
            duress = body.duress_pin and new_duress_hash
        elif set_app and clash == "duress":
            duress = None  # her new app PIN is the PIN her duress PIN was: now only that
        else:
            duress = duress_hash
    await asyncio.to_thread(ctx.store.set_pins, who.user_id, app, duress)
    # what was asked, never the PINs; under duress the incident says so
    fields = [
        f"{name}={'set' if value is not None else 'cleared'}"
        for name, value, asked in (
            ("app_pin", body.app_pin, set_app),
            ("duress_pin", body.duress_pin, set_duress),
        )
        if asked
    ]
    await asyncio.to_thread(audit_admin, ctx, who, "set_pins", f"user:{who.user_id}", fields, rid)
    await answer_floor(ctx, checked)
    return Response(status_code=204)


@router.post("/victim/pin/check", tags=["victim"])
async def check_my_pin(body: PinCheck, ctx: Ctx, who: Victim, rid: RequestId) -> dict[str, bool]:
    """The app lock: whether the PIN opens the app. Her duress PIN opens it too, and
    raises a silent SOS that her phone never shows (docs/sos.md)."""
    # one check at a time per user: the limit is read after the previous guess counted,
    # so guesses sent at once get no more than the limit between them (docs/sos.md)
    async with ctx.pin_locks.setdefault(who.user_id, asyncio.Lock()):
        return await _check_pin_locked(body, ctx, who, rid)


async def _check_pin_locked(
    body: PinCheck, ctx: RouteContext, who: Principal, rid: str
) -> dict[str, bool]:
    which, checked = await _checked_pin(ctx, who, body.pin, "app_lock")
    ok = which != "wrong"
    # the audit says whether the app opened; the duress itself is on the incident
    outcome = [f"ok={str(ok).lower()}"]
    await asyncio.to_thread(audit_admin, ctx, who, "pin_check", f"user:{who.user_id}", outcome, rid)
    await answer_floor(ctx, checked)
    return {"ok": ok}
