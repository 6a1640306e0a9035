"""Dependencies: the application context and the authenticated principal."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from bangpae.api.context import RouteContext
from bangpae.domain.audit import AuditEntry
from bangpae.services.auth import SCOPE_FULL, Principal, read_token

_bearer = HTTPBearer(auto_error=False)


def get_ctx(request: Request) -> RouteContext:
    """The application context built by the composition root."""
    ctx: RouteContext = request.app.state.ctx
    return ctx


Ctx = Annotated[RouteContext, Depends(get_ctx)]


def request_id(request: Request) -> str:
    """The caller's X-Request-ID, or a fresh one."""
    rid = request.headers.get("x-request-id", "")[:64]
    return rid or secrets.token_hex(8)


RequestId = Annotated[str, Depends(request_id)]


def authenticate(ctx: RouteContext, token: str) -> Principal | None:
    """The principal of a valid token whose session is open and whose user is enabled.

    A signed, unexpired token is not enough: its session may have been revoked (logout,
    refresh-token reuse, an admin), its user disabled, or its role and person no longer
    the stored user's. One keyed lookup per request.
    """
    now = ctx.clock.now()
    who = read_token(token, ctx.secret, now)
    if who is None or who.sid is None:
        return None
    active = ctx.store.session_active(who.sid, who.user_id, now, who.role, who.person_id)
    return who if active else None


def any_scope_principal(
    ctx: Ctx, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """The caller, even one whose token only allows enrolling a second factor; 401 otherwise."""
    if creds is None or creds.scheme.lower() != "bearer":
        raise HTTPException(401, "a bearer token is required")
    who = authenticate(ctx, creds.credentials)
    if who is None:
        raise HTTPException(401, "the token is invalid or expired, or its session has ended")
    return who


def principal(who: Annotated[Principal, Depends(any_scope_principal)]) -> Principal:
    """The caller, from a valid bearer token of a full session; 401 (or 403) otherwise."""
    if who.scope != SCOPE_FULL:
        raise HTTPException(
            403, "enrol a second factor first: POST /api/v1/auth/totp/enrol, then confirm it"
        )
    return who


def require(*roles: str) -> Callable[..., Principal]:
    """A dependency admitting only these roles (403 for any other valid token)."""
    allowed = frozenset(roles)

    def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
        if who.role not in allowed:
            raise HTTPException(403, f"role {who.role!r} may not do this")
        return who

    return check


def audit_admin(
    ctx: RouteContext, who: Principal, action: str, subject: str, fields: list[str], rid: str
) -> None:
    """The audit record of an administrative change (or an admin's read of sessions)."""
    ctx.store.audit_append(
        AuditEntry(
            actor=f"user:{who.user_id}:{who.username}",
            role=who.role,
            action=action,
            subject=subject,
            purpose="administration",
            fields=fields,
            at=ctx.clock.now(),
            request_id=rid,
        )
    )
