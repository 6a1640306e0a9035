"""places of refuge, imported by the control centre (docs/refuges.md)

Revision ID: 0011
Revises: 0010
Create Date: 2027-01-20 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "refuges",
        sa.Column("id", Id, nullable=False),
        sa.Column("ref", sa.String(length=100), nullable=False),
        sa.Column("name_ko", sa.String(length=200), nullable=False),
        sa.Column("name_en", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("hours", sa.String(length=64), nullable=True),
        sa.Column("phone", sa.String(length=24), nullable=True),
        sa.Column("imported_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refuges")),
        sa.UniqueConstraint("ref", name=op.f("uq_refuges_ref")),
    )
    op.create_index("ix_refuges_lat_lon", "refuges", ["lat", "lon"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_refuges_lat_lon", table_name="refuges")
    op.drop_table("refuges")
