"""What the store's mixins may use of :class:`~bangpae.adapters.store.store.Store`.

Declared once, for type checkers only: ``Store`` itself provides each of these.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, Connection, Row


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
