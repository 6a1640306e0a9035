"""Store methods for the audit log: a hash chain, each record carrying the hash of the
one before and, under the audit key, a MAC (docs/audit-log.md).

A mixin of :class:`~bangpae.adapters.store.store.Store`. Appends are serialised so the
chain stays linear (on PostgreSQL under a transaction-scoped advisory lock) and share a
transaction when they come together (group commit). After a purge the chain starts from
the newest purge checkpoint, which :meth:`AuditStore.audit_verify` checks like any record.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, or_, select

from bangpae.adapters.store import schema as s
from bangpae.adapters.store.base import StoreBase, fits
from bangpae.domain.audit import AuditEntry

GENESIS = "0" * 64

log = logging.getLogger("bangpae.audit")

# PostgreSQL advisory lock key of audit appends (transaction-scoped: a crash never leaves
# it held)
_LOCK_AUDIT = 0x62616E6770610003


@dataclass(frozen=True, slots=True)
class AuditReport:
    """The outcome of checking the audit hash chain (docs/audit-log.md)."""

    ok: bool
    records: int
    first_bad_id: int | None
    reason: str
    legacy: int = 0  # records before the first keyed one: plain SHA-256, written without a key
    base: int | None = None  # the last record purged by retention (the chain continues after it)
    anchors: int = 0  # anchor lines checked against the chain


@dataclass(frozen=True, slots=True)
class AnchorMark:
    """An anchored head as :meth:`Store.audit_verify` checks it.

    ``at``: when the anchor was written (None: unknown); ``keyed``: whether the record
    carried a MAC then (None: unknown, a line from before the audit key); ``where``:
    where the anchor was read, for messages.
    """

    id: int
    hash: str
    at: float | None = None
    keyed: bool | None = None
    where: str = ""


class AuditKeyMissing(Exception):
    """A keyed audit chain, and no audit key in this process to extend or check it."""


# How far apart two clocks writing the chain may be: the time of a purge checkpoint is
# checked against the records around it and against anchors within this slack.
CLOCK_SLACK_S = 300.0
_MAC_CONTEXT = b"bangpae-audit-mac-1 "
_SEEN, _WRITTEN = "bangpae_audit_seen", "bangpae_audit_written"  # keys of Connection.info


def audit_hash(prev_hash: str, record: dict[str, Any]) -> str:
    """The chain hash of a record: SHA-256 over the previous hash and canonical JSON."""
    body = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def audit_mac(key: bytes, digest: str) -> str:
    """A record's MAC: HMAC-SHA256 under the audit key over its chain hash.

    The chain hash covers the record and, through ``prev_hash``, every record before it,
    so the MAC vouches for the whole chain up to the record (docs/audit-log.md).
    """
    return hmac.new(key, _MAC_CONTEXT + digest.encode("ascii"), hashlib.sha256).hexdigest()


def _iso_time(value: str) -> float | None:
    try:
        return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


@dataclass
class _AuditAppend:
    """One audit record waiting for the group commit, and how it went."""

    entry: AuditEntry
    done: bool = False
    id: int | None = None
    error: BaseException | None = None


def _audit_fits(entry: AuditEntry) -> None:
    """Refuse an audit record a column cannot hold, before it joins anyone's transaction."""
    a = s.audit
    for column, value in (
        (a.c.actor, entry.actor),
        (a.c.role, entry.role),
        (a.c.action, entry.action),
        (a.c.subject, entry.subject),
        (a.c.purpose, entry.purpose),
        (a.c.request_id, entry.request_id),
    ):
        fits(column, value)


def audit_notes(fields: str) -> dict[str, str]:
    """``key=value`` entries of an audit record's fields, as a dict."""
    out: dict[str, str] = {}
    for item in json.loads(fields):
        key, sep, value = str(item).partition("=")
        if sep:
            out[key] = value
    return out


def audit_row(r: Any) -> dict[str, Any]:
    """An audit row as the record its hash covers (and as callers read it)."""
    return {
        "id": int(r.id),
        "at": float(r.at),
        "actor": r.actor,
        "role": r.role,
        "action": r.action,
        "subject": r.subject,
        "purpose": r.purpose,
        "fields": json.loads(r.fields),
        "request_id": r.request_id,
    }


