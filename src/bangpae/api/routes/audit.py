"""Routes of the audit trail, for auditors."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from bangpae.api.deps import Ctx, require
from bangpae.api.schemas import MAX_ID
from bangpae.domain.disclosure import iso
from bangpae.services.auth import Principal

router = APIRouter(prefix="/api/v1")
Auditor = Annotated[Principal, Depends(require("auditor"))]


@router.get("/audit", tags=["audit"])
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
