"""The durable store: SQLAlchemy 2 on SQLite (WAL) or PostgreSQL, Alembic migrations."""

from bangpae.adapters.store.audit import AnchorMark, AuditKeyMissing, AuditReport
from bangpae.adapters.store.auth import UserRecord
from bangpae.adapters.store.fixes import StoredFix
from bangpae.adapters.store.incidents import IncidentRecord
from bangpae.adapters.store.store import Store

__all__ = [
    "AnchorMark",
    "AuditKeyMissing",
    "AuditReport",
    "IncidentRecord",
    "Store",
    "StoredFix",
    "UserRecord",
]
