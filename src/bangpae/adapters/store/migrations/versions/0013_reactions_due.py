"""committed events whose reactions have not all run yet, so that a restart resumes them
(docs/architecture.md, "Reactions")

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08 00:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "reactions_due",
        sa.Column("seq", Id, nullable=False),
        sa.Column("event_id", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_reactions_due")),
        sa.UniqueConstraint("event_id", name=op.f("uq_reactions_due_event_id")),
    )


def downgrade() -> None:
    op.drop_table("reactions_due")
