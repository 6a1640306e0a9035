"""users: the app-lock PIN and the duress PIN (argon2 hashes); incidents: under duress

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("app_pin_hash", sa.String(200), nullable=True))
        batch.add_column(sa.Column("duress_pin_hash", sa.String(200), nullable=True))
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(
            sa.Column("duress", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    # SQLite drops a plain column in place: rebuilding the table would drop one that
    # other tables' rows still refer to, which their foreign keys refuse.
    with op.batch_alter_table("incidents", recreate="never") as batch:
        batch.drop_column("duress")
    with op.batch_alter_table("users", recreate="never") as batch:
        batch.drop_column("duress_pin_hash")
        batch.drop_column("app_pin_hash")
