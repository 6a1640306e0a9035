"""The store's one public face; every method runs in its own transaction unless noted.

INTERFACE CONTRACT (filled in by the store's implementation; signatures are fixed):
all times are POSIX seconds (float, UTC); ids are integers unless noted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bangpae.domain.model import Device, Event, Fix, Order, Person


@dataclass(frozen=True, slots=True)
class StoredFix:
    """A fix as stored, with its row id and whether a legal hold protects it."""

    id: int
    fix: Fix
    late: bool


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A login account."""

    id: int
    username: str
    password_hash: str
    role: str
    person_id: int | None
    disabled: bool


@dataclass(frozen=True, slots=True)
class IncidentRecord:
    """An incident as the control centre sees it."""

    id: int
    kind: str
    priority: str
    status: str
    order_id: int | None
    person_id: int | None
    opened_at: float
    timeline: tuple[dict[str, Any], ...] = ()


class Store:
    """Durable state behind one database URL (``sqlite:///path`` or ``postgresql+psycopg://``)."""

    def __init__(self, url: str) -> None:
        raise NotImplementedError

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""
        raise NotImplementedError
