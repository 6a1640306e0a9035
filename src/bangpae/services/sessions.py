"""Signing in and staying signed in (OWASP ASVS 4.0 level 2).

- :func:`login`: password (and a TOTP code where enrolled) for a short-lived access token
  and a refresh token. Five failures for a user name within 15 minutes lock it for 15
  minutes, whether or not the user exists, and too many failures from one address block
  that address; locked attempts are refused unchecked and do not extend the lock.
- :func:`refresh`: a refresh token works once. Exchanging it returns a new pair; a token
  presented a second time means a copy leaked, and ends the whole session.
- :func:`logout`, TOTP enrolment (:func:`enrol_totp`, :func:`confirm_totp`) and
  :func:`change_password`.

Time is an argument; the store is the port (see ``adapters.store.auth``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from bangpae.domain.audit import AuditEntry
from bangpae.services.auth import (
    SCOPE_ENROL,
    SCOPE_FULL,
    SHORT_SESSION_ROLES,
    TOTP_REQUIRED_ROLES,
    TOTP_ROLES,
    Principal,
    WeakPassword,
    issue_token,
    new_password_hash,
    new_refresh_token,
    new_totp_secret,
    open_secret,
    seal_secret,
    token_hash,
    totp_step,
    totp_uri,
    verify_password,
)
from bangpae.services.ratelimit import source_key

log = logging.getLogger(__name__)
REFUSED = "unknown user or wrong password"


class AuthError(Exception):
    """A refusal, with the HTTP status, a stable code for clients, and a plain message."""

    def __init__(self, status: int, code: str, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Issued:
    """A new access token and the refresh token to get the next one."""

    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    role: str
    scope: str
    session_id: int


def session_ttl_s(settings: Any, role: str) -> int:
    """How long a sign-in of this role lasts: one shift for staff, weeks on a phone."""
    return int(
        settings.session_ttl_staff_s if role in SHORT_SESSION_ROLES else settings.session_ttl_s
    )


def _issue(
    settings: Any,
    secret: bytes,
    who: Principal,
    refresh_token: str,
    expires_at: float,
    now: float,
) -> Issued:
    # An access token never outlives its session.
    ttl = max(1, min(int(settings.token_ttl_s), int(expires_at - now)))
    return Issued(
        access_token=issue_token(who, secret, now, ttl),
        expires_in=ttl,
        refresh_token=refresh_token,
        refresh_expires_in=max(0, int(expires_at - now)),
        role=who.role,
        scope=who.scope,
        session_id=int(who.sid or 0),
    )


def open_session(
    store: Any,
    settings: Any,
    secret: bytes,
    user: Any,
    scope: str,
    now: float,
    ip: str | None = None,
    user_agent: str | None = None,
) -> Issued:
    """Start a session for a user who has proved who they are, and issue its first tokens."""
    refresh_token = new_refresh_token()
    expires_at = now + session_ttl_s(settings, user.role)
    sid = store.open_session(
        user.id, scope, token_hash(refresh_token), now, expires_at, ip, user_agent
    )
    who = Principal(user.id, user.username, user.role, user.person_id, sid, scope)
    return _issue(settings, secret, who, refresh_token, expires_at, now)


def _throttled(until: float, now: float) -> AuthError:
    return AuthError(
        429,
        "login_throttled",
        "too many failed sign-ins: try again later",
        retry_after=max(1, math.ceil(until - now)),
    )


def login(
    store: Any,
    settings: Any,
    secret: bytes,
    now: float,
    username: str,
    password: str,
    totp: str | None,
    ip: str,
    user_agent: str | None = None,
) -> Issued:
    """Check a password (and TOTP code) under lockout rules; open a session on success."""
    attempt = begin_login(store, settings, now, username, ip)
    return finish_login(
        store, settings, secret, now, attempt, username, password, totp, ip, user_agent
    )


def begin_login(store: Any, settings: Any, now: float, username: str, ip: str) -> int:
    """Record a sign-in attempt, or refuse it while a lock holds (no password work: a
    refused attempt must not take a place in the password pool)."""
    attempt, until = store.begin_login_attempt(
        username,
        source_key(ip),  # an IPv6 address by its /64: one subscriber, one source
        now,
        max_failures=settings.login_max_failures,
        ip_max_failures=settings.login_ip_max_failures,
        window_s=settings.login_window_s,
        lockout_s=settings.login_lockout_s,
    )
    if until is not None:
        raise _throttled(until, now)
    return int(attempt)


def finish_login(
    store: Any,
    settings: Any,
    secret: bytes,
    now: float,
    attempt: int,
    username: str,
    password: str,
    totp: str | None,
    ip: str,
    user_agent: str | None = None,
) -> Issued:
    """The password (and TOTP) check of an attempt :func:`begin_login` admitted."""
    user = store.get_user_by_name(username)
    ok = verify_password(user.password_hash if user else None, password)
    if not ok or user is None or user.disabled:
        raise AuthError(401, "login_failed", REFUSED)  # the attempt stays a failure
    factor = store.totp(user.id) if user.role in TOTP_ROLES else None
    if factor is not None and factor.enabled:
        if not totp:
            # The password was right: not a failure, but not a sign-in either.
            store.finish_login_attempt(attempt, "totp_required")
            raise AuthError(
                401, "totp_required", "a one-time code from the authenticator app is required"
            )
        plain = open_secret(secret, factor.sealed_secret)
        step = totp_step(plain, totp, now) if plain else None
        if step is None or not store.use_totp_step(user.id, step, now):
            raise AuthError(401, "totp_invalid", "the one-time code is wrong or was used already")
        scope = SCOPE_FULL
    elif settings.require_totp_for_staff and user.role in TOTP_REQUIRED_ROLES:
        scope = SCOPE_ENROL
    else:
        scope = SCOPE_FULL
    store.finish_login_attempt(attempt, "ok")
    return open_session(store, settings, secret, user, scope, now, ip, user_agent)


def refresh(store: Any, settings: Any, secret: bytes, now: float, refresh_token: str) -> Issued:
    """Exchange a refresh token for a new access token and refresh token, once."""
    new = new_refresh_token()
    status, session = store.rotate_refresh_token(token_hash(refresh_token), token_hash(new), now)
    if status == "reused":
        log.warning("refresh token of session %s presented twice: session revoked", session.id)
        store.audit_append(
            AuditEntry(
                actor=f"user:{session.user_id}:{session.username}",
                role=session.role,
                action="refresh_token_reused",
                subject=f"session:{session.id}",
                purpose="security",
                fields=["session revoked"],
                at=now,
            )
        )
    if status != "rotated":
        raise AuthError(401, "session_ended", "the sign-in has ended: sign in again")
    who = Principal(
        session.user_id,
        session.username,
        session.role,
        session.person_id,
        session.id,
        session.scope,
    )
    return _issue(settings, secret, who, new, session.expires_at, now)


def logout(store: Any, now: float, sid: int | None, refresh_token: str | None) -> None:
    """End the session of an access token or of a refresh token (either will do)."""
    if sid is not None:
        store.revoke_session(sid, now, "logout")
    elif refresh_token:
        store.revoke_session_by_token(token_hash(refresh_token), now, "logout")


def enrol_totp(store: Any, secret: bytes, who: Principal, now: float) -> tuple[str, str]:
    """Make a new TOTP secret for the caller: (secret, otpauth:// URI), shown this once."""
    if who.role not in TOTP_ROLES:
        raise AuthError(403, "totp_not_for_role", f"role {who.role!r} does not use TOTP")
    plain = new_totp_secret()
    store.save_totp_secret(who.user_id, seal_secret(secret, plain), now)
    return plain, totp_uri(plain, who.username)


def confirm_totp(store: Any, secret: bytes, who: Principal, code: str, now: float) -> int:
    """Turn the pending TOTP factor on with a code from it; every session of the user ends.

    Returns how many sessions were ended (the caller signs in again, with a code).
    """
    factor = store.totp(who.user_id)
    if factor is None or factor.enabled:
        raise AuthError(409, "totp_nothing_pending", "enrol first: no second factor is pending")
    plain = open_secret(secret, factor.sealed_secret)
    step = totp_step(plain, code, now) if plain else None
    if step is None or not store.use_totp_step(who.user_id, step, now, enable=True):
        raise AuthError(422, "totp_invalid", "the one-time code is wrong or was used already")
    return int(store.revoke_user_sessions(who.user_id, now, "second_factor_enrolled"))


def change_password(store: Any, who: Principal, current: str, new: str, now: float) -> int:
    """Replace the caller's password (checking the current one and the policy).

    Every other session of the user ends; returns how many.
    """
    user = store.get_user(who.user_id)
    if user is None or not verify_password(user.password_hash, current):
        raise AuthError(403, "wrong_password", "the current password is wrong")
    try:
        store.set_password_hash(who.user_id, new_password_hash(new, user.username))
    except WeakPassword as exc:
        raise AuthError(422, "weak_password", str(exc)) from None
    return int(store.revoke_user_sessions(who.user_id, now, "password_changed", keep=who.sid))
