"""Store methods for recordings kept as evidence of an SOS (docs/evidence.md).

A mixin of :class:`~bangpae.adapters.store.store.Store`. The bytes are never stored in
plaintext: each recording is one AES-256-GCM record of the data keys
(:meth:`FieldCipher.seal_records`), so a key rotation re-seals it and any key still
given opens it. Its scope is the incident's id negated: device ids are positive, so no
device's position key ever seals a recording, and each incident has a key of its own.
The associated data binds the record to its incident, its person and the SHA-256 of
its bytes: a record moved to another row, or a row whose incident, person or digest
was changed, does not open. A store without data keys refuses to keep or read one.

The digest is computed on receipt and kept in the row, so a second upload of the same
bytes for the same incident (a reply lost on the way) finds the first one instead of
keeping a copy. Every upload adds an entry to the incident's timeline, in the same
transaction, so the control centre sees that a recording arrived.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Row, func, select, text
from sqlalchemy.exc import IntegrityError

from bangpae.adapters.crypto import DataKeyError
from bangpae.adapters.store import schema as s
from bangpae.adapters.store.base import StoreBase, insert_action_entry, new_id
from bangpae.domain.errors import Invalid, NotFound

if TYPE_CHECKING:
    from bangpae.adapters.crypto import FieldCipher

# The timeline entry an upload adds to its incident.
TIMELINE_ACTION = "evidence"
# What the associated data of a sealed recording starts with: no position record's
# associated data (24 bytes of row, device and time) can be read as one.
_AD_CONTEXT = b"bangpae/evidence/v1\x00"
_IDS = struct.Struct("<qq")  # incident id, person id


class EvidenceFull(Invalid):
    """The incident's recordings would pass their cap (in bytes or in number)."""


@dataclass(frozen=True, slots=True)
class EvidenceRecord:
    """A recording as kept: everything but its bytes."""

    id: int
    incident_id: int
    person_id: int
    uploaded_at: float
    recorded_at: float | None
    content_type: str
    size: int
    sha256: str
    uploaded_by: str


def _record(r: Row[Any]) -> EvidenceRecord:
    return EvidenceRecord(
        id=int(r.id),
        incident_id=int(r.incident_id),
        person_id=int(r.person_id),
        uploaded_at=float(r.uploaded_at),
        recorded_at=None if r.recorded_at is None else float(r.recorded_at),
        content_type=r.content_type,
        size=int(r.size),
        sha256=r.sha256,
        uploaded_by=r.uploaded_by,
    )


def _associated(incident_id: int, person_id: int, sha256: str) -> bytes:
    return _AD_CONTEXT + _IDS.pack(incident_id, person_id) + bytes.fromhex(sha256)


_META = [c for c in s.evidence.columns if c.name != "blob"]