class AuditStore(StoreBase):
    """The audit hash chain: appends, reads, its key and its verification."""

    def _init_audit(self, audit_key: bytes | None) -> None:
        # Audit records get a MAC under this key (docs/audit-log.md); without it they are
        # written as before the key existed, and a keyed chain is neither extended nor
        # vouched for.
        self.audit_key = audit_key
        self._audit_lock = threading.Lock()
        self._audit_pending: list[_AuditAppend] = []  # appends waiting for a group commit
        self._audit_queue = threading.Lock()
        # (id, hash) of the newest record this process's group commit wrote: checked at the
        # next one, so records cut from the tail before they were anchored still show
        self._audit_written: tuple[int, str] | None = None
        self.audit_tail_losses = 0

    def audit_append(self, entry: AuditEntry) -> int:
        """Append a hash-chained audit record once it is durably stored; return its id.

        Appends are serialised so the chain is linear. Appends made at the same time share
        one transaction (group commit): whoever takes the lock first commits every record
        waiting, and the others find theirs stored. Twenty open apps disclosing a position
        after one batch of fixes cost one or two commits, not twenty in front of the next
        batch.
        """
        self.check_audit(entry)
        mine = _AuditAppend(entry)
        with self._audit_queue:
            self._audit_pending.append(mine)
        with self._audit_lock:
            if not mine.done:
                with self._audit_queue:
                    batch, self._audit_pending = self._audit_pending, []
                try:
                    with self._write() as c:
                        c.info.pop(_SEEN, None)
                        for a in batch:
                            a.id = self._audit_insert(c, a.entry)
                        self._check_own_tail(c, c.info.pop(_SEEN))
                        written = c.info.pop(_WRITTEN)
                    self._audit_written = written
                except BaseException as exc:
                    for a in batch:
                        a.id, a.error = None, exc
                    raise
                finally:
                    for a in batch:
                        a.done = True
        if mine.error is not None:
            raise mine.error
        assert mine.id is not None
        return mine.id

    def _check_own_tail(self, c: Connection, head: tuple[int, str] | None) -> None:
        """Log (critical) when the newest record this process wrote is gone or changed:
        the log was cut or rewritten since, perhaps before an anchor could name it.
        ``head``: the chain's head this transaction found (usually that very record, and
        then nothing more is read)."""
        mine = self._audit_written
        if mine is None or head == mine:
            return
        stored = c.execute(select(s.audit.c.hash).where(s.audit.c.id == mine[0])).scalar()
        if stored == mine[1]:
            return
        if stored is None:
            base = self._audit_base(c)
            if base is not None and mine[0] <= base[0]:
                return  # purged by retention
        self.audit_tail_losses += 1
        log.critical(
            "audit record %d (hash %s) written by this process is %s: the audit log was "
            "cut or rewritten since; run bangpae audit verify",
            mine[0],
            mine[1],
            "gone" if stored is None else "changed",
        )

    def check_audit(self, entry: AuditEntry) -> None:
        """Invalid unless :meth:`audit_append` would take this record (a column too short for
        it); TypeError if it is not an :class:`AuditEntry`."""
        if not isinstance(entry, AuditEntry):
            raise TypeError(f"an audit record is an AuditEntry, not a {type(entry).__name__}")
        _audit_fits(entry)

    def _audit_insert(self, c: Connection, entry: AuditEntry) -> int:
        """Append inside the caller's write transaction (the chain stays linear: SQLite
        has one writer at a time, and on PostgreSQL the audit lock is taken here)."""
        a = s.audit
        _audit_fits(entry)
        names = list(entry.fields)
        self._pg_lock(c, _LOCK_AUDIT)
        head = c.execute(select(a.c.id, a.c.hash, a.c.mac).order_by(a.c.id.desc()).limit(1)).first()
        if self.audit_key is None and head is not None and head.mac is not None:
            raise AuditKeyMissing(
                "the audit chain is keyed and this process has no audit key "
                "(BANGPAE_AUDIT_KEY, or audit-key in the data dir)"
            )
        new_id = 1 if head is None else int(head.id) + 1
        prev = GENESIS if head is None else str(head.hash)
        # Hash exactly what the database will give back (a float time, a list of names).
        record = {
            "id": new_id,
            "at": float(entry.at),
            "actor": entry.actor,
            "role": entry.role,
            "action": entry.action,
            "subject": entry.subject,
            "purpose": entry.purpose,
            "fields": names,
            "request_id": entry.request_id,
        }
        digest = audit_hash(prev, record)
        # for audit_append's check of its own tail: the head the transaction found first,
        # and the record written last (on the connection: other threads write too)
        c.info.setdefault(_SEEN, None if head is None else (int(head.id), str(head.hash)))
        c.info[_WRITTEN] = (new_id, digest)
        c.execute(
            a.insert().values(
                **{**record, "fields": json.dumps(names)},
                prev_hash=prev,
                hash=digest,
                mac=None if self.audit_key is None else audit_mac(self.audit_key, digest),
            )
        )
        return new_id

    _audit_dict = staticmethod(audit_row)

    def audit_records(
        self,
        actor: str | None = None,
        subject: str | None = None,
        since_id: int | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Audit records in chain order, filtered by actor, subject and ``id > since_id``."""
        a = s.audit
        q = select(a)
        if actor:
            q = q.where(a.c.actor == actor)
        if subject:
            q = q.where(a.c.subject == subject)
        if since_id is not None:
            q = q.where(a.c.id > since_id)
        with self._read() as c:
            rows = c.execute(q.order_by(a.c.id).limit(max(0, limit))).all()
        return [self._audit_dict(r) for r in rows]

    def audit_about(
        self,
        subjects: Sequence[str],
        person_id: int | None = None,
        exclude_actor: str | None = None,
        action: str | None = None,
        limit: int = 200,
    ) -> list[dict[str, Any]]:
        """Audit records whose subject is one of ``subjects`` (exactly, or as its first part
        before a ``/``), or names ``person:<person_id>`` last; newest first."""
        a = s.audit
        clauses = [a.c.subject.in_(list(subjects))]
        clauses += [a.c.subject.like(f"{x}/%", escape="\\") for x in subjects]
        if person_id is not None:
            clauses.append(a.c.subject.like(f"%/person:{int(person_id)}", escape="\\"))
        q = select(a).where(or_(*clauses))
        if exclude_actor is not None:
            q = q.where(a.c.actor != exclude_actor)
        if action is not None:
            q = q.where(a.c.action == action)
        with self._read() as c:
            rows = c.execute(q.order_by(a.c.id.desc()).limit(max(0, limit))).all()
        return [self._audit_dict(r) for r in rows]

    def audit_head(self) -> tuple[int, str] | None:
        """The id and hash of the newest audit record (to anchor outside the database)."""
        head = self.audit_tip()
        return None if head is None else (head[0], head[1])

    def audit_tip(self) -> tuple[int, str, bool] | None:
        """The id and hash of the newest audit record, and whether it carries a MAC."""
        a = s.audit
        with self._read() as c:
            r = c.execute(
                select(a.c.id, a.c.hash, a.c.mac).order_by(a.c.id.desc()).limit(1)
            ).first()
        return None if r is None else (int(r.id), str(r.hash), r.mac is not None)

    def check_audit_key(self) -> None:
        """AuditKeyMissing unless this store's key (or its lack) fits the chain: a keyed
        chain needs the key, and the key must confirm the newest keyed record's MAC (a
        second host with a key of its own would otherwise write records nobody can
        verify). Reads one record."""
        a = s.audit
        with self._read() as c:
            r = c.execute(
                select(a.c.id, a.c.hash, a.c.mac)
                .where(a.c.mac.is_not(None))
                .order_by(a.c.id.desc())
                .limit(1)
            ).first()
        if r is None:
            return
        if self.audit_key is None:
            raise AuditKeyMissing(
                f"the audit chain is keyed (record {r.id}) and there is no audit key here: "
                "copy the audit-key file of the first host, or set BANGPAE_AUDIT_KEY"
            )
        if not hmac.compare_digest(str(r.mac), audit_mac(self.audit_key, str(r.hash))):
            raise AuditKeyMissing(
                f"the audit key does not confirm record {r.id}, the newest keyed one: it is "
                "not the key the chain was written with, or the record was forged (run "
                "bangpae audit verify)"
            )

    def audit_verify(
        self,
        anchor: tuple[int, str] | None = None,
        *,
        anchors: Sequence[AnchorMark] = (),
        audit_days: float | None = None,
        now: float | None = None,
    ) -> AuditReport:
        """Walk the chain; any edited, deleted, inserted or reordered record breaks it.

        The rules are those of docs/audit-log.md. Each record must link to the one before
        and match its hash; from the first record with a MAC on, every record must carry
        a MAC that the audit key confirms (the records before it are the legacy prefix,
        written before the key existed). After a purge the chain starts where the newest
        purge checkpoint says; each checkpoint must be a record like any other, cut no
        record younger than ``audit_days`` before its time, and have a time consistent
        with the records around it (and not after ``now``).

        ``anchors`` are the anchored heads, oldest first: each one still in the chain
        must match its record (and the record must still carry its MAC if it did); the
        newest must still be in the chain (a tail cut short shows); one naming a
        record purged since is accepted only if no purged record was written after the
        cut-off of the purge. ``anchor``: one more anchored head, taken as the newest.
        """
        marks = list(anchors)
        if anchor is not None:
            marks.append(AnchorMark(int(anchor[0]), str(anchor[1])))
        key = self.audit_key
        prev, expected, n, legacy = GENESIS, 1, 0, 0
        last_keyed: int | None = None
        prev_at: float | None = None
        checkpoints: list[tuple[int, int, float]] = []  # (id, through, cut-off)
        after_checkpoint: tuple[int, float] | None = None
        with self._read() as c:
            base = self._audit_base(c)
            cut = 0 if base is None else base[0]
            if base is not None:  # records up to the checkpoint were purged on purpose
                expected, prev = base[0] + 1, base[1]

            def bad(rid: int | None, reason: str) -> AuditReport:
                return AuditReport(False, n, rid, reason, legacy, cut or None, len(marks))

            if marks and marks[-1].id < cut:
                m = marks[-1]
                return bad(
                    m.id,
                    f"the anchored record {m.id}{_at(m)} was purged (the chain now starts "
                    f"after {cut}); anchor the head again after a purge",
                )
            pending = [m for m in marks if m.id > cut]
            k = 0
            rows = c.execute(select(s.audit).order_by(s.audit.c.id)).yield_per(1000)
            for r in rows:
                n += 1
                rid = int(r.id)
                if rid != expected:
                    if rid > expected:
                        return bad(rid, f"record {expected} is missing (next is {rid})")
                    return bad(rid, f"record {rid} is out of place (expected {expected})")
                if r.prev_hash != prev:
                    return bad(rid, "link to the previous record broken")
                if audit_hash(prev, self._audit_dict(r)) != r.hash:
                    return bad(rid, "record content does not match its hash")
                if r.mac is None:
                    if last_keyed is not None:
                        return bad(
                            rid,
                            f"record has no MAC but follows the keyed record {last_keyed}: "
                            "written without the audit key",
                        )
                    legacy += 1
                elif key is None:
                    return bad(rid, "record is keyed and there is no audit key to check it")
                elif not hmac.compare_digest(str(r.mac), audit_mac(key, str(r.hash))):
                    return bad(rid, "MAC does not match: forged or rewritten without the audit key")
                else:
                    last_keyed = rid
                at = float(r.at)
                if after_checkpoint is not None and at < after_checkpoint[1] - CLOCK_SLACK_S:
                    cp = after_checkpoint[0]
                    return bad(cp, f"purge checkpoint is dated after the record {rid} after it")
                after_checkpoint = None
                if r.action == "purge" and r.subject == "audit":
                    problem = self._checkpoint_problem(
                        r, prev_at, checkpoints, audit_days, now, keyed=r.mac is not None
                    )
                    if problem is not None:
                        return bad(rid, f"purge checkpoint: {problem}")
                    after_checkpoint = (rid, at)
                while k < len(pending) and pending[k].id == rid:
                    m = pending[k]
                    if m.hash != r.hash:
                        return bad(rid, f"record differs from the anchored head{_at(m)}")
                    if m.keyed and r.mac is None:
                        return bad(rid, f"record had a MAC when anchored{_at(m)} and has none")
                    k += 1
                prev, expected, prev_at = r.hash, expected + 1, at
        if k < len(pending):
            m = pending[k]
            return bad(
                expected, f"chain ends at {expected - 1} before the anchored record {m.id}{_at(m)}"
            )
        for m in marks:
            if m.id > cut:
                break
            if m.id == cut and base is not None and m.hash != base[1]:
                return bad(m.id, f"the anchored record{_at(m)} differs from the purged one")
            for cp, through, before in checkpoints:
                if m.id < through and m.at is not None and m.at >= before + CLOCK_SLACK_S:
                    return bad(
                        cp,
                        f"purge checkpoint cut records up to {through}, but the anchor naming "
                        f"{m.id}{_at(m)} is later than its cut-off {_iso(before)}: records "
                        "after it were purged before their time",
                    )
        return AuditReport(True, n, None, "intact", legacy, cut or None, len(marks))

    @staticmethod
    def _checkpoint_problem(
        r: Row[Any],
        prev_at: float | None,
        checkpoints: list[tuple[int, int, float]],
        audit_days: float | None,
        now: float | None,
        *,
        keyed: bool,
    ) -> str | None:
        """Why a purge checkpoint (already checked as a record) cannot be right, if it
        cannot; a good one is added to ``checkpoints``.

        A keyed checkpoint's cut-off is checked against the retention it records, the one
        in force when it was written (the key vouches for it; a retention lengthened
        since must not make past purges look early); any other against ``audit_days``.
        """
        notes = audit_notes(r.fields)
        through_s, before = notes.get("through_id", ""), _iso_time(notes.get("before", ""))
        if not through_s.isdigit() or before is None:
            return "no cut-off or last record purged in its fields"
        through, at = int(through_s), float(r.at)
        if keyed and notes.get("days"):
            try:
                audit_days = float(notes["days"])
            except ValueError:
                return f"retention days {notes['days']!r} unreadable"
        if through >= int(r.id):
            return f"claims to have purged records up to {through}, at or after itself"
        if checkpoints and through < checkpoints[-1][1]:
            return f"cuts less ({through}) than the checkpoint {checkpoints[-1][0]} before it"
        if audit_days is not None and before > at - audit_days * 86400 + 1e-3:
            return (
                f"cut-off {_iso(before)} is later than the retention of {audit_days:g} days "
                f"allows at its time {_iso(at)}"
            )
        if prev_at is not None and at < prev_at - CLOCK_SLACK_S:
            return f"dated {_iso(at)}, before the record ahead of it ({_iso(prev_at)})"
        if now is not None and at > now + CLOCK_SLACK_S:
            return f"dated {_iso(at)}, in the future"
        checkpoints.append((int(r.id), through, before))
        return None

    # -- the audit chain's base --------------------------------------------------------

    def _audit_base(self, c: Connection) -> tuple[int, str] | None:
        """The newest purge checkpoint: (id, hash) of the last record deleted, if any."""
        a = s.audit
        r = c.execute(
            select(a.c.fields)
            .where(and_(a.c.action == "purge", a.c.subject == "audit"))
            .order_by(a.c.id.desc())
            .limit(1)
        ).first()
        if r is None:
            return None
        notes = audit_notes(r.fields)
        through = notes.get("through_id", "")
        if not through.isdigit() or int(through) == 0:
            return None
        return int(through), notes.get("through_hash", "")

    def audit_hash_of(self, record_id: int) -> str | None:
        """The stored hash of one audit record (None: no such record)."""
        a = s.audit
        with self._read() as c:
            value = c.execute(select(a.c.hash).where(a.c.id == record_id)).scalar()
        return None if value is None else str(value)

    def audit_link(self, record_id: int) -> tuple[str, bool] | None:
        """The stored hash of one audit record and whether it carries a MAC (None: no such
        record)."""
        a = s.audit
        with self._read() as c:
            r = c.execute(select(a.c.hash, a.c.mac).where(a.c.id == record_id)).first()
        return None if r is None else (str(r.hash), r.mac is not None)

    def audit_base(self) -> tuple[int, str] | None:
        """Where the chain starts after purges: (id, hash) of the last record purged."""
        with self._read() as c:
            return self._audit_base(c)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _at(m: AnchorMark) -> str:
    return f" ({m.where})" if m.where else ""
