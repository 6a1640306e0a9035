"""Thin routes: parse, call a service, shape the reply."""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bangpae.adapters.listeners.budget import report as connection_report
from bangpae.api.deps import Ctx, RequestId, audit_admin, principal, require
from bangpae.api.schemas import (
    MAX_ID,
    Created,
    DeviceCreate,
    FixBatch,
    IdPath,
    IncidentAction,
    IncidentPublic,
    OrderCreate,
    PersonCreate,
    ZoneIn,
)
from bangpae.domain.access import Purpose, Relation
from bangpae.domain.disclosure import iso
from bangpae.domain.model import Fix, Order, WeeklyWindow, Zone
from bangpae.domain.response import response_times
from bangpae.domain.retention import MAX_FUTURE_S, fix_time_refusal
from bangpae.domain.zones import compile_zone
from bangpae.services import access, devicekeys, queries, response
from bangpae.services.auth import Principal
from bangpae.services.devicekeys import Known, WeakKey, check_key_strength, new_key

api = APIRouter(prefix="/api/v1")
root = APIRouter()

Staff = Annotated[Principal, Depends(require("operator", "supervisor"))]
Admin = Annotated[Principal, Depends(require("admin", "supervisor"))]
Registrar = Annotated[Principal, Depends(require("admin", "supervisor", "operator"))]
Victim = Annotated[Principal, Depends(require("victim"))]
KEYED = frozenset({"osmand", "owntracks", "api"})  # devices that prove who they are by key
Auditor = Annotated[Principal, Depends(require("auditor"))]


@root.get("/healthz", tags=["ops"])
async def healthz(ctx: Ctx) -> dict[str, Any]:
    """Liveness, the engine's size, open files and each listener's connections."""
    return {
        "status": "ok",
        "orders": ctx.engine.orders.n,
        "devices": ctx.engine.devices.n,
        **connection_report(ctx.budgets),
    }


@root.get("/metrics", tags=["ops"])
async def metrics(ctx: Ctx) -> Response:
    """Prometheus metrics (with open files and each listener's connection budget)."""
    return Response(generate_latest(ctx.metrics), media_type=CONTENT_TYPE_LATEST)


@api.post("/people", status_code=201, response_model=Created, tags=["admin"])
async def create_person(body: PersonCreate, ctx: Ctx, who: Registrar, rid: RequestId) -> Created:
    """Register an offender, a victim or an officer."""
    pid = ctx.store.add_person(body.kind, body.name, at=ctx.clock.now())
    audit_admin(ctx, who, "create_person", f"person:{pid}", ["kind", "name"], rid)
    await ctx.ingest.reload_registry()
    return Created(id=pid)


@api.post("/devices", status_code=201, response_model=Created, tags=["admin"])
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


@api.post("/orders", status_code=201, response_model=Created, tags=["admin"])
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


async def _device_auth(ctx: Any, request: Request) -> Any:
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


@api.post("/fixes", status_code=202, tags=["devices"])
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


@api.get("/victim/status", tags=["victim"])
async def victim_status(ctx: Ctx, who: Victim, rid: RequestId) -> dict[str, Any]:
    """The protected person's orders: tier, distance, and his position only when allowed."""
    return await asyncio.to_thread(
        queries.victim_status, ctx.store, ctx.engine, who, ctx.clock.now(), rid
    )


STATUS_PATTERN = "^(open|acknowledged|dispatched|on_scene|resolved|false_alarm)$"


def _incident_public(i: Any) -> dict[str, Any]:
    return IncidentPublic(
        id=i.id,
        kind=i.kind,
        priority=i.priority,
        status=i.status,
        order_id=i.order_id,
        person_id=i.person_id,
        opened_at=iso(i.opened_at),
        late=i.late,
        duress=i.duress,
    ).model_dump()


