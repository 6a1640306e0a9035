"""The durable store: SQLAlchemy 2 on SQLite (WAL) or PostgreSQL, Alembic migrations."""

from bangpae.adapters.store.store import Store

__all__ = ["Store"]
