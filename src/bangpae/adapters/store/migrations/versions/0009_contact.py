"""her SMS choices on people, and the text messages sent by SMPP with their receipts

Revision ID: 0009
Revises: 0008
Create Date: 2027-01-12 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("people") as batch:
        batch.add_column(sa.Column("sms_prefs", sa.JSON(), nullable=True))
    op.create_table(
        "sms_messages",
        sa.Column("id", Id, nullable=False),
        sa.Column("person_id", Id, nullable=False),
        sa.Column("notice_id", Id, nullable=True),
        sa.Column("dedup_key", sa.String(length=200), nullable=False),
        sa.Column("notice_at", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("message_id", sa.String(length=65), nullable=True),
        sa.Column("parts", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("queued_at", sa.Float(), nullable=False),
        sa.Column("submitted_at", sa.Float(), nullable=True),
        sa.Column("done_at", sa.Float(), nullable=True),
        sa.Column("error", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["person_id"], ["people.id"], name=op.f("fk_sms_messages_person_id_people")
        ),
        sa.ForeignKeyConstraint(
            ["notice_id"],
            ["notices.id"],
            name=op.f("fk_sms_messages_notice_id_notices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_messages")),
    )
    op.create_index("ix_sms_messages_message_id", "sms_messages", ["message_id"], unique=False)
    op.create_index(
        "ix_sms_messages_person", "sms_messages", ["person_id", "kind", "queued_at"], unique=False
    )
    op.create_index(
        "ix_sms_messages_notice", "sms_messages", ["dedup_key", "notice_at"], unique=False
    )


def downgrade() -> None:
    # SQLite drops a plain column in place: rebuilding the table would drop one that
    # other tables' rows still refer to, which their foreign keys refuse.
    op.drop_index("ix_sms_messages_notice", table_name="sms_messages")
    op.drop_index("ix_sms_messages_person", table_name="sms_messages")
    op.drop_index("ix_sms_messages_message_id", table_name="sms_messages")
    op.drop_table("sms_messages")
    with op.batch_alter_table("people", recreate="never") as batch:
        batch.drop_column("sms_prefs")
