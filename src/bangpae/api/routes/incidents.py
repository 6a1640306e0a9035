"""Routes of incidents: the list, one with its timeline, and the steps taken on it."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query

from bangpae.api.deps import Ctx, require
from bangpae.api.schemas import IdPath, IncidentAction, IncidentPublic
from bangpae.domain.disclosure import iso
from bangpae.domain.incidents import IncidentRecord
from bangpae.domain.response import response_times
from bangpae.services import response
from bangpae.services.auth import Principal

router = APIRouter(prefix="/api/v1")
Staff = Annotated[Principal, Depends(require("operator", "supervisor"))]


STATUS_PATTERN = "^(open|acknowledged|dispatched|on_scene|resolved|false_alarm)$"


def _incident_public(i: IncidentRecord) -> dict[str, Any]:
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


@router.get("/incidents", tags=["incidents"])
async def list_incidents(
    ctx: Ctx,
    who: Staff,
    status: Annotated[str | None, Query(pattern=STATUS_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[dict[str, Any]]:
    """Incidents, newest first (``status=open``: every incident not yet closed)."""
    rows = await asyncio.to_thread(ctx.store.incidents, status, limit)
    return [_incident_public(i) for i in rows]


@router.get("/incidents/{incident_id}", tags=["incidents"])
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


def _incident_full(i: IncidentRecord) -> dict[str, Any]:
    """An incident with its timeline and its times to acknowledge, dispatch and on-scene.

    Positions stay behind the audited routes (fixes, suggestions, hand-offs): an
    incident is read far more often than anyone needs to see where it happened.
    """
    return {
        **_incident_public(i),
        "response_times": response_times(i.opened_at, i.timeline),
        "timeline": [{**_unplaced(e), "at": iso(e["at"])} for e in i.timeline],
    }


@router.post("/incidents/{incident_id}/{action}", tags=["incidents"])
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
    # her SOS loop says when help comes (docs/sos.md)
    if step == "dispatch" and data is not None and body.officer_id is not None:
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
