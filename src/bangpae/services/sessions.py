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
from typing import Protocol

from bangpae.domain.accounts import RefreshStatus, SessionRecord, TotpRecord, UserRecord
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
from bangpae.services.ports import AuditLog
from bangpae.services.ratelimit import source_key

log = logging.getLogger(__name__)
REFUSED = "unknown user or wrong password"


class SessionSettings(Protocol):
    """The settings of signing in (``BANGPAE_*``, see ``config``)."""

    token_ttl_s: int
    session_ttl_staff_s: int
    session_ttl_s: int
    require_totp_for_staff: bool
    login_max_failures: int
    login_ip_max_failures: int
    login_window_s: float
    login_lockout_s: float


class Accounts(AuditLog, Protocol):
    """What signing in reads and writes of the store (``adapters.store.auth``, ``sessions``)."""

    def begin_login_attempt(
        self,
        username: str,
        ip: str,
        at: float,
        *,
        max_failures: int,
        ip_max_failures: int,
        window_s: float,
        lockout_s: float,
    ) -> tuple[int, float | None]:
        """Record a sign-in attempt, or refuse it while the name or the address is locked."""
        ...

    def finish_login_attempt(self, attempt_id: int, outcome: str) -> None:
        """Set how an admitted attempt ended: ``ok``, ``failed`` or ``totp_required``."""
        ...

    def get_user(self, user_id: int) -> UserRecord | None:
        """A login by id."""
        ...

    def get_user_by_name(self, username: str) -> UserRecord | None:
        """A login by username."""
        ...

    def set_password_hash(self, user_id: int, password_hash: str) -> None:
        """Replace a user's password hash."""
        ...

    def totp(self, user_id: int) -> TotpRecord | None:
        """A user's TOTP factor, confirmed or pending; None if never enrolled."""
        ...

    def save_totp_secret(self, user_id: int, sealed_secret: str, at: float) -> None:
        """Keep a new, unconfirmed TOTP secret (replacing a pending one, never a confirmed one)."""
        ...

    def use_totp_step(self, user_id: int, step: int, at: float, enable: bool = False) -> bool:
        """Accept a code's time step once: False if that step or a later one was used before."""
        ...

    def open_session(
        self,
        user_id: int,
        scope: str,
        token_hash: str,
        at: float,
        expires_at: float,
        ip: str | None = None,
        user_agent: str | None = None,
    ) -> int:
        """Start a session whose refresh token has this hash; returns its id."""
        ...

    def rotate_refresh_token(
        self, old_hash: str, new_hash: str, at: float
    ) -> tuple[RefreshStatus, SessionRecord | None]:
        """Exchange a refresh token for a new one, once."""
        ...

    def revoke_session(self, session_id: int, at: float, reason: str) -> bool:
        """Revoke one session; False if it was revoked already (NotFound if it never was)."""
        ...

    def revoke_session_by_token(self, token_hash: str, at: float, reason: str) -> int | None:
        """Revoke the session a refresh token (current or retired) belongs to; its id."""
        ...

    def revoke_user_sessions(
        self, user_id: int, at: float, reason: str, keep: int | None = None
    ) -> int:
        """Revoke every open session of a user (but ``keep``); how many were open."""
        ...


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


def session_ttl_s(settings: SessionSettings, role: str) -> int:
    """How long a sign-in of this role lasts: one shift for staff, weeks on a phone."""
    return int(
        settings.session_ttl_staff_s if role in SHORT_SESSION_ROLES else settings.session_ttl_s
    )


def _issue(
    settings: SessionSettings,
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
    store: Accounts,
    settings: SessionSettings,
    secret: bytes,
    user: UserRecord,
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
    store: Accounts,
    settings: SessionSettings,
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


def begin_login(
    store: Accounts, settings: SessionSettings, now: float, username: str, ip: str
) -> int:
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
    store: Accounts,
    settings: SessionSettings,
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


def refresh(
    store: Accounts, settings: SessionSettings, secret: bytes, now: float, refresh_token: str
) -> Issued:
    """Exchange a refresh token for a new access token and refresh token, once."""
    new = new_refresh_token()
    status, session = store.rotate_refresh_token(token_hash(refresh_token), token_hash(new), now)
    if status == "reused" and session is not None:
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
    if status != "rotated" or session is None:
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


def logout(store: Accounts, now: float, sid: int | None, refresh_token: str | None) -> None:
    """End the session of an access token or of a refresh token (either will do)."""
    if sid is not None:
        store.revoke_session(sid, now, "logout")
    elif refresh_token:
        store.revoke_session_by_token(token_hash(refresh_token), now, "logout")


def enrol_totp(store: Accounts, secret: bytes, who: Principal, now: float) -> tuple[str, str]:
    """Make a new TOTP secret for the caller: (secret, otpauth:// URI), shown this once."""
    if who.role not in TOTP_ROLES:
        raise AuthError(403, "totp_not_for_role", f"role {who.role!r} does not use TOTP")
    plain = new_totp_secret()
    store.save_totp_secret(who.user_id, seal_secret(secret, plain), now)
    return plain, totp_uri(plain, who.username)


def confirm_totp(store: Accounts, secret: bytes, who: Principal, code: str, now: float) -> int:
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


def change_password(store: Accounts, who: Principal, current: str, new: str, now: float) -> int:
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
