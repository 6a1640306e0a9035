"""Routes of the access policy: requests for a second person's approval, the auditor's
access review, and a person's report of the reads of their positions.

Who may call each is the access policy's to say (``[approval]``, ``[reports]``; see
``docs/access-policy.md``), so the role check is made here against the loaded policy.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import Field

from bangpae.api.deps import Ctx, RequestId, principal
from bangpae.api.schemas import MAX_ID, IdPath, Strict
from bangpae.domain.access import Purpose
from bangpae.domain.audit import AuditEntry
from bangpae.services import access
from bangpae.services.auth import Principal

router = APIRouter(prefix="/api/v1")
User = Annotated[Principal, Depends(principal)]


class AccessRequestIn(Strict):
    """Ask to read a person's positions for a purpose given on approval."""

    person_id: int = Field(gt=0, le=MAX_ID)
    purpose: Purpose
    reason: str = Field(min_length=10, max_length=500)


def _may(who: Principal, roles: frozenset[str]) -> None:
    if who.role not in roles:
        raise HTTPException(403, f"role {who.role!r} may not do this")


def _epoch(t: datetime | None, name: str) -> float | None:
    if t is None:
        return None
    if t.tzinfo is None:
        raise HTTPException(422, f"{name} needs a zone, e.g. 2026-11-23T09:00:00+09:00")
    return t.timestamp()


def _range(since: datetime | None, until: datetime | None) -> tuple[float | None, float | None]:
    t0, t1 = _epoch(since, "since"), _epoch(until, "until")
    if t0 is not None and t1 is not None and t1 <= t0:
        raise HTTPException(422, "until must come after since")
    return t0, t1


@router.post("/access/requests", status_code=201, tags=["access"])
async def request_access(
    body: AccessRequestIn, ctx: Ctx, who: User, rid: RequestId
) -> dict[str, Any]:
    """Ask another staff member to approve reading a person's positions for a purpose."""
    return await asyncio.to_thread(
        access.request_access,
        ctx.store,
        ctx.access_policy,
        who,
        body.person_id,
        body.purpose.value,
        body.reason.strip(),
        ctx.clock.now(),
        rid,
    )


@router.get("/access/requests", tags=["access"])
async def list_access_requests(
    ctx: Ctx, who: User, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[dict[str, Any]]:
    """The newest access requests with their approvals, for those who ask and approve."""
    policy = ctx.access_policy
    _may(who, policy.requesters | policy.approvers)
    rows = await asyncio.to_thread(ctx.store.access_requests, limit)
    return [access.public_request(r) for r in rows]


@router.post("/access/requests/{request_id}/approve", tags=["access"])
async def approve_access(request_id: IdPath, ctx: Ctx, who: User, rid: RequestId) -> dict[str, Any]:
    """Approve someone else's request, for the policy's time (``[approval].ttl_s``)."""
    _may(who, ctx.access_policy.approvers)
    out = await asyncio.to_thread(
        access.approve_access, ctx.store, ctx.access_policy, who, request_id, ctx.clock.now(), rid
    )
    if out is None:
        raise HTTPException(404, f"no access request {request_id}")
    return out


@router.get("/audit/access-review", tags=["audit"])
async def access_review(
    ctx: Ctx,
    who: User,
    rid: RequestId,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """Who read whose positions in a time range, how often, for which purposes and on which
    bases; break-glass reads and approvals set out. Audited."""
    _may(who, ctx.access_policy.review_roles)
    t0, t1 = _range(since, until)

    def review() -> dict[str, Any]:
        out = access.access_review(ctx.store, t0, t1)
        ctx.store.audit_append(
            AuditEntry(
                actor=access.actor(who),
                role=who.role,
                action="access_review",
                subject="audit",
                purpose="audit",
                fields=[f"since={out['since'] or ''}", f"until={out['until'] or ''}"],
                at=ctx.clock.now(),
                request_id=rid,
            )
        )
        return out

    return await asyncio.to_thread(review)


@router.get("/people/{person_id}/position-reads", tags=["audit"])
async def position_reads(
    person_id: IdPath,
    ctx: Ctx,
    who: User,
    rid: RequestId,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """The reads of a person's positions, by role and purpose, never by reader: for the
    court and the person's counsel. Audited."""
    _may(who, ctx.access_policy.subject_report_roles)
    t0, t1 = _range(since, until)

    def report() -> dict[str, Any] | None:
        now = ctx.clock.now()
        out = access.subject_report(ctx.store, person_id, t0, t1, now)
        if out is not None:
            ctx.store.audit_append(
                AuditEntry(
                    actor=access.actor(who),
                    role=who.role,
                    action="subject_report",
                    subject=f"person:{person_id}",
                    purpose="subject_access",
                    fields=[f"reads={out['total']}"],
                    at=now,
                    request_id=rid,
                )
            )
        return out

    out = await asyncio.to_thread(report)
    if out is None:
        raise HTTPException(404, f"person {person_id} does not exist")
    return out
