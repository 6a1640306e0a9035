"""Routes of the two mobile apps: the protected person's and the field officer's.

Both apps report their holder's own position as fixes of an ``api`` device bound to
that person (registered on first use), so they pass through the same ingest as any
tracker: stored before the reply, evaluated, and acknowledged only then.

A field officer sees only the incidents dispatched to them, and only while the
dispatch is open; the position shown for one is read through the disclosure
policy and audited with the purpose ``dispatch``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel

from bangpae.api.context import RouteContext
from bangpae.api.deps import Ctx, RequestId, require
from bangpae.api.routes.pins import app_device, raise_duress, which_pin
from bangpae.api.schemas import (
    FieldOutcome,
    IdPath,
    IncidentAction,
    OwnLocation,
    SosCancel,
    SosRequest,
)
from bangpae.domain import disclosure
from bangpae.domain.access import Purpose, Relation
from bangpae.domain.disclosure import iso
from bangpae.domain.incidents import IncidentRecord
from bangpae.domain.model import Alarm, DeviceKind, EventKind, Fix, Order, make_event
from bangpae.domain.retention import fix_time_refusal
from bangpae.services import queries, sos
from bangpae.services.auth import Principal

router = APIRouter(prefix="/api/v1")
Victim = Annotated[Principal, Depends(require("victim"))]
Officer = Annotated[Principal, Depends(require("field_officer"))]

TARGET_WINDOW_S = 3600.0  # the newest position shown for a dispatch is at most this old
# Whose position an officer is sent to: the protected person when she is in danger,
# the supervised person when his device is the concern.
_TO_VICTIM = frozenset({"breach", "sos", "approach_fast", "signal_lost", "retro_breach"})


async def _submit_own(
    ctx: RouteContext, who: Principal, fix_of: Callable[[int], Fix], kind: str
) -> int:
    if who.person_id is None:
        raise HTTPException(403, "this account is not bound to a person")
    did = await asyncio.to_thread(app_device, ctx, who.person_id, kind)
    if not ctx.engine.knows_device(did):  # a new device: the engine learns of it
        await ctx.ingest.reload_registry()
    ids = await ctx.ingest.submit([fix_of(did)])
    return len(ids)


async def _report_own(body: OwnLocation, ctx: RouteContext, who: Principal) -> int:
    """A person's own position from their app: rate-limited per person (whatever device
    or session), held to the fix-time rule, stored and evaluated; how many were taken."""
    now = ctx.clock.now()
    key = f"person:{who.person_id}"
    if not ctx.own_reports.allow(key, now):
        wait = max(1, int(ctx.own_reports.retry_after(key, now)) + 1)
        raise HTTPException(
            429, "too many location reports; try again shortly", headers={"Retry-After": str(wait)}
        )
    return await _submit_own(
        ctx,
        who,
        lambda d: _own_fix(body, d, now, ctx.settings.retention_days),
        DeviceKind.PHONE.value,
    )


def _own_fix(body: OwnLocation, device_id: int, now: float, fixes_days: int) -> Fix:
    if body.fix_time is not None and body.fix_time.tzinfo is None:
        raise HTTPException(422, "fix_time needs a zone, e.g. 2026-11-23T09:00:00+09:00")
    t = body.fix_time.timestamp() if body.fix_time is not None else now
    # the rule of every way in (docs/robustness.md, "Fix times"); her app's device is made
    # at her first report, so a report she queued offline before it is still hers
    refusal = fix_time_refusal(t, now, None, fixes_days)
    if refusal is not None:
        raise HTTPException(422, refusal)
    return Fix(
        device_id=device_id,
        fix_time=t,
        lat=body.lat,
        lon=body.lon,
        accuracy_m=body.accuracy_m,
        speed_mps=body.speed_mps,
        heading_deg=body.heading_deg,
        battery_pct=body.battery_pct,
        valid=True,
        received_at=now,
    )


@router.get("/victim/status", tags=["victim"])
async def victim_status(ctx: Ctx, who: Victim, rid: RequestId) -> dict[str, Any]:
    """The protected person's orders: tier, distance, and his position only when allowed."""
    return await asyncio.to_thread(
        queries.victim_status, ctx.store, ctx.engine, who, ctx.clock.now(), rid
    )


