"""Store methods for signing in: sessions with rotating refresh tokens, sign-in attempts
(for lockout and throttling) and TOTP second factors.

A mixin of :class:`~bangpae.adapters.store.store.Store`: every method runs in its own
transaction through the store's ``_read`` / ``_write`` helpers and has committed when
it returns. Refresh tokens are kept only as SHA-256 hashes, TOTP secrets only sealed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, Row, and_, delete, false, func, or_, select, true, update

from bangpae.adapters.store import schema as s
from bangpae.adapters.store.base import StoreBase
from bangpae.domain.errors import Conflict, Invalid, NotFound
from bangpae.services.auth import locked_until

# PostgreSQL advisory lock: checking the recent failures and recording an attempt is one step.
_LOCK_LOGIN = 0x62616E6770610010
KNOWN_SOURCE_S = 30 * 86400.0  # a name that signed in from an address within this is known there
UNLOCKED_S = 86400.0  # a name the control centre unlocked passes address locks this long
RefreshStatus = Literal["rotated", "reused", "inactive", "unknown"]


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A signed-in session, as the admin view shows it."""

    id: int
    user_id: int
    username: str
    role: str
    person_id: int | None
    scope: str
    created_at: float
    last_used_at: float
    expires_at: float
    revoked_at: float | None
    revoked_reason: str | None
    ip: str | None
    user_agent: str | None

    def as_dict(self) -> dict[str, Any]:
        """JSON for the admin view (no token material: there is none to give)."""
        return {
            "id": self.id,
            "user_id": self.user_id,
            "username": self.username,
            "role": self.role,
            "scope": self.scope,
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "revoked_reason": self.revoked_reason,
            "ip": self.ip,
            "user_agent": self.user_agent,
        }


@dataclass(frozen=True, slots=True)
class TotpRecord:
    """A user's TOTP second factor: the sealed secret, and whether it is confirmed."""

    user_id: int
    sealed_secret: str
    enabled_at: float | None
    last_step: int | None

    @property
    def enabled(self) -> bool:
        """Whether sign-in asks for a code."""
        return self.enabled_at is not None


def _clip(value: str | None, n: int) -> str | None:
    return None if value is None else value[:n]


