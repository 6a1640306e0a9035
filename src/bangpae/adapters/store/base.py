"""What the store's mixins share: the timeline entry of a person's action, and what they
may use of :class:`~bangpae.adapters.store.store.Store`, declared once for type checkers
(``Store`` itself provides each of those).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, Connection, Row

from bangpae.adapters.store import schema as s


def insert_action_entry(
    c: Connection,
    incident_id: int,
    action: str,
    actor: str,
    at: float,
    note: str,
    data: dict[str, Any],
) -> None:
    """One timeline entry of something a person did to an incident (no event behind it)."""
    c.execute(
        s.incident_entries.insert().values(
            incident_id=incident_id,
            at=at,
            action=action,
            actor=actor,
            note=note,
            event_id=None,
            data=data,
        )
    )


class StoreBase:
    """The base of every store mixin."""

    if TYPE_CHECKING:  # provided by Store
        _audit_lock: threading.Lock

        @property
        def dialect(self) -> str:
            """``sqlite`` or ``postgresql``."""
            ...

        def _read(self) -> AbstractContextManager[Connection]: ...
        def _write(self) -> AbstractContextManager[Connection]: ...
        def _pg_lock(self, c: Connection, key: int) -> None: ...
        def _seal(self, column: Column[Any], value: Any) -> Any: ...
        def _open(self, column: Column[Any], value: Any, row_id: Any) -> Any: ...
        @staticmethod
        def _stored(r: Row[Any]) -> Any: ...
        def _audit_insert(
            self,
            c: Connection,
            actor: str,
            role: str,
            action: str,
            subject: str,
            purpose: str,
            fields: Sequence[str] = (),
            *,
            at: float,
            request_id: str | None = None,
        ) -> int: ...
