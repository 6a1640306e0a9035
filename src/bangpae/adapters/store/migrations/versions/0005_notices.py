"""notices to victims and staff, Web Push subscriptions, a phone number per person

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 13:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("people") as batch:
        batch.add_column(sa.Column("phone", sa.Text(), nullable=True))
    op.create_table(
        "notices",
        sa.Column("id", Id, nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("order_id", Id, nullable=True),
        sa.Column("audience", sa.String(length=16), nullable=False),
        sa.Column("person_id", Id, nullable=True),
        sa.Column("role", sa.String(length=16), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column("dedup_key", sa.String(length=200), nullable=False),
        sa.Column("text", sa.JSON(), nullable=False),
        sa.Column("delivery", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_notices_order_id_orders")
        ),
        sa.ForeignKeyConstraint(
            ["person_id"], ["people.id"], name=op.f("fk_notices_person_id_people")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notices")),
    )
    op.create_index("ix_notices_dedup", "notices", ["dedup_key", "at"], unique=False)
    op.create_index("ix_notices_person", "notices", ["person_id", "id"], unique=False)
    op.create_table(
        "push_subscriptions",
        sa.Column("id", Id, nullable=False),
        sa.Column("user_id", Id, nullable=False),
        sa.Column("endpoint", sa.String(length=1000), nullable=False),
        sa.Column("p256dh", sa.String(length=200), nullable=False),
        sa.Column("auth", sa.String(length=64), nullable=False),
        sa.Column("lang", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_ok_at", sa.Float(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_push_subscriptions_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_push_subscriptions")),
        sa.UniqueConstraint("endpoint", name=op.f("uq_push_subscriptions_endpoint")),
    )


def downgrade() -> None:
    op.drop_table("push_subscriptions")
    op.drop_index("ix_notices_person", table_name="notices")
    op.drop_index("ix_notices_dedup", table_name="notices")
    op.drop_table("notices")
    with op.batch_alter_table("people") as batch:
        batch.drop_column("phone")
