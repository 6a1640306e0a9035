"""Store methods for accounts and signing in: users with their passwords and PINs,
sign-in attempts (for lockout and throttling) and TOTP second factors.

A mixin of :class:`~bangpae.adapters.store.store.Store`: every method runs in its own
transaction through the store's ``_read`` / ``_write`` helpers and has committed when
it returns. TOTP secrets are kept only sealed; sessions are in ``sessions``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, and_, delete, func, or_, select, true, update
from sqlalchemy.exc import IntegrityError

from bangpae.adapters.store import schema as s
from bangpae.adapters.store.base import fits, new_id
from bangpae.adapters.store.sessions import SessionStore
from bangpae.domain.accounts import TotpRecord, UserRecord
from bangpae.domain.errors import Conflict, Invalid, NotFound
from bangpae.services.auth import locked_until

# PostgreSQL advisory lock: checking the recent failures and recording an attempt is one step.
_LOCK_LOGIN = 0x62616E6770610010
KNOWN_SOURCE_S = 30 * 86400.0  # a name that signed in from an address within this is known there
UNLOCKED_S = 86400.0  # a name the control centre unlocked passes address locks this long


class AuthStore(SessionStore):
    """Users, sign-in attempts and TOTP secrets (and, from its base, sessions)."""

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

    # -- users -------------------------------------------------------------------------

    def add_user(
        self,
        username: str,
        password_hash: str,
        role: str,
        person_id: int | None = None,
        at: float = 0.0,
    ) -> int:
        """Create a login; usernames are unique."""
        u = s.users
        if not username:
            raise Invalid("a user needs a username")
        fits(u.c.username, username)
        fits(u.c.password_hash, password_hash)
        fits(u.c.role, role)
        with self._write() as c:
            if person_id is not None and (
                c.execute(select(s.people.c.id).where(s.people.c.id == person_id)).first() is None
            ):
                raise NotFound(f"person {person_id} does not exist")
            if c.execute(select(u.c.id).where(u.c.username == username)).first() is not None:
                raise Conflict(f"user {username!r} exists already")
            try:
                r = c.execute(
                    u.insert().values(
                        username=username,
                        password_hash=password_hash,
                        role=role,
                        person_id=person_id,
                        disabled=False,
                        created_at=at,
                    )
                )
            except IntegrityError as exc:  # a concurrent creation won the race
                raise Conflict(f"user {username!r} exists already") from exc
            return new_id(r)

    @staticmethod
    def _user(r: Row[Any] | None) -> UserRecord | None:
        if r is None:
            return None
        return UserRecord(
            int(r.id),
            r.username,
            r.password_hash,
            r.role,
            None if r.person_id is None else int(r.person_id),
            bool(r.disabled),
        )

    def get_user_by_name(self, username: str) -> UserRecord | None:
        """A login by username."""
        with self._read() as c:
            return self._user(
                c.execute(select(s.users).where(s.users.c.username == username)).first()
            )

    def get_user(self, user_id: int) -> UserRecord | None:
        """A login by id."""
        with self._read() as c:
            return self._user(c.execute(select(s.users).where(s.users.c.id == user_id)).first())

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
