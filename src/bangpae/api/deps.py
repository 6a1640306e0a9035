"""Dependencies: the application context and the authenticated principal."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from bangpae.services.auth import Principal, read_token

_bearer = HTTPBearer(auto_error=False)


def get_ctx(request: Request) -> Any:
    """The application context built by the composition root."""
    return request.app.state.ctx


Ctx = Annotated[Any, Depends(get_ctx)]


def request_id(request: Request) -> str:
    """The caller's X-Request-ID, or a fresh one."""
    rid = request.headers.get("x-request-id", "")[:64]
    return rid or secrets.token_hex(8)


RequestId = Annotated[str, Depends(request_id)]


def principal(
    ctx: Ctx, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """The caller, from a valid bearer token; 401 otherwise."""
    if creds is None or creds.scheme.lower() != "bearer":
        raise HTTPException(401, "a bearer token is required")
    who = read_token(creds.credentials, ctx.secret, ctx.clock.now())
    if who is None:
        raise HTTPException(401, "the token is invalid or expired")
    return who


def require(*roles: str) -> Callable[..., Principal]:
    """A dependency admitting only these roles (403 for any other valid token)."""
    allowed = frozenset(roles)

    def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
        if who.role not in allowed:
            raise HTTPException(403, f"role {who.role!r} may not do this")
        return who

    return check