class EvidenceStore(StoreBase):
    """Keep recordings sealed, list them, open them; re-seal them in a rotation; carry
    them in and out of case files."""

    if TYPE_CHECKING:
        cipher: FieldCipher | None

    def _evidence_cipher(self) -> FieldCipher:
        if self.cipher is None:
            raise DataKeyError(
                "recordings are kept sealed only: the store was opened without data keys"
            )
        return self.cipher

    def _seal_evidence(self, incident_id: int, person_id: int, sha256: str, data: bytes) -> bytes:
        cipher = self._evidence_cipher()
        ad = _associated(incident_id, person_id, sha256)
        return cipher.seal_records([-incident_id], [ad], [data])[0]

    def _open_evidence(self, r: Row[Any]) -> bytes:
        """A row's bytes, opened and checked against its digest (DataKeyError otherwise)."""
        cipher = self._evidence_cipher()
        ad = _associated(int(r.incident_id), int(r.person_id), r.sha256)
        try:
            data = cipher.open_record(-int(r.incident_id), ad, bytes(r.blob))
        except DataKeyError as exc:
            raise DataKeyError(f"evidence {r.id}: {exc}") from None
        if hashlib.sha256(data).hexdigest() != r.sha256:  # pragma: no cover - bound by the AD
            raise DataKeyError(f"evidence {r.id}: its bytes do not match their digest")
        return data

    def add_evidence(
        self,
        incident_id: int,
        person_id: int,
        data: bytes,
        content_type: str,
        *,
        at: float,
        recorded_at: float | None,
        uploaded_by: str,
        max_total: int,
        max_count: int,
    ) -> tuple[EvidenceRecord, bool]:
        """Keep a recording of an incident, sealed; (its record, whether it is new).

        The same bytes again for the same incident give the first record back. Refused
        (:class:`EvidenceFull`) when the incident's recordings would pass ``max_total``
        bytes or ``max_count`` recordings.
        """
        if not data:
            raise Invalid("a recording has at least one byte")
        sha256 = hashlib.sha256(data).hexdigest()
        blob = self._seal_evidence(incident_id, person_id, sha256, data)  # before the lock
        ev, i = s.evidence, s.incidents
        for attempt in (1, 2):
            try:
                with self._write() as c:
                    found = c.execute(
                        select(i.c.id).where(i.c.id == incident_id).with_for_update()
                    ).first()
                    if found is None:
                        raise NotFound(f"incident {incident_id} does not exist")
                    same = c.execute(
                        select(*_META).where(ev.c.incident_id == incident_id, ev.c.sha256 == sha256)
                    ).first()
                    if same is not None:
                        return _record(same), False
                    n, total = c.execute(
                        select(func.count(), func.coalesce(func.sum(ev.c.size), 0)).where(
                            ev.c.incident_id == incident_id
                        )
                    ).one()
                    if int(n) + 1 > max_count or int(total) + len(data) > max_total:
                        raise EvidenceFull(
                            f"incident {incident_id} keeps at most {max_count} recordings and "
                            f"{max_total} bytes of them"
                        )
                    row = {
                        "incident_id": incident_id,
                        "person_id": person_id,
                        "uploaded_at": at,
                        "recorded_at": recorded_at,
                        "content_type": content_type,
                        "size": len(data),
                        "sha256": sha256,
                        "blob": blob,
                        "uploaded_by": uploaded_by,
                    }
                    evidence_id = new_id(c.execute(ev.insert().values(**row)))
                    insert_action_entry(
                        c,
                        incident_id,
                        TIMELINE_ACTION,
                        uploaded_by,
                        at,
                        "",
                        {
                            "evidence_id": evidence_id,
                            "content_type": content_type,
                            "size": len(data),
                            "sha256": sha256,
                        },
                    )
                    r = c.execute(select(*_META).where(ev.c.id == evidence_id)).one()
                    return _record(r), True
            except IntegrityError:  # the same bytes, uploaded at the same moment (PostgreSQL)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def incident_evidence(self, incident_id: int) -> list[EvidenceRecord]:
        """An incident's recordings, oldest first (without their bytes)."""
        ev = s.evidence
        with self._read() as c:
            rows = c.execute(
                select(*_META).where(ev.c.incident_id == incident_id).order_by(ev.c.id)
            ).all()
        return [_record(r) for r in rows]

    def evidence_with_bytes(self, evidence_id: int) -> tuple[EvidenceRecord, bytes] | None:
        """A recording and its bytes, opened (DataKeyError when no key given opens them)."""
        with self._read() as c:
            r = c.execute(select(s.evidence).where(s.evidence.c.id == evidence_id)).first()
        if r is None:
            return None
        return _record(r), self._open_evidence(r)

    def case_evidence(self, incident_ids: Sequence[int]) -> Iterator[tuple[EvidenceRecord, bytes]]:
        """The recordings of these incidents with their bytes opened, in id order."""
        ev = s.evidence
        ids = sorted(set(incident_ids))
        for k in range(0, len(ids), 500):
            with self._read() as c:
                keys = c.execute(
                    select(ev.c.id).where(ev.c.incident_id.in_(ids[k : k + 500])).order_by(ev.c.id)
                ).scalars()
                wanted = [int(x) for x in keys]
            for eid in wanted:  # one at a time: a recording may be megabytes
                got = self.evidence_with_bytes(eid)
                if got is not None:
                    yield got

    def reseal_fields(self) -> dict[str, dict[str, int]]:
        """Every other sealed field (:meth:`SealedFields.reseal_fields`), then every
        recording not yet under the newest key, one transaction each."""
        counts: dict[str, dict[str, int]] = super().reseal_fields()  # type: ignore[misc]
        cipher = self._evidence_cipher()
        ev = s.evidence
        tally = {"resealed": 0, "sealed": 0, "current": 0}  # never plaintext: sealed stays 0
        with self._read() as c:
            ids = [int(x) for x in c.execute(select(ev.c.id).order_by(ev.c.id)).scalars()]
        for eid in ids:
            with self._write() as c:
                r = c.execute(select(ev).where(ev.c.id == eid).with_for_update()).first()
                if r is None:  # purged meanwhile
                    continue
                if cipher.record_is_current(bytes(r.blob)):
                    tally["current"] += 1
                    continue
                data = self._open_evidence(r)
                blob = self._seal_evidence(int(r.incident_id), int(r.person_id), r.sha256, data)
                c.execute(ev.update().where(ev.c.id == eid).values(blob=blob))
                tally["resealed"] += 1
        counts["evidence.blob"] = tally
        return counts

    def _import_case_extras(
        self, c: Connection, tables: Callable[[str], Iterable[dict[str, Any]]]
    ) -> dict[str, int]:
        """Insert a case's recordings (rows with their opened ``bytes``), sealed with this
        instance's keys, keeping their ids; inside the import's transaction."""
        counts: dict[str, int] = dict(super()._import_case_extras(c, tables))  # type: ignore[misc]
        n = 0
        ev = s.evidence
        for row in tables("evidence"):
            data = row.pop("bytes")
            if hashlib.sha256(data).hexdigest() != row["sha256"] or len(data) != row["size"]:
                raise Invalid(f"evidence {row['id']}: its bytes do not match their digest")
            row["blob"] = self._seal_evidence(
                int(row["incident_id"]), int(row["person_id"]), row["sha256"], data
            )
            c.execute(ev.insert().values(**row))
            n += 1
        if n and self.dialect == "postgresql":
            c.execute(
                text("SELECT setval(pg_get_serial_sequence('evidence', 'id'), :v)"),
                {"v": int(c.execute(select(func.max(ev.c.id))).scalar_one())},
            )
        counts["evidence"] = n
        return counts
