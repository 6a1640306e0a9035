"""Store methods for notices: the record of what was told to whom, and push subscriptions.

A mixin of :class:`~bangpae.adapters.store.store.Store`; every method runs in its own
transaction and has committed when it returns. Also her contact (the phone number,
sealed, and her choices of texts) and the texts sent by SMPP with their receipts
(docs/sms.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update

from bangpae.adapters.store import schema as s
from bangpae.adapters.store.base import StoreBase, bound_list, one_of
from bangpae.domain.errors import Conflict, Invalid, NotFound
from bangpae.domain.notices import SHOWN, Contact, Notice

# When a notice with each of some dedup keys was last sent (the notifier asks per round).
_LAST_NOTICE_AT = {
    name: select(s.notices.c.dedup_key, func.max(s.notices.c.at))
    .where(clause)
    .group_by(s.notices.c.dedup_key)
    for name, clause in one_of(s.notices.c.dedup_key, "keys").items()
}


@dataclass(frozen=True, slots=True)
class NoticeRecord:
    """A notice as kept: what was said, to whom, when, and how each channel fared."""

    id: int
    at: float
    order_id: int | None
    audience: str
    person_id: int | None
    role: str | None
    kind: str
    priority: str
    text: dict[str, str]
    delivery: dict[str, str]
    sms: tuple[dict[str, Any], ...] = ()  # the texts that carried it, with their receipts

    def as_dict(self) -> dict[str, Any]:
        """JSON for the API."""
        return {
            "sms": list(self.sms),
            "id": self.id,
            "at": self.at,
            "order_id": self.order_id,
            "audience": self.audience,
            "person_id": self.person_id,
            "role": self.role,
            "kind": self.kind,
            "priority": self.priority,
            "text": self.text,
            "delivery": self.delivery,
        }


# What the API shows of a text: never the number, never the words.
_SMS_SHOWN = ("id", "state", "parts", "attempts", "queued_at", "submitted_at", "done_at", "error")
SMS_FINAL = frozenset({"delivered", "failed", "expired", "undeliverable"})


@dataclass(frozen=True, slots=True)
class PushTarget:
    """One browser to push to."""

    id: int
    user_id: int
    endpoint: str
    p256dh: str
    auth: str
    lang: str


class NoticeStore(StoreBase):
    """Notices and Web Push subscriptions."""

    # -- notices -----------------------------------------------------------------------

    def last_notices_at(self, dedup_keys: Iterable[str]) -> dict[str, float | None]:
        """When a notice with each key was last sent (None: never)."""
        keys = sorted(set(dedup_keys))
        out: dict[str, float | None] = dict.fromkeys(keys)
        if not keys:
            return out
        with self._read() as c:
            bound = {"keys": bound_list(self.dialect, keys)}
            rows = c.execute(_LAST_NOTICE_AT[self.dialect], bound)
            for key, at in rows:
                out[key] = None if at is None else float(at)
        return out

    def add_notices(self, sent: Sequence[tuple[Notice, dict[str, str]]]) -> list[int]:
        """Keep sent notices with the outcome of each channel, in one transaction; their ids."""
        if not sent:
            return []
        rows = [
            {
                "at": notice.at,
                "order_id": notice.order_id,
                "audience": notice.audience,
                "person_id": notice.person_id,
                "role": notice.role,
                "kind": notice.kind,
                "priority": notice.priority,
                "dedup_key": notice.dedup_key[:200],
                "text": notice.text.as_dict(),
                "delivery": delivery,
            }
            for notice, delivery in sent
        ]
        with self._write() as c:
            ids = self._insert_rows(c, s.notices, rows)
            self._link_sms(c, [(n, i) for (n, _), i in zip(sent, ids, strict=True)])
            return ids

    def _link_sms(self, c: Any, kept: Sequence[tuple[Notice, int]]) -> None:
        """Link the texts already queued for these notices to them, and put what their
        receipts said so far in the notices' delivery (a receipt may come first)."""
        m = s.sms_messages
        for notice, notice_id in kept:
            if notice.person_id is None:
                continue
            where = and_(
                m.c.dedup_key == notice.dedup_key[:200],
                m.c.notice_at == notice.at,
                m.c.person_id == notice.person_id,
                m.c.notice_id.is_(None),
            )
            state = c.execute(select(m.c.state).where(where).order_by(m.c.id.desc())).scalar()
            if state is None:
                continue
            c.execute(update(m).where(where).values(notice_id=notice_id))
            if state != "queued":
                self._note_sms_state(c, notice_id, state)

    def _note_sms_state(self, c: Any, notice_id: int, state: str) -> None:
        n = s.notices
        delivery = c.execute(select(n.c.delivery).where(n.c.id == notice_id)).scalar()
        if delivery is not None:
            c.execute(
                update(n).where(n.c.id == notice_id).values(delivery={**delivery, "sms": state})
            )

    def notices(
        self,
        *,
        person_id: int | None = None,
        audience: str | None = None,
        order_id: int | None = None,
        after_id: int = 0,
        limit: int = 200,
    ) -> list[NoticeRecord]:
        """Notices, oldest first, narrowed by person, audience and order."""
        n = s.notices
        q = select(n).where(n.c.id > after_id)
        if person_id is not None:
            q = q.where(n.c.person_id == person_id)
        if audience is not None:
            q = q.where(n.c.audience == audience)
        if order_id is not None:
            q = q.where(n.c.order_id == order_id)
        with self._read() as c:
            rows = c.execute(q.order_by(n.c.id).limit(limit)).all()
            texts: dict[int, list[dict[str, Any]]] = {}
            ids = [int(r.id) for r in rows]
            m = s.sms_messages
            for i in range(0, len(ids), 500):
                q_sms = select(m).where(m.c.notice_id.in_(ids[i : i + 500])).order_by(m.c.id)
                for r in c.execute(q_sms):
                    texts.setdefault(int(r.notice_id), []).append(
                        {k: getattr(r, k) for k in _SMS_SHOWN}
                    )
        return [
            NoticeRecord(
                int(r.id),
                float(r.at),
                None if r.order_id is None else int(r.order_id),
                r.audience,
                None if r.person_id is None else int(r.person_id),
                r.role,
                r.kind,
                r.priority,
                dict(r.text),
                dict(r.delivery),
                tuple(texts.get(int(r.id), ())),
            )
            for r in rows
        ]

    def person_phone(self, person_id: int) -> str | None:
        """The phone number kept for a person (for the SMS/voice gateway)."""
        with self._read() as c:
            v = c.execute(select(s.people.c.phone).where(s.people.c.id == person_id)).scalar()
        return None if v is None else str(self._open(s.people.c.phone, v, person_id))

    def set_person_phone(self, person_id: int, phone: str | None) -> None:
        """Keep (or clear) a person's phone number (encrypted at rest)."""
        if phone is not None and len(phone) > 64:
            raise Invalid("phone is longer than 64 characters")
        sealed = self._seal(s.people.c.phone, phone)
        with self._write() as c:
            r = c.execute(update(s.people).where(s.people.c.id == person_id).values(phone=sealed))
            if r.rowcount == 0:
                raise NotFound(f"person {person_id} not found")

    # -- her contact: phone number and choices of texts ------------------------------------

    def contact(self, person_id: int) -> Contact | None:
        """A person's contact (None: no such person)."""
        p = s.people
        with self._read() as c:
            r = c.execute(
                select(p.c.id, p.c.kind, p.c.phone, p.c.sms_prefs).where(p.c.id == person_id)
            ).first()
        if r is None:
            return None
        phone = None if r.phone is None else str(self._open(p.c.phone, r.phone, person_id))
        return Contact(int(r.id), r.kind, phone, self._prefs_opened(r.sms_prefs, person_id))

    def _prefs_opened(self, prefs: Any, person_id: int) -> dict[str, Any] | None:
        """Her stored choices, with the contact shown to her phone (sealed) opened."""
        if prefs is None:
            return None
        return dict(self._open_in(dict(prefs), SHOWN, f"people {person_id}"))

    def contacts(self, person_ids: Iterable[int]) -> dict[int, Contact]:
        """The contacts of many people at once (for the texts of a round of notices)."""
        ids = sorted(set(person_ids))
        p, out = s.people, {}
        with self._read() as c:
            for i in range(0, len(ids), 500):
                rows = c.execute(
                    select(p.c.id, p.c.kind, p.c.phone, p.c.sms_prefs).where(
                        p.c.id.in_(ids[i : i + 500])
                    )
                )
                for r in rows:
                    pid = int(r.id)
                    phone = None if r.phone is None else str(self._open(p.c.phone, r.phone, pid))
                    out[pid] = Contact(pid, r.kind, phone, self._prefs_opened(r.sms_prefs, pid))
        return out

    def set_contact(
        self,
        person_id: int,
        phone: str | None,
        sms_prefs: dict[str, Any],
        shown: dict[str, Any] | None = None,
    ) -> bool:
        """Keep a protected person's phone number (sealed) and choices of texts; whether the
        number changed. Only a victim has a contact: the offender is never told anything.

        ``shown``: the contact her phone is shown instead, after a change made with her
        duress PIN (sealed beside her choices: it holds a number; docs/sms.md). Any other
        change drops it.
        """
        if phone is not None and len(phone) > 64:
            raise Invalid("phone is longer than 64 characters")
        prefs = sms_prefs if shown is None else self._seal_in({**sms_prefs, SHOWN: shown}, SHOWN)
        p = s.people
        with self._write() as c:
            r = c.execute(select(p.c.kind, p.c.phone).where(p.c.id == person_id)).first()
            if r is None:
                raise NotFound(f"person {person_id} not found")
            if r.kind != "victim":
                raise Invalid("only a protected person (victim) has a contact for notices")
            old = None if r.phone is None else self._open(p.c.phone, r.phone, person_id)
            c.execute(
                update(p)
                .where(p.c.id == person_id)
                .values(phone=self._seal(p.c.phone, phone), sms_prefs=prefs)
            )
            return bool(old != phone)

    # -- texts sent by SMPP ---------------------------------------------------------------

    def add_sms(self, notice: Notice, person_id: int, parts: int, at: float) -> int:
        """Keep a text as queued for a notice; its id (the SMPP messages carry it)."""
        with self._write() as c:
            r = c.execute(
                insert(s.sms_messages).values(
                    person_id=person_id,
                    dedup_key=notice.dedup_key[:200],
                    notice_at=notice.at,
                    kind=notice.kind,
                    state="queued",
                    parts=parts,
                    attempts=0,
                    queued_at=at,
                    error="",
                )
            )
            pk = r.inserted_primary_key
            assert pk is not None
            return int(pk[0])

    def sms_update(self, sms_id: int, **values: Any) -> None:
        """Record a text's progress: attempts, the SMSC's id, its state and times.

        A final state is written once: a late or repeated receipt does not undo it. The
        notice it carries has the state in its delivery too.
        """
        m = s.sms_messages
        if "error" in values:
            values["error"] = str(values["error"])[:200]
        with self._write() as c:
            r = c.execute(select(m.c.state, m.c.notice_id).where(m.c.id == sms_id)).first()
            if r is None or r.state in SMS_FINAL:
                return
            c.execute(update(m).where(m.c.id == sms_id).values(**values))
            if r.notice_id is not None and "state" in values and values["state"] != r.state:
                self._note_sms_state(c, int(r.notice_id), values["state"])

    def sms_by_message_id(self, message_id: str) -> int | None:
        """The text the SMSC gave this id (a receipt after a restart is matched so)."""
        m = s.sms_messages
        with self._read() as c:
            v = c.execute(
                select(m.c.id).where(m.c.message_id == message_id).order_by(m.c.id.desc())
            ).scalar()
        return None if v is None else int(v)

    def sms(self, sms_id: int) -> dict[str, Any] | None:
        """One text as kept (never the number nor the words: they are not kept)."""
        m = s.sms_messages
        with self._read() as c:
            r = c.execute(select(m).where(m.c.id == sms_id)).first()
        return None if r is None else dict(r._mapping)

    def sms_recent(
        self, person_ids: Iterable[int], since: float
    ) -> tuple[dict[tuple[int, str], float], dict[int, int]]:
        """Texts for notices of these people since ``since`` (notice time): when the last
        of each (person, kind) was, and how many each person had (for the cap)."""
        ids = sorted(set(person_ids))
        m = s.sms_messages
        last: dict[tuple[int, str], float] = {}
        count: dict[int, int] = dict.fromkeys(ids, 0)
        if not ids:
            return last, count
        with self._read() as c:
            rows = c.execute(
                select(m.c.person_id, m.c.kind, m.c.notice_at).where(
                    and_(m.c.person_id.in_(ids), m.c.notice_at >= since)
                )
            )
            for pid, kind, at in rows:
                key = (int(pid), kind)
                last[key] = max(last.get(key, 0.0), float(at))
                count[int(pid)] += 1
        return last, count

    def fail_unfinished_sms(self, before: float, reason: str) -> int:
        """Mark texts still queued from before a restart as failed (their retries were in
        the memory of the process that stopped); how many."""
        m = s.sms_messages
        with self._write() as c:
            ids = [
                int(i)
                for i in c.execute(
                    select(m.c.id).where(and_(m.c.state == "queued", m.c.queued_at < before))
                ).scalars()
            ]
        for sms_id in ids:
            self.sms_update(sms_id, state="failed", done_at=before, error=reason)
        return len(ids)

    # -- push subscriptions ---------------------------------------------------------------

    def add_push_subscription(
        self, user_id: int, endpoint: str, p256dh: str, auth: str, lang: str, at: float
    ) -> int:
        """Keep a browser's subscription for a user; renewing one's own updates it.

        An endpoint another user subscribed is refused: taking it over would silence
        that person's alerts (the pushes would be encrypted to keys their browser lacks).
        """
        p = s.push_subscriptions
        values = {"user_id": user_id, "p256dh": p256dh, "auth": auth, "lang": lang}
        with self._write() as c:
            found = c.execute(select(p.c.id, p.c.user_id).where(p.c.endpoint == endpoint)).first()
            if found is not None:
                if int(found.user_id) != user_id:
                    raise Conflict("this push endpoint is subscribed by another account")
                c.execute(update(p).where(p.c.id == found.id).values(**values, failures=0))
                return int(found.id)
            r = c.execute(insert(p).values(**values, endpoint=endpoint, created_at=at, failures=0))
            pk = r.inserted_primary_key
            assert pk is not None
            return int(pk[0])

    def remove_push_subscription(self, endpoint: str, user_id: int | None = None) -> bool:
        """Forget a subscription (only the user's own, when ``user_id`` is given)."""
        p = s.push_subscriptions
        q = delete(p).where(p.c.endpoint == endpoint)
        if user_id is not None:
            q = q.where(p.c.user_id == user_id)
        with self._write() as c:
            return bool(c.execute(q).rowcount)

    def push_targets(
        self, *, person_id: int | None = None, role: str | None = None
    ) -> list[PushTarget]:
        """The browsers of the enabled users of a person, or of a staff role."""
        p, u = s.push_subscriptions, s.users
        who = u.c.person_id == person_id if person_id is not None else u.c.role == role
        q = (
            select(p)
            .join(u, u.c.id == p.c.user_id)
            .where(and_(who, u.c.disabled.is_(False)))
            .order_by(p.c.id)
        )
        with self._read() as c:
            rows = c.execute(q).all()
        return [
            PushTarget(int(r.id), int(r.user_id), r.endpoint, r.p256dh, r.auth, r.lang)
            for r in rows
        ]

    def push_targets_of(
        self, person_ids: Iterable[int], roles: Iterable[str]
    ) -> dict[tuple[str, int | str], list[PushTarget]]:
        """The browsers of many people and roles at once, keyed ("person", id) or ("role", r)."""
        p, u = s.push_subscriptions, s.users
        ids, names = sorted(set(person_ids)), sorted(set(roles))
        out: dict[tuple[str, int | str], list[PushTarget]] = {}
        for pid in ids:
            out[("person", pid)] = []
        for role in names:
            out[("role", role)] = []
        if not ids and not names:
            return out
        q = (
            select(p, u.c.person_id.label("u_person"), u.c.role.label("u_role"))
            .join(u, u.c.id == p.c.user_id)
            .where(
                and_(
                    u.c.disabled.is_(False),
                    or_(u.c.person_id.in_(ids), u.c.role.in_(names)),
                )
            )
            .order_by(p.c.id)
        )
        with self._read() as c:
            rows = c.execute(q).all()
        for r in rows:
            target = PushTarget(int(r.id), int(r.user_id), r.endpoint, r.p256dh, r.auth, r.lang)
            if r.u_person is not None and ("person", int(r.u_person)) in out:
                out[("person", int(r.u_person))].append(target)
            if ("role", r.u_role) in out:
                out[("role", r.u_role)].append(target)
        return out

    def person_phones(self, person_ids: Iterable[int]) -> dict[int, str | None]:
        """The phone numbers kept for many people (for the SMS/voice gateway)."""
        ids = sorted(set(person_ids))
        out: dict[int, str | None] = dict.fromkeys(ids)
        with self._read() as c:
            for i in range(0, len(ids), 500):
                rows = c.execute(
                    select(s.people.c.id, s.people.c.phone).where(
                        s.people.c.id.in_(ids[i : i + 500])
                    )
                )
                for pid, v in rows:
                    if v is not None:
                        out[int(pid)] = str(self._open(s.people.c.phone, v, int(pid)))
        return out

    def push_result(self, subscription_id: int, ok: bool, at: float) -> None:
        """Count a push's outcome on its subscription."""
        p = s.push_subscriptions
        values: dict[str, Any] = (
            {"last_ok_at": at, "failures": 0} if ok else {"failures": p.c.failures + 1}
        )
        with self._write() as c:
            c.execute(update(p).where(p.c.id == subscription_id).values(**values))

    def drop_push_subscription(self, subscription_id: int) -> None:
        """Forget a subscription its push service says is gone."""
        p = s.push_subscriptions
        with self._write() as c:
            c.execute(delete(p).where(p.c.id == subscription_id))