@router.post("/victim/location", status_code=202, tags=["victim"])
async def victim_location(body: OwnLocation, ctx: Ctx, who: Victim) -> dict[str, Any]:
    """Her own position from the app; stored and evaluated before the reply."""
    return {"accepted": await _report_own(body, ctx, who)}


@router.post("/victim/sos", status_code=201, tags=["victim"])
async def victim_sos(body: SosRequest, ctx: Ctx, who: Victim) -> dict[str, Any]:
    """SOS: a critical incident with her position (if the phone has one), at once.

    A silent SOS is marked so that operators do not call her back.
    """
    now = ctx.clock.now()
    alarm = Alarm.SOS_SILENT.value if body.silent else Alarm.SOS.value
    has_position = body.lat is not None and body.lon is not None

    def fix_of(did: int) -> Fix:
        return Fix(
            device_id=did,
            fix_time=now,
            lat=body.lat if has_position else 0.0,  # type: ignore[arg-type]
            lon=body.lon if has_position else 0.0,  # type: ignore[arg-type]
            accuracy_m=body.accuracy_m,
            valid=has_position,
            alarms=frozenset({alarm}),
            received_at=now,
        )

    await _submit_own(ctx, who, fix_of, DeviceKind.PHONE.value)
    # the incident it opened (or joined, if one of hers is open): her loop follows it
    record = await asyncio.to_thread(sos.latest_sos, ctx.store, who.person_id, now)  # type: ignore[arg-type]  # a victim's token names her
    if record is None or not sos.raised_at(record, now):
        # A device's alarm is raised on its rising edge; her app's stays up until the app
        # next reports without it, which it may never do (no location sharing). Each press
        # is a new call for help: raised here, with the position the press carried (an
        # SOS of hers still open, one she said "I am safe" on included, is joined).
        did = await asyncio.to_thread(app_device, ctx, who.person_id, DeviceKind.PHONE.value)  # type: ignore[arg-type]  # a victim's token names her
        where = {"lat": body.lat, "lon": body.lon} if has_position else {}
        await ctx.ingest.record(
            make_event(
                EventKind.SOS,
                now,
                did,
                alarm,
                person_id=who.person_id,
                device_id=did,
                data={"alarm": alarm, **where},
            )
        )
        record = await asyncio.to_thread(sos.latest_sos, ctx.store, who.person_id, now)  # type: ignore[arg-type]  # a victim's token names her
    return {
        "sent": True,
        "silent": body.silent,
        "at": iso(now),
        "sos_id": None if record is None else record.id,
    }


@router.get("/victim/sos", tags=["victim"])
async def my_sos(ctx: Ctx, who: Victim) -> dict[str, Any]:
    """Her SOS calls open or closed within 24 h, newest first: what has happened so far."""
    return {"sos": await asyncio.to_thread(sos.victim_sos, ctx.store, who, ctx.clock.now())}


@router.post("/victim/sos/{incident_id}/cancel", tags=["victim"])
async def cancel_sos(
    incident_id: IdPath, body: SosCancel, ctx: Ctx, who: Victim, rid: RequestId
) -> dict[str, Any]:
    """She says she is safe; the incident stays open for an operator to verify.

    With her duress PIN the answer is the same, but the operators are told she is not
    safe (docs/sos.md).
    """
    record = await asyncio.to_thread(ctx.store.get_incident, incident_id)
    if (
        record is None
        or record.kind != "sos"
        or record.person_id != who.person_id
        or sos.hidden(record)  # her duress PIN's: as if it did not exist (docs/sos.md)
    ):
        raise HTTPException(404, f"no SOS {incident_id} of yours")
    duress = body.pin is not None and await which_pin(ctx, who, body.pin) == "duress"
    now = ctx.clock.now()
    if record.status in ("resolved", "false_alarm"):
        if duress:  # closed already: a new one, silent, for the operators alone
            await raise_duress(ctx, who, now, "cancel")
    else:
        await asyncio.to_thread(sos.cancel, ctx.store, who, record, duress, now)
    return {"cancelled": True}


