"""The durable store: SQLAlchemy 2 on SQLite (WAL) or PostgreSQL, Alembic migrations."""

from bangpae.adapters.store.store import (
    AnchorMark,
    AuditKeyMissing,
    AuditReport,
    IncidentRecord,
    Store,
    StoredFix,
    UserRecord,
)

__all__ = [
    "AnchorMark",
    "AuditKeyMissing",
    "AuditReport",
    "IncidentRecord",
    "Store",
    "StoredFix",
    "UserRecord",
]
