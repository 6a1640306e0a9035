"""Store methods for sessions: signed-in sessions with rotating refresh tokens, and
their revocation (by the user, the control centre, or an order ending).

A mixin of :class:`~bangpae.adapters.store.store.Store`: every method runs in its own
transaction and has committed when it returns. Refresh tokens are kept only as SHA-256
hashes.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, and_, false, or_, select, update

from bangpae.adapters.store import schema as s
from bangpae.adapters.store.base import StoreBase
from bangpae.domain.accounts import RefreshStatus, SessionRecord
from bangpae.domain.errors import NotFound


def _clip(value: str | None, n: int) -> str | None:
    return None if value is None else value[:n]


class SessionStore(StoreBase):
    """Sessions and their refresh tokens."""

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