# -- field officers -----------------------------------------------------------------------


def _dispatched_to(record: IncidentRecord, person_id: int | None) -> bool:
    """Whether the incident's current dispatch names this officer."""
    if person_id is None or record.status not in ("dispatched", "on_scene"):
        return False
    dispatches = [e for e in record.timeline if e["action"] == "dispatch"]
    return bool(dispatches) and dispatches[-1]["data"].get("officer_id") == person_id


def _my_dispatches(ctx: RouteContext, who: Principal) -> list[IncidentRecord]:
    out = []
    for status in ("dispatched", "on_scene"):
        for row in ctx.store.incidents(status, 1000):
            record = ctx.store.get_incident(row.id)
            if record is not None and _dispatched_to(record, who.person_id):
                out.append(record)
    return out


def _read_for_dispatch(
    ctx: RouteContext, who: Principal, record: IncidentRecord, person: int, now: float, rid: str
) -> Fix | None:
    """A person's newest position for an officer's dispatch (None: none recent), audited."""
    devices = ctx.store.device_ids_of_person(person)
    fix = ctx.store.fix_at_or_before(devices, now, TARGET_WINDOW_S)
    if fix is None:
        return None
    queries.audit_read(
        ctx.store,
        f"user:{who.user_id}:{who.username}",
        who.role,
        f"incident:{record.id}/person:{person}",
        Purpose.DISPATCH.value,
        ["lat", "lon", "accuracy_m"],
        now,
        rid,
    )
    return fix


def _whom(ctx: RouteContext, record: IncidentRecord, order: Order | None) -> tuple[str, int | None]:
    """Whom the officer is sent to, and that person: ``requester`` for her own SOS (she
    asked for help), ``victim`` when she is in danger, ``offender`` when his device is
    the concern (docs/disclosure.md, "Field officers")."""
    if order is not None:
        if record.kind in _TO_VICTIM:
            return ("requester" if record.kind == "sos" else "victim"), order.victim_id
        return "offender", order.offender_id
    if record.person_id is None:
        return "offender", None
    person = ctx.store.get_person(record.person_id)
    if person is not None and person.kind == "victim":
        return ("requester" if record.kind == "sos" else "victim"), record.person_id
    return "offender", record.person_id


