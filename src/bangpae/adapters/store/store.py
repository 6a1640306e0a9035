"""The store: one SQLAlchemy code path for SQLite (WAL, synchronous=FULL) and PostgreSQL.

Every public method runs in its own transaction and has committed when it
returns: a caller that acknowledges after a call returns acknowledges only
what is on disk. :class:`Store` is made of one mixin per responsibility on a
common kernel (``base``); what spans several of them, a batch of fixes with its
events, incidents and audit records, is here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from bangpae.adapters.crypto import FieldCipher
from bangpae.adapters.store.access import AccessStore
from bangpae.adapters.store.audit import AuditStore
from bangpae.adapters.store.auth import AuthStore
from bangpae.adapters.store.case import CaseStore
from bangpae.adapters.store.evidence import EvidenceStore
from bangpae.adapters.store.fixes import FixStore
from bangpae.adapters.store.incidents import IncidentStore
from bangpae.adapters.store.notices import NoticeStore
from bangpae.adapters.store.reactions import ReactionStore
from bangpae.adapters.store.refuges import RefugeStore
from bangpae.adapters.store.registry import RegistryStore
from bangpae.adapters.store.response import ResponseStore
from bangpae.adapters.store.retention import RetentionStore
from bangpae.adapters.store.sealed import SealedFields
from bangpae.domain.audit import AuditEntry
from bangpae.domain.batch import FixBatch
from bangpae.domain.model import Event, Fix


class Store(
    EvidenceStore,
    SealedFields,
    ResponseStore,
    NoticeStore,
    AuthStore,
    RetentionStore,
    CaseStore,
    AccessStore,
    RefugeStore,
    RegistryStore,
    FixStore,
    IncidentStore,
    ReactionStore,
    AuditStore,
):
    """Durable state behind one database URL (``sqlite:///path`` or ``postgresql+psycopg://``).

    ``cipher`` seals phone numbers, order zones (see ``sealed``) and fix positions (see
    ``positions``) at rest; without one they are written in plaintext, for tools and
    tests that do not care. ``audit_key`` keys the audit chain's MACs (see ``audit``).
    """

    def __init__(
        self, url: str, cipher: FieldCipher | None = None, audit_key: bytes | None = None
    ) -> None:
        super().__init__(url)
        self.cipher = cipher
        self._init_audit(audit_key)
        self._init_incidents()

    def record_batch(
        self,
        fixes: Sequence[Fix] | FixBatch,
        late: Sequence[bool] | npt.NDArray[np.bool_],
        plans: Sequence[tuple[Event, str | None, str | None]],
        audits: Sequence[AuditEntry] = (),
    ) -> tuple[list[int], list[Event]]:
        """One transaction: fixes, new events, the incidents they open or join, and the
        audit records of the reads the batch's news will be shown in (live streams).

        ``plans`` pairs each event with its incident kind and priority. An event with a
        priority opens an incident of its kind or joins the open one; an event without
        (a zone exit, a step out of breach, the signal back) joins the open incident of
        its kind when there is one, so its timeline shows how it ended. ``audits`` are
        appended as :meth:`audit_append` would, each checked with :meth:`check_audit` first.
        Returns the fixes' ids and the events that were new.
        """
        if not len(fixes) and not plans and not audits:
            return [], []
        for a in audits:
            self.check_audit(a)
        with self._write() as c:
            ids = self._insert_fixes(c, fixes, late)
            new = self._insert_events(c, [e for e, _, _ in plans])
            self._queue_reactions(c, new)
            fresh = {e.id for e in new}
            grouped: list[tuple[Event, str, str | None]] = []
            for e, kind, priority in plans:
                if e.id in fresh and kind:
                    grouped.append((e, kind, priority))
                    fresh.discard(e.id)
            moved: list[int] = []
            if grouped:
                results = self._record_incidents(c, grouped)
                moved = [
                    r[0]
                    for r, (_, kind, _) in zip(results, grouped, strict=True)
                    if r is not None and kind == "sos"  # her SOS loop (docs/sos.md)
                ]
            for a in audits:
                self._audit_insert(c, a)
        self._incidents_moved(moved)
        return ids, new
