"""The durable store: SQLAlchemy 2 on SQLite (WAL) or PostgreSQL, Alembic migrations."""

from bangpae.adapters.store.audit import AnchorMark, AuditKeyMissing, AuditReport
from bangpae.adapters.store.store import Store
from bangpae.domain.accounts import UserRecord
from bangpae.domain.incidents import IncidentRecord
from bangpae.domain.model import StoredFix

__all__ = [
    "AnchorMark",
    "AuditKeyMissing",
    "AuditReport",
    "IncidentRecord",
    "Store",
    "StoredFix",
    "UserRecord",
]
