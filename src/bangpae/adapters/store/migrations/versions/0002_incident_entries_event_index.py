"""index incident entries by event id

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 04:50:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_incident_entries_event_id", "incident_entries", ["event_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_incident_entries_event_id", table_name="incident_entries")
