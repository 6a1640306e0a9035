"""Signing in: login, refresh, logout, TOTP enrolment, password change; the admin's
view of sessions. Thin routes over :mod:`bangpae.services.sessions`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from bangpae.api import problems
from bangpae.api.context import RouteContext
from bangpae.api.deps import (
    Ctx,
    RequestId,
    any_scope_principal,
    audit_admin,
    principal,
    require,
)
from bangpae.api.schemas import IdPath, LoginRequest, Strict, TokenPublic
from bangpae.domain.accounts import SessionRecord
from bangpae.domain.disclosure import iso
from bangpae.services import sessions
from bangpae.services.auth import Principal, read_token
from bangpae.services.passwords import PoolBusy
from bangpae.services.sessions import AuthError, Issued

T = TypeVar("T")

router = APIRouter(prefix="/api/v1")
Admin = Annotated[Principal, Depends(require("admin"))]
Caller = Annotated[Principal, Depends(principal)]
Enrolling = Annotated[Principal, Depends(any_scope_principal)]
_bearer = HTTPBearer(auto_error=False)


class RefreshRequest(Strict):
    """A refresh token to exchange (it works once)."""

    refresh_token: str = Field(min_length=16, max_length=128)


class LogoutRequest(Strict):
    """The refresh token of the session to end (optional with a bearer token)."""

    refresh_token: str | None = Field(None, max_length=128)


class TotpEnrolment(BaseModel):
    """A new TOTP secret, shown once: scan the URI (as a QR code) or type the secret."""

    otpauth_uri: str
    secret: str


class TotpConfirm(Strict):
    """A code from the newly enrolled authenticator."""

    code: str = Field(pattern=r"^\d{6}$")


class PasswordChange(Strict):
    """The current password and a new one (12-128 characters, not common)."""

    current_password: str = Field(min_length=1, max_length=256)
    new_password: str = Field(min_length=1, max_length=256)


def _refusal(e: AuthError) -> JSONResponse:
    response = problems.problem(e.status, e.detail, code=e.code)
    if e.retry_after is not None:
        response.headers["Retry-After"] = str(e.retry_after)
    return response


async def _in_password_pool(ctx: RouteContext, fn: Callable[..., T], *args: Any) -> T:
    """Work that checks or hashes a password, in the password pool (docs/robustness.md):
    when it is full the caller is told to retry, and nothing else waits."""
    try:
        return await ctx.passwords.run(fn, *args)
    except PoolBusy:
        raise AuthError(503, "busy", "too many sign-ins at once: retry in a moment", 1) from None


def _public(t: Issued) -> TokenPublic:
    return TokenPublic(
        access_token=t.access_token,
        expires_in=t.expires_in,
        role=t.role,
        refresh_token=t.refresh_token,
        refresh_expires_in=t.refresh_expires_in,
        scope="full" if t.scope == "full" else "totp_enrol",
    )


_REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Refused (problem+json with a `code`)"},
    429: {"description": "Locked after too many failures; see Retry-After"},
    503: {"description": "Too many sign-ins at once; see Retry-After"},
}


@router.post("/auth/login", response_model=TokenPublic, tags=["auth"], responses=_REFUSALS)
async def login(body: LoginRequest, request: Request, ctx: Ctx) -> Any:
    """Exchange a username and password (and a TOTP code, once enrolled) for tokens."""
    now = ctx.clock.now()
    ip = request.client.host if request.client else "unknown"
    busy = AuthError(503, "busy", "too many sign-ins at once: retry in a moment", 1)
    try:
        if ctx.passwords.full():
            raise busy
        # the locks are checked outside the password pool: an attempt they refuse costs
        # no password work, and must not take the place of one that does
        attempt = await asyncio.to_thread(
            sessions.begin_login, ctx.store, ctx.settings, now, body.username, ip
        )
        try:
            issued = await ctx.passwords.run(
                sessions.finish_login,
                ctx.store,
                ctx.settings,
                ctx.secret,
                now,
                attempt,
                body.username,
                body.password,
                body.totp,
                ip,
                request.headers.get("user-agent"),
            )
        except PoolBusy:  # not tried: not a failure
            await asyncio.to_thread(ctx.store.finish_login_attempt, attempt, "busy")
            raise busy from None
    except AuthError as e:
        return _refusal(e)
    return _public(issued)


@router.post("/auth/refresh", response_model=TokenPublic, tags=["auth"], responses=_REFUSALS)
async def refresh(body: RefreshRequest, ctx: Ctx) -> Any:
    """A new access token and refresh token for a refresh token, which is then spent.

    Presenting a spent refresh token ends the whole session: a copy is in other hands.
    """
    try:
        issued = await asyncio.to_thread(
            sessions.refresh,
            ctx.store,
            ctx.settings,
            ctx.secret,
            ctx.clock.now(),
            body.refresh_token,
        )
    except AuthError as e:
        return _refusal(e)
    return _public(issued)


@router.post("/auth/logout", status_code=204, tags=["auth"])
async def logout(
    ctx: Ctx,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    body: LogoutRequest | None = None,
) -> Response:
    """End the session of the bearer token or of the refresh token; always 204."""
    now = ctx.clock.now()
    who = read_token(creds.credentials, ctx.secret, now) if creds else None
    await asyncio.to_thread(
        sessions.logout,
        ctx.store,
        now,
        who.sid if who else None,
        body.refresh_token if body else None,
    )
    return Response(status_code=204)


@router.post("/auth/totp/enrol", response_model=TotpEnrolment, tags=["auth"])
async def totp_enrol(ctx: Ctx, who: Enrolling) -> Any:
    """Start enrolling a TOTP authenticator (the secret is never shown again)."""
    try:
        secret, uri = await asyncio.to_thread(
            sessions.enrol_totp, ctx.store, ctx.secret, who, ctx.clock.now()
        )
    except AuthError as e:
        return _refusal(e)
    return TotpEnrolment(otpauth_uri=uri, secret=secret)


@router.post("/auth/totp/confirm", tags=["auth"])
async def totp_confirm(body: TotpConfirm, ctx: Ctx, who: Enrolling, rid: RequestId) -> Any:
    """Turn the enrolled authenticator on with one of its codes; then sign in again."""
    try:
        ended = await asyncio.to_thread(
            sessions.confirm_totp, ctx.store, ctx.secret, who, body.code, ctx.clock.now()
        )
    except AuthError as e:
        return _refusal(e)
    audit_admin(ctx, who, "enable_totp", f"user:{who.user_id}", ["totp"], rid)
    return {"enabled": True, "sessions_ended": ended}


@router.post("/auth/password", status_code=204, tags=["auth"])
async def change_password(body: PasswordChange, ctx: Ctx, who: Caller, rid: RequestId) -> Response:
    """Change one's own password; the user's other sessions end."""
    try:
        await _in_password_pool(
            ctx,
            sessions.change_password,
            ctx.store,
            who,
            body.current_password,
            body.new_password,
            ctx.clock.now(),
        )
    except AuthError as e:
        return _refusal(e)
    audit_admin(ctx, who, "change_password", f"user:{who.user_id}", ["password_hash"], rid)
    return Response(status_code=204)


# -- the admin's view -------------------------------------------------------------------


def _session_public(r: SessionRecord, current: int | None) -> dict[str, Any]:
    d = r.as_dict()
    for key in ("created_at", "last_used_at", "expires_at"):
        d[key] = iso(d[key])
    d.pop("revoked_at")
    d.pop("revoked_reason")
    return {**d, "current": r.id == current}


@router.get("/admin/sessions", tags=["admin"])
async def list_sessions(ctx: Ctx, who: Admin, rid: RequestId) -> dict[str, Any]:
    """Sessions in force: who, role, since when, last refreshed, from where."""
    rows = await asyncio.to_thread(ctx.store.active_sessions, ctx.clock.now())
    audit_admin(ctx, who, "list_sessions", "sessions", ["user", "role", "ip", "user_agent"], rid)
    return {"sessions": [_session_public(r, who.sid) for r in rows]}


@router.post("/admin/sessions/{session_id}/revoke", tags=["admin"])
async def revoke_session(
    session_id: IdPath, ctx: Ctx, who: Admin, rid: RequestId
) -> dict[str, Any]:
    """End a session now: its access tokens stop working at once, its refresh token too."""
    was_open = await asyncio.to_thread(
        ctx.store.revoke_session, session_id, ctx.clock.now(), "revoked_by_admin"
    )
    audit_admin(ctx, who, "revoke_session", f"session:{session_id}", ["revoked_at"], rid)
    return {"id": session_id, "revoked": True, "was_open": was_open}


ControlCentre = Annotated[Principal, Depends(require("admin", "supervisor", "operator"))]


@router.post("/admin/users/{user_id}/unlock", tags=["admin"])
async def unlock_user(user_id: IdPath, ctx: Ctx, who: ControlCentre, rid: RequestId) -> Any:
    """End the sign-in locks on a user's name, from every address (a victim locked out by
    someone who knows her user name); her sessions were never affected."""
    user = await asyncio.to_thread(ctx.store.get_user, user_id)
    if user is None:
        raise HTTPException(404, f"user {user_id} does not exist")
    await asyncio.to_thread(ctx.store.unlock_login, user.username, ctx.clock.now())
    audit_admin(ctx, who, "user_unlock", f"user:{user_id}", ["login_locks"], rid)
    return {"id": user_id, "action": "unlock"}


@router.post("/admin/users/{user_id}/{action}", tags=["admin"])
async def user_action(
    user_id: IdPath, action: str, ctx: Ctx, who: Admin, rid: RequestId
) -> dict[str, Any]:
    """disable (every session ends at once), enable, or reset-totp (the user enrols anew)."""
    now = ctx.clock.now()
    if action in ("disable", "enable"):
        ended = await asyncio.to_thread(
            ctx.store.set_user_disabled, user_id, action == "disable", now
        )
        fields = ["disabled"]
    elif action == "reset-totp":
        if not await asyncio.to_thread(ctx.store.delete_totp, user_id):
            raise HTTPException(404, f"user {user_id} has no second factor")
        ended = await asyncio.to_thread(
            ctx.store.revoke_user_sessions, user_id, now, "second_factor_reset"
        )
        fields = ["totp"]
    else:
        raise HTTPException(404, f"no action {action!r}")
    audit_admin(ctx, who, f"user_{action.replace('-', '_')}", f"user:{user_id}", fields, rid)
    return {"id": user_id, "action": action, "sessions_ended": ended}


@router.get("/me", tags=["auth"])
async def me(who: Caller) -> dict[str, Any]:
    """Who the token belongs to."""
    return {
        "user_id": who.user_id,
        "username": who.username,
        "role": who.role,
        "person_id": who.person_id,
        "server_time": iso(time.time()),
    }
