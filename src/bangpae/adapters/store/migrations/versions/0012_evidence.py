"""recordings kept as evidence of an SOS: their bytes sealed with the data keys, with the
digest, type and size they arrived with (docs/evidence.md)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 17:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "evidence",
        sa.Column("id", Id, nullable=False),
        sa.Column("incident_id", Id, nullable=False),
        sa.Column("person_id", Id, nullable=False),
        sa.Column("uploaded_at", sa.Float(), nullable=False),
        sa.Column("recorded_at", sa.Float(), nullable=True),
        sa.Column("content_type", sa.String(length=32), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("blob", sa.LargeBinary(), nullable=False),
        sa.Column("uploaded_by", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name=op.f("fk_evidence_incident_id_incidents")
        ),
        sa.ForeignKeyConstraint(
            ["person_id"], ["people.id"], name=op.f("fk_evidence_person_id_people")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evidence")),
        sa.UniqueConstraint("incident_id", "sha256", name="uq_evidence_incident_sha256"),
    )


def downgrade() -> None:
    op.drop_table("evidence")