def _target(
    ctx: RouteContext, who: Principal, record: IncidentRecord, now: float, rid: str
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Where the officer should go, and where the offender is when the policy lets the
    officer know (he is a party of the incident's order); read through the policy and
    audited each."""
    if not ctx.access_policy.allows(who.role, Relation.DISPATCHED, Purpose.DISPATCH):
        return None, None
    order = ctx.store.get_order(record.order_id) if record.order_id is not None else None
    whom, person = _whom(ctx, record, order)
    target = None
    if person is not None:
        fix = _read_for_dispatch(ctx, who, record, person, now, rid)
        if fix is not None:
            target = {"whom": whom, **disclosure.offender_position(fix, now)}
    offender = None
    # The dispatched relation covers the incident's subjects: the parties of its order.
    # An SOS of hers without an order names no offender, so none is read for it.
    if order is not None and whom != "offender":
        fix = _read_for_dispatch(ctx, who, record, order.offender_id, now, rid)
        if fix is not None:
            shown = disclosure.offender_position(fix, now)
            offender = {k: shown[k] for k in ("lat", "lon", "accuracy_m", "fix_time", "age_s")}
    return target, offender


def _dispatch_public(
    ctx: RouteContext, who: Principal, r: IncidentRecord, now: float, rid: str
) -> dict[str, Any]:
    target, offender = _target(ctx, who, r, now, rid)
    dispatches = [e for e in r.timeline if e["action"] == "dispatch"]
    return {
        "id": r.id,
        "kind": r.kind,
        "priority": r.priority,
        "status": r.status,
        "order_id": r.order_id,
        "opened_at": iso(r.opened_at),
        "duress": r.duress,  # she gave her duress PIN: do not call her (docs/sos.md)
        "target": target,
        "offender": offender,
        # what the operator said when sending this officer
        "dispatch_note": (dispatches[-1]["note"] or None) if dispatches else None,
        "notes": [
            {"at": iso(e["at"]), "action": e["action"], "note": e["note"]}
            for e in r.timeline
            if e["action"] in ("acknowledge", "dispatch", "on_scene") and e["note"]
        ],
    }


@router.get("/field/dispatches", tags=["field"])
async def field_dispatches(ctx: Ctx, who: Officer, rid: RequestId) -> dict[str, Any]:
    """The incidents dispatched to me and still open, each with where to go."""
    now = ctx.clock.now()

    def read() -> list[dict[str, Any]]:
        return [_dispatch_public(ctx, who, r, now, rid) for r in _my_dispatches(ctx, who)]

    return {"dispatches": await asyncio.to_thread(read), "at": iso(now)}


async def _own_dispatch(ctx: RouteContext, who: Principal, incident_id: int) -> IncidentRecord:
    record = await asyncio.to_thread(ctx.store.get_incident, incident_id)
    if record is None or not _dispatched_to(record, who.person_id):
        # whether it exists is not the officer's business unless it is theirs
        raise HTTPException(404, f"no open dispatch {incident_id} for you")
    return record


@router.post("/field/dispatches/{incident_id}/arrive", tags=["field"])
async def field_arrive(
    incident_id: IdPath, body: IncidentAction, ctx: Ctx, who: Officer
) -> dict[str, Any]:
    """I am on scene."""
    await _own_dispatch(ctx, who, incident_id)
    r = await asyncio.to_thread(
        ctx.store.incident_action,
        incident_id,
        "on_scene",
        f"user:{who.user_id}:{who.username}",
        ctx.clock.now(),
        body.note,
    )
    return {"id": r.id, "status": r.status}


@router.post("/field/dispatches/{incident_id}/outcome", tags=["field"])
async def field_outcome(
    incident_id: IdPath, body: FieldOutcome, ctx: Ctx, who: Officer
) -> dict[str, Any]:
    """How it ended: resolved or a false alarm, with a note."""
    await _own_dispatch(ctx, who, incident_id)
    step = "false_alarm" if body.outcome == "false_alarm" else "resolve"
    r = await asyncio.to_thread(
        ctx.store.incident_action,
        incident_id,
        step,
        f"user:{who.user_id}:{who.username}",
        ctx.clock.now(),
        body.note,
    )
    return {"id": r.id, "status": r.status}


@router.post("/field/location", status_code=202, tags=["field"])
async def field_location(body: OwnLocation, ctx: Ctx, who: Officer) -> dict[str, Any]:
    """The officer's own position while on duty (for dispatch suggestions)."""
    return {"accepted": await _report_own(body, ctx, who)}


class Access(BaseModel):
    """One read of the protected person's position: when, by which role, for what."""

    at: str  # the last of the reads this row stands for
    role: str  # a role code (field_officer, operator, police, ...): her app words it
    purpose: str  # a purpose code (dispatch, incident_response, ...)
    fields: list[str]
    count: int  # reads of the same kind, each within 10 minutes of the next
    first_at: str
    last_at: str


@router.get("/victim/accesses", response_model=list[Access])
async def my_accesses(who: Victim, ctx: Ctx) -> list[Access]:
    """Who read her position and why (newest first): the audit trail, shown to her."""
    records = await asyncio.to_thread(queries.victim_accesses, ctx.store, who)
    return [Access(**r) for r in records]
