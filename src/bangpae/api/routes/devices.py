"""Routes of devices: registration with a key, and a device's stored fixes read for a purpose."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query

from bangpae.api.deps import Ctx, RequestId, audit_admin, principal, require
from bangpae.api.schemas import MAX_ID, Created, DeviceCreate
from bangpae.domain.access import Purpose, Relation
from bangpae.services import access, queries
from bangpae.services.auth import Principal
from bangpae.services.devicekeys import Known, WeakKey, check_key_strength, new_key

router = APIRouter(prefix="/api/v1")
Registrar = Annotated[Principal, Depends(require("admin", "supervisor", "operator"))]
KEYED = frozenset({"osmand", "owntracks", "api"})  # devices that prove who they are by key


@router.post("/devices", status_code=201, response_model=Created, tags=["admin"])
async def create_device(body: DeviceCreate, ctx: Ctx, who: Registrar, rid: RequestId) -> Created:
    """Register a device for a person. OsmAnd, OwnTracks and API devices prove who they are
    with a key, since their identifier alone would let anyone report: a supplied key must
    be long and random (at least 22 characters); without one the server makes a random key
    and returns it in this reply only (unless the operator allows key-less devices)."""
    key = body.key
    if key is not None:
        try:
            check_key_strength(key)
        except WeakKey as exc:
            raise HTTPException(422, str(exc)) from None
    elif body.protocol in KEYED and not ctx.settings.allow_keyless_devices:
        key = new_key()  # shown once, in this reply
    secret = ctx.device_keys.hash_new(key) if key else None
    now = ctx.clock.now()
    did = ctx.store.add_device(
        body.identifier,
        body.kind,
        body.protocol,
        body.person_id,
        secret,
        at=now,
        lenient_crc=body.lenient_crc,
    )
    audit_admin(
        ctx,
        who,
        "create_device",
        f"device:{did}",
        ["identifier", "kind", "protocol", "person_id"],
        rid,
    )
    # with its registration time: fixes from before it are refused (docs/robustness.md)
    ctx.device_keys.remember(Known(did, body.identifier, secret, body.lenient_crc, now))
    await ctx.ingest.reload_registry()
    return Created(id=did, key=key if body.key is None else None)


@router.get("/devices/{ref}/fixes", tags=["devices"])
async def device_fixes(
    ref: str,
    ctx: Ctx,
    who: Annotated[Principal, Depends(principal)],
    rid: RequestId,
    purpose: Annotated[Purpose, Query(description="Why: one of the fixed purposes.")],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(pattern=r"^\d{1,18}$")] = None,
    incident: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="An open incident about the person.")
    ] = None,
    hold: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="A legal hold in force (a court order).")
    ] = None,
    approval: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="Your access request, approved.")
    ] = None,
    break_glass: Annotated[
        str | None,
        Query(max_length=500, description="No basis: the written reason (alerts at once)."),
    ] = None,
) -> dict[str, Any]:
    """A device's stored fixes (database id or identifier), newest first, for a purpose on
    the basis named (docs/access-policy.md); audited with both."""
    policy = ctx.access_policy
    if not (
        policy.allows(who.role, Relation.NONE, purpose) or policy.may_break_glass(who.role, purpose)
    ):
        raise HTTPException(403, f"role {who.role!r} may not read positions for {purpose.value!r}")
    device = await asyncio.to_thread(ctx.store.get_device, ref)
    if device is None:
        raise HTTPException(404, f"device {ref!r} does not exist")
    now = ctx.clock.now()
    claim = access.Claim(incident, hold, approval, break_glass)
    grant = await asyncio.to_thread(
        access.authorize, ctx.store, policy, who, device.person_id, purpose, claim, now
    )
    if grant.break_glass:  # recorded and told before anything is read
        subject = f"device:{device.id}"
        await access.broke_glass(ctx.store, ctx.notifier, policy, who, subject, grant, now, rid)
    return await asyncio.to_thread(
        queries.device_fixes,
        ctx.store,
        who,
        device,
        limit,
        int(cursor) if cursor else None,
        purpose.value,
        now,
        rid,
        grant.basis,
        grant.since,
        grant.until,
    )
