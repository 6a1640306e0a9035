"""Routes of people: offenders, victims and officers registered."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from bangpae.api.deps import Ctx, RequestId, audit_admin, require
from bangpae.api.schemas import Created, PersonCreate
from bangpae.services.auth import Principal

router = APIRouter(prefix="/api/v1")
Registrar = Annotated[Principal, Depends(require("admin", "supervisor", "operator"))]


@router.post("/people", status_code=201, response_model=Created, tags=["admin"])
async def create_person(body: PersonCreate, ctx: Ctx, who: Registrar, rid: RequestId) -> Created:
    """Register an offender, a victim or an officer."""
    pid = ctx.store.add_person(body.kind, body.name, at=ctx.clock.now())
    audit_admin(ctx, who, "create_person", f"person:{pid}", ["kind", "name"], rid)
    await ctx.ingest.reload_registry()
    return Created(id=pid)