class AuthStore(StoreBase):
    """Sessions, sign-in attempts and TOTP secrets."""

    # -- sign-in attempts ----------------------------------------------------------------

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
        """Record a sign-in attempt, or refuse it while the name or the address is locked.

        Returns the attempt's id and, when refused, when the lock ends. An admitted attempt
        is stored as ``failed`` until :meth:`finish_login_attempt` says otherwise, so
        attempts racing each other are all counted.

        Locks are per source (docs/robustness.md): failures for a name lock that name from
        that address only, so a stranger who knows her user name cannot keep her out from
        her own phone; failures from an address lock that address, except for a name that
        signed in from it before (a shared proxy or NAT does not lock out its known users)
        or that the control centre unlocked in the last day. A sign-in or an unlock starts
        the name's count afresh.
        """
        a = s.login_attempts
        username, ip = username[:64], ip[:64]
        with self._write() as c:
            self._pg_lock(c, _LOCK_LOGIN)
            last_ok = c.execute(
                select(func.max(a.c.at)).where(
                    and_(a.c.username == username, a.c.outcome.in_(("ok", "unlocked")))
                )
            ).scalar()
            # a successful sign-in starts the count afresh
            since_ok = a.c.at > last_ok if last_ok is not None else true()
            by_name = [
                float(x)
                for x in c.execute(
                    select(a.c.at)
                    .where(
                        and_(
                            a.c.username == username,
                            a.c.ip == ip,
                            a.c.outcome == "failed",
                            since_ok,
                        )
                    )
                    .order_by(a.c.at.desc())
                    .limit(max_failures)
                ).scalars()
            ]
            known_here = (
                c.execute(
                    select(a.c.id)
                    .where(
                        a.c.username == username,
                        or_(
                            and_(a.c.ip == ip, a.c.outcome == "ok", a.c.at > at - KNOWN_SOURCE_S),
                            and_(a.c.outcome == "unlocked", a.c.at > at - UNLOCKED_S),
                        ),
                    )
                    .limit(1)
                ).first()
                is not None
            )
            by_ip = (
                []
                if known_here
                else [
                    float(x)
                    for x in c.execute(
                        select(a.c.at)
                        .where(and_(a.c.ip == ip, a.c.outcome == "failed"))
                        .order_by(a.c.at.desc())
                        .limit(ip_max_failures)
                    ).scalars()
                ]
            )
            until = max(
                (
                    t
                    for t in (
                        locked_until(by_name, max_failures, window_s, lockout_s),
                        locked_until(by_ip, ip_max_failures, window_s, lockout_s),
                    )
                    if t is not None and t > at
                ),
                default=None,
            )
            r = c.execute(
                a.insert().values(
                    at=at,
                    username=username,
                    ip=ip,
                    outcome="locked" if until is not None else "failed",
                )
            )
            key = r.inserted_primary_key
            assert key is not None
            return int(key[0]), until

    def unlock_login(self, username: str, at: float) -> None:
        """End every lock on a name's sign-ins (the control centre, for a locked-out user)."""
        a = s.login_attempts
        with self._write() as c:
            c.execute(a.insert().values(at=at, username=username[:64], ip="-", outcome="unlocked"))

    def finish_login_attempt(self, attempt_id: int, outcome: str) -> None:
        """Set how an admitted attempt ended: ``ok``, ``failed`` or ``totp_required``."""
        a = s.login_attempts
        with self._write() as c:
            c.execute(update(a).where(a.c.id == attempt_id).values(outcome=outcome))

    def login_attempts(self, username: str) -> list[dict[str, Any]]:
        """Sign-in attempts for a name, oldest first (for review and tests)."""
        a = s.login_attempts
        with self._read() as c:
            rows = c.execute(select(a).where(a.c.username == username).order_by(a.c.id)).all()
        return [{"at": r.at, "ip": r.ip, "outcome": r.outcome} for r in rows]

    # -- sessions ------------------------------------------------------------------------

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
        with self._write() as c:
            r = c.execute(
                s.sessions.insert().values(
                    user_id=user_id,
                    scope=scope,
                    token_hash=token_hash,
                    created_at=at,
                    last_used_at=at,
                    expires_at=expires_at,
                    ip=_clip(ip, 64),
                    user_agent=_clip(user_agent, 200),
                )
            )
            key = r.inserted_primary_key
            assert key is not None
            return int(key[0])

    @staticmethod
    def _session(r: Row[Any]) -> SessionRecord:
        return SessionRecord(
            id=int(r.id),
            user_id=int(r.user_id),
            username=r.username,
            role=r.role,
            person_id=None if r.person_id is None else int(r.person_id),
            scope=r.scope,
            created_at=float(r.created_at),
            last_used_at=float(r.last_used_at),
            expires_at=float(r.expires_at),
            revoked_at=None if r.revoked_at is None else float(r.revoked_at),
            revoked_reason=r.revoked_reason,
            ip=r.ip,
            user_agent=r.user_agent,
        )

    @staticmethod
    def _session_query() -> Any:
        ss, u = s.sessions, s.users
        return select(ss, u.c.username, u.c.role, u.c.person_id, u.c.disabled).join(
            u, u.c.id == ss.c.user_id
        )

    def get_session(self, session_id: int) -> SessionRecord | None:
        """A session by id, active or not."""
        with self._read() as c:
            r = c.execute(self._session_query().where(s.sessions.c.id == session_id)).first()
        return None if r is None else self._session(r)

    def session_active(
        self,
        session_id: int,
        user_id: int,
        at: float,
        role: str | None = None,
        person_id: int | None = None,
    ) -> bool:
        """Whether a session is open at ``at`` and its user still enabled (one keyed lookup).

        With ``role``, the user must still hold that role and be that ``person_id``: a
        token says who its bearer was when it was issued, the store says who they are.
        """
        ss, u = s.sessions, s.users
        with self._read() as c:
            r = c.execute(
                select(ss.c.expires_at, ss.c.revoked_at, u.c.disabled, u.c.role, u.c.person_id)
                .join(u, u.c.id == ss.c.user_id)
                .where(and_(ss.c.id == session_id, ss.c.user_id == user_id))
            ).first()
        if r is None or r.revoked_at is not None or r.expires_at <= at or r.disabled:
            return False
        return role is None or (r.role == role and r.person_id == person_id)

    def active_sessions(self, at: float, limit: int = 1000) -> list[SessionRecord]:
        """Sessions open at ``at``, most recently used first."""
        ss, u = s.sessions, s.users
        q = (
            self._session_query()
            .where(and_(ss.c.revoked_at.is_(None), ss.c.expires_at > at, u.c.disabled == false()))
            .order_by(ss.c.last_used_at.desc(), ss.c.id.desc())
            .limit(max(0, limit))
        )
        with self._read() as c:
            return [self._session(r) for r in c.execute(q)]

    def rotate_refresh_token(
        self, old_hash: str, new_hash: str, at: float
    ) -> tuple[RefreshStatus, SessionRecord | None]:
        """Exchange a refresh token for a new one, once.

        ``rotated``: the session now answers to the new token only. ``reused``: the token
        was exchanged before, so a copy is in someone else's hands: the whole session is
        revoked. ``inactive``: revoked, expired or its user disabled. ``unknown``: never
        issued.
        """
        ss, u = s.sessions, s.users
        with self._write() as c:
            r = c.execute(
                select(ss, u.c.disabled)
                .join(u, u.c.id == ss.c.user_id)
                .where(ss.c.token_hash == old_hash)
                .with_for_update(of=ss)
            ).first()
            if r is None:
                sid = c.execute(
                    select(s.retired_refresh_tokens.c.session_id).where(
                        s.retired_refresh_tokens.c.token_hash == old_hash
                    )
                ).scalar()
                if sid is None:
                    return "unknown", None
                self._revoke(c, ss.c.id == sid, at, "refresh_token_reused")
                return "reused", self._one_session(c, int(sid))
            if r.revoked_at is not None or r.expires_at <= at or r.disabled:
                return "inactive", None
            c.execute(
                s.retired_refresh_tokens.insert().values(
                    token_hash=old_hash, session_id=r.id, retired_at=at
                )
            )
            c.execute(
                update(ss).where(ss.c.id == r.id).values(token_hash=new_hash, last_used_at=at)
            )
            return "rotated", self._one_session(c, int(r.id))

    def _one_session(self, c: Connection, session_id: int) -> SessionRecord:
        return self._session(
            c.execute(self._session_query().where(s.sessions.c.id == session_id)).one()
        )

    @staticmethod
    def _revoke(c: Connection, where: Any, at: float, reason: str) -> int:
        ss = s.sessions
        r = c.execute(
            update(ss)
            .where(and_(where, ss.c.revoked_at.is_(None)))
            .values(revoked_at=at, revoked_reason=reason[:32])
        )
        return int(r.rowcount)

    def revoke_session(self, session_id: int, at: float, reason: str) -> bool:
        """Revoke one session; False if it was revoked already (NotFound if it never was)."""
        with self._write() as c:
            if (
                c.execute(select(s.sessions.c.id).where(s.sessions.c.id == session_id)).first()
                is None
            ):
                raise NotFound(f"session {session_id} does not exist")
            return self._revoke(c, s.sessions.c.id == session_id, at, reason) == 1

    def revoke_session_by_token(self, token_hash: str, at: float, reason: str) -> int | None:
        """Revoke the session a refresh token (current or retired) belongs to; its id."""
        ss, rt = s.sessions, s.retired_refresh_tokens
        with self._write() as c:
            sid = c.execute(select(ss.c.id).where(ss.c.token_hash == token_hash)).scalar()
            if sid is None:
                sid = c.execute(
                    select(rt.c.session_id).where(rt.c.token_hash == token_hash)
                ).scalar()
            if sid is None:
                return None
            self._revoke(c, ss.c.id == sid, at, reason)
            return int(sid)

    def revoke_user_sessions(
        self, user_id: int, at: float, reason: str, keep: int | None = None
    ) -> int:
        """Revoke every open session of a user (but ``keep``); how many were open."""
        ss = s.sessions
        where = ss.c.user_id == user_id
        if keep is not None:
            where = and_(where, ss.c.id != keep)
        with self._write() as c:
            return self._revoke(c, where, at, reason)

    def orders_ended_between(self, after: float, until: float) -> list[int]:
        """The ids of the orders whose ``valid_until`` fell in ``(after, until]``."""
        o = s.orders
        q = select(o.c.id).where(and_(o.c.valid_until > after, o.c.valid_until <= until))
        with self._read() as c:
            return [int(r.id) for r in c.execute(q.order_by(o.c.id))]

    def revoke_order_sessions(self, order_id: int, at: float, reason: str = "order_ended") -> int:
        """Revoke the sessions of an order's offender and victim when the order ends.

        A party still protected by, or subject to, another order in force at ``at`` keeps
        signing in. Returns how many sessions were revoked.
        """
        o, u, ss = s.orders, s.users, s.sessions
        with self._write() as c:
            r = c.execute(select(o.c.offender_id, o.c.victim_id).where(o.c.id == order_id)).first()
            if r is None:
                raise NotFound(f"order {order_id} does not exist")
            parties = {int(r.offender_id), int(r.victim_id)}
            in_force = and_(
                o.c.id != order_id,
                or_(o.c.valid_from.is_(None), o.c.valid_from <= at),
                or_(o.c.valid_until.is_(None), o.c.valid_until > at),
            )
            still = {
                int(x)
                for row in c.execute(
                    select(o.c.offender_id, o.c.victim_id).where(
                        and_(
                            in_force,
                            or_(o.c.offender_id.in_(parties), o.c.victim_id.in_(parties)),
                        )
                    )
                )
                for x in row
            }
            people = parties - still
            if not people:
                return 0
            users = select(u.c.id).where(u.c.person_id.in_(people)).scalar_subquery()
            return self._revoke(c, ss.c.user_id.in_(users), at, reason)

    # -- accounts ------------------------------------------------------------------------

    def set_user_disabled(self, user_id: int, disabled: bool, at: float) -> int:
        """Disable (revoking every session at once) or re-enable a user; sessions revoked."""
        u = s.users
        with self._write() as c:
            r = c.execute(update(u).where(u.c.id == user_id).values(disabled=disabled))
            if r.rowcount == 0:
                raise NotFound(f"user {user_id} does not exist")
            if not disabled:
                return 0
            return self._revoke(c, s.sessions.c.user_id == user_id, at, "user_disabled")

    def set_password_hash(self, user_id: int, password_hash: str) -> None:
        """Replace a user's password hash."""
        u = s.users
        with self._write() as c:
            r = c.execute(update(u).where(u.c.id == user_id).values(password_hash=password_hash))
            if r.rowcount == 0:
                raise NotFound(f"user {user_id} does not exist")

    def pins(self, user_id: int) -> tuple[str | None, str | None]:
        """A user's app-lock and duress PIN hashes (docs/sos.md)."""
        u = s.users
        with self._read() as c:
            r = c.execute(
                select(u.c.app_pin_hash, u.c.duress_pin_hash).where(u.c.id == user_id)
            ).first()
        if r is None:
            raise NotFound(f"user {user_id} does not exist")
        return r.app_pin_hash, r.duress_pin_hash

    def set_pins(self, user_id: int, app_pin_hash: str | None, duress_pin_hash: str | None) -> None:
        """Replace a user's app-lock and duress PIN hashes (None: no such PIN)."""
        u = s.users
        for value in (app_pin_hash, duress_pin_hash):
            if value is not None and len(value) > 200:
                raise Invalid("a PIN hash is at most 200 characters")
        with self._write() as c:
            r = c.execute(
                update(u)
                .where(u.c.id == user_id)
                .values(app_pin_hash=app_pin_hash, duress_pin_hash=duress_pin_hash)
            )
            if r.rowcount == 0:
                raise NotFound(f"user {user_id} does not exist")

    # -- TOTP ----------------------------------------------------------------------------

    def totp(self, user_id: int) -> TotpRecord | None:
        """A user's TOTP factor, confirmed or pending; None if never enrolled."""
        t = s.user_totp
        with self._read() as c:
            r = c.execute(select(t).where(t.c.user_id == user_id)).first()
        if r is None:
            return None
        return TotpRecord(
            int(r.user_id),
            r.secret,
            None if r.enabled_at is None else float(r.enabled_at),
            None if r.last_step is None else int(r.last_step),
        )

    def save_totp_secret(self, user_id: int, sealed_secret: str, at: float) -> None:
        """Keep a new, unconfirmed TOTP secret (replacing a pending one, never a confirmed one)."""
        t = s.user_totp
        with self._write() as c:
            r = c.execute(select(t.c.enabled_at).where(t.c.user_id == user_id)).first()
            if r is not None and r.enabled_at is not None:
                raise Conflict("a second factor is enrolled already: an admin can reset it")
            c.execute(delete(t).where(t.c.user_id == user_id))
            c.execute(
                t.insert().values(
                    user_id=user_id, secret=sealed_secret, created_at=at, enabled_at=None
                )
            )

    def use_totp_step(self, user_id: int, step: int, at: float, enable: bool = False) -> bool:
        """Accept a code's time step once: False if that step or a later one was used before.

        With ``enable``, a pending factor is confirmed by the same step.
        """
        t = s.user_totp
        values: dict[str, Any] = {"last_step": step}
        where = and_(t.c.user_id == user_id, or_(t.c.last_step.is_(None), t.c.last_step < step))
        if enable:
            values["enabled_at"] = at
            where = and_(where, t.c.enabled_at.is_(None))
        else:
            where = and_(where, t.c.enabled_at.is_not(None))
        with self._write() as c:
            return int(c.execute(update(t).where(where).values(**values)).rowcount) == 1

    def delete_totp(self, user_id: int) -> bool:
        """Remove a user's second factor (an admin's reset); whether there was one."""
        t = s.user_totp
        with self._write() as c:
            return int(c.execute(delete(t).where(t.c.user_id == user_id)).rowcount) == 1