@api.get("/incidents", tags=["incidents"])
async def list_incidents(
    ctx: Ctx,
    who: Staff,
    status: Annotated[str | None, Query(pattern=STATUS_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[dict[str, Any]]:
    """Incidents, newest first (``status=open``: every incident not yet closed)."""
    rows = await asyncio.to_thread(ctx.store.incidents, status, limit)
    return [_incident_public(i) for i in rows]


@api.get("/incidents/{incident_id}", tags=["incidents"])
async def get_incident(incident_id: IdPath, ctx: Ctx, who: Staff) -> dict[str, Any]:
    """One incident with its timeline."""
    i = await asyncio.to_thread(ctx.store.get_incident, incident_id)
    if i is None:
        raise HTTPException(404, f"incident {incident_id} does not exist")
    return _incident_full(i)


def _unplaced(x: Any) -> Any:
    """``x`` without the positions its events carried (as the ops stream sends them)."""
    if isinstance(x, dict):
        return {k: _unplaced(v) for k, v in x.items() if k not in ("lat", "lon")}
    if isinstance(x, list):
        return [_unplaced(v) for v in x]
    return x


def _incident_full(i: Any) -> dict[str, Any]:
    """An incident with its timeline and its times to acknowledge, dispatch and on-scene.

    Positions stay behind the audited routes (fixes, suggestions, hand-offs): an
    incident is read far more often than anyone needs to see where it happened.
    """
    return {
        **_incident_public(i),
        "response_times": response_times(i.opened_at, i.timeline),
        "timeline": [{**_unplaced(e), "at": iso(e["at"])} for e in i.timeline],
    }


@api.post("/incidents/{incident_id}/{action}", tags=["incidents"])
async def act_on_incident(
    incident_id: IdPath, action: str, body: IncidentAction, ctx: Ctx, who: Staff
) -> dict[str, Any]:
    """acknowledge, dispatch, on-scene or resolve an incident, with a note."""
    step = {
        "acknowledge": "acknowledge",
        "dispatch": "dispatch",
        "on-scene": "on_scene",
        "resolve": "resolve",
    }.get(action)
    if step is None:
        raise HTTPException(404, f"no action {action!r}")
    if step == "dispatch":
        # the dispatch decides which field officer's app shows this case: it must be one
        officer = None
        if body.officer_id is not None:
            officer = await asyncio.to_thread(ctx.store.get_person, body.officer_id)
        if officer is None or officer.kind != "officer":
            raise HTTPException(422, "dispatch needs the officer_id of a field officer")
    if step == "resolve" and body.outcome == "false_alarm":
        step = "false_alarm"
    data: dict[str, Any] | None = None
    if body.officer_id is not None:
        data = {"officer_id": body.officer_id}
    if step == "dispatch" and data is not None:  # her SOS loop says when help comes (docs/sos.md)
        data["eta_s"] = await asyncio.to_thread(
            response.dispatch_eta_s,
            ctx.store,
            incident_id,
            body.officer_id,
            ctx.settings.dispatch_speed_kmh,
            ctx.clock.now(),
        )
    i = await asyncio.to_thread(
        ctx.store.incident_action,
        incident_id,
        step,
        f"user:{who.user_id}:{who.username}",
        ctx.clock.now(),
        body.note,
        data,
    )
    return _incident_full(i)


@api.get("/devices/{ref}/fixes", tags=["devices"])
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


@api.get("/audit", tags=["audit"])
async def audit_trail(
    ctx: Ctx,
    who: Auditor,
    actor: str | None = None,
    subject: str | None = None,
    since_id: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """The audit trail in chain order, filterable by actor and subject."""
    rows = await asyncio.to_thread(ctx.store.audit_records, actor, subject, since_id, limit)
    return {"records": [{**r, "at": iso(r["at"])} for r in rows]}


@api.get("/me", tags=["auth"])
async def me(who: Annotated[Principal, Depends(principal)]) -> dict[str, Any]:
    """Who the token belongs to."""
    return {
        "user_id": who.user_id,
        "username": who.username,
        "role": who.role,
        "person_id": who.person_id,
        "server_time": iso(time.time()),
    }
