"""Routes of the control centre's response: checklists, dispatch suggestions, police hand-off."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from bangpae.api.context import RouteContext
from bangpae.api.deps import Ctx, RequestId, require
from bangpae.api.schemas import IdPath
from bangpae.domain.access import Basis, Relation
from bangpae.services import access, handoffs, response
from bangpae.services.auth import Principal

router = APIRouter(prefix="/api/v1")
Staff = Annotated[Principal, Depends(require("operator", "supervisor"))]


class StepDone(BaseModel):
    """A checklist step ticked off, with what was said or done."""

    model_config = ConfigDict(extra="forbid")
    note: str = Field("", max_length=2000)


class HandoffCreate(BaseModel):
    """Hand a case to the police through a channel."""

    model_config = ConfigDict(extra="forbid")
    channel: Literal["webhook", "email", "sms"] = "webhook"
    note: str = Field("", max_length=2000)


class HandoffClose(BaseModel):
    """End a hand-off."""

    model_config = ConfigDict(extra="forbid")
    note: str = Field("", max_length=2000)


def _missing(incident_id: int) -> HTTPException:
    return HTTPException(404, f"incident {incident_id} does not exist")


def _handoffs(ctx: RouteContext) -> handoffs.Handoffs:
    """The hand-off service (the composition root builds one with the context)."""
    assert ctx.handoffs is not None
    return ctx.handoffs


@router.get("/incidents/{incident_id}/response", tags=["response"])
async def incident_response(incident_id: IdPath, ctx: Ctx, who: Staff) -> dict[str, Any]:
    """The incident's playbook as a checklist, its response times and supervisor pages."""
    out = await asyncio.to_thread(response.incident_response, ctx.store, incident_id)
    if out is None:
        raise _missing(incident_id)
    return out


@router.post("/incidents/{incident_id}/steps/{step_id}", tags=["response"])
async def mark_step(
    incident_id: IdPath, step_id: str, body: StepDone, ctx: Ctx, who: Staff
) -> dict[str, Any]:
    """Tick a checklist step off; the reply is the updated checklist."""
    try:
        out = await asyncio.to_thread(
            response.mark_step, ctx.store, incident_id, step_id, who, ctx.clock.now(), body.note
        )
    except response.UnknownStep as exc:
        raise HTTPException(404, str(exc)) from exc
    if out is None:
        raise _missing(incident_id)
    return out


@router.get("/incidents/{incident_id}/suggestions", tags=["response"])
async def suggestions(incident_id: IdPath, ctx: Ctx, who: Staff, rid: RequestId) -> dict[str, Any]:
    """Field officers nearest the open incident, with travel time; audited."""
    basis = await asyncio.to_thread(
        access.incident_basis,
        ctx.store,
        ctx.access_policy,
        who,
        response.DISPATCH_PURPOSE,
        incident_id,
    )
    if basis is None:
        raise _missing(incident_id)
    out = await asyncio.to_thread(
        response.suggest_officers,
        ctx.store,
        incident_id,
        ctx.settings.dispatch_speed_kmh,
        who,
        ctx.clock.now(),
        rid,
    )
    if out is None:
        raise _missing(incident_id)
    return out


@router.post("/incidents/{incident_id}/handoff", status_code=201, tags=["response"])
async def create_handoff(
    incident_id: IdPath, body: HandoffCreate, ctx: Ctx, who: Staff, rid: RequestId
) -> dict[str, Any]:
    """Hand the case to the police; delivery runs in the background, retried with backoff.

    The live-position link is in this reply and in what the police receive, never again.
    """
    if Basis.INCIDENT not in ctx.access_policy.bases(
        who.role, Relation.NONE, response.HANDOFF_PURPOSE
    ):
        raise HTTPException(403, f"role {who.role!r} may not hand positions to the police")
    try:
        out = await _handoffs(ctx).create(incident_id, body.channel, body.note, who, rid)
    except handoffs.HandoffError as exc:
        raise HTTPException(422, str(exc)) from exc
    if out is None:
        raise _missing(incident_id)
    return dict(out)


@router.get("/incidents/{incident_id}/handoffs", tags=["response"])
async def list_handoffs(incident_id: IdPath, ctx: Ctx, who: Staff) -> list[dict[str, Any]]:
    """The incident's hand-offs, each with every delivery attempt."""
    if await asyncio.to_thread(ctx.store.get_incident, incident_id) is None:
        raise _missing(incident_id)
    rows = await asyncio.to_thread(ctx.store.handoffs_for_incident, incident_id)
    return [handoffs.handoff_public(r) for r in rows]


@router.post("/incidents/{incident_id}/handoffs/{handoff_id}/close", tags=["response"])
async def close_handoff(
    incident_id: IdPath, handoff_id: IdPath, body: HandoffClose, ctx: Ctx, who: Staff
) -> dict[str, Any]:
    """End a hand-off: its live-position link stops working."""
    ok = await asyncio.to_thread(_handoffs(ctx).close, incident_id, handoff_id, who, body.note)
    if not ok:
        raise HTTPException(404, f"incident {incident_id} has no hand-off {handoff_id}")
    record = await asyncio.to_thread(ctx.store.get_handoff, handoff_id)
    assert record is not None  # it was closed just now: it exists
    return handoffs.handoff_public(record)


@router.get("/police/live/{token}", tags=["response"])
async def police_live(token: str, ctx: Ctx, rid: RequestId) -> dict[str, Any]:
    """The live positions of a handed-off case, while the hand-off is open; audited."""
    out: dict[str, Any] | None = await asyncio.to_thread(_handoffs(ctx).live, token, rid)
    if out is None:
        raise HTTPException(404, "no open hand-off has this link")
    return out
