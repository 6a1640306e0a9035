"""fix positions in one record: lat, lon, speed and heading leave their columns for
``position``, which the store seals with the data keys (docs/data-at-rest.md)

The migration itself has no keys: it packs each row's values into a plaintext record
(first byte 0), in batches, and drops the old columns; the store, opened with its keys,
then seals those records and scrubs the file (Store.migrate). A downgrade restores the
columns from plaintext records only: with sealed ones it stops, and says so.

Revision ID: 0008
Revises: 0007
Create Date: 2027-01-05 09:00:00
"""

import math
import struct
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As adapters/store/positions.py writes them; kept here, so this revision never changes.
PLAIN = b"\x00"
POSITION = struct.Struct("<dddd")  # lat, lon, speed_mps, heading_deg (NaN: unknown)
BATCH = 5000
PLAIN_WHERE = {
    "sqlite": "substr(position, 1, 1) = x'00'",
    "postgresql": "get_byte(position, 0) = 0",
}


def _nan(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _none(x: float) -> float | None:
    return None if math.isnan(x) else x


def upgrade() -> None:
    with op.batch_alter_table("fixes") as batch:
        batch.add_column(sa.Column("position", sa.LargeBinary(), nullable=True))
    conn = op.get_bind()
    after = 0
    while True:
        rows = conn.execute(
            sa.text(
                "SELECT id, lat, lon, speed_mps, heading_deg FROM fixes WHERE id > :after "
                "ORDER BY id LIMIT :n"
            ),
            {"after": after, "n": BATCH},
        ).all()
        if not rows:
            break
        conn.execute(
            sa.text("UPDATE fixes SET position = :p WHERE id = :id"),
            [
                {"id": r[0], "p": PLAIN + POSITION.pack(r[1], r[2], _nan(r[3]), _nan(r[4]))}
                for r in rows
            ],
        )
        after = rows[-1][0]
    with op.batch_alter_table("fixes") as batch:
        batch.alter_column("position", existing_type=sa.LargeBinary(), nullable=False)
        for name in ("lat", "lon", "speed_mps", "heading_deg"):
            batch.drop_column(name)
    op.create_index(
        "ix_fixes_plain",
        "fixes",
        ["id"],
        sqlite_where=sa.text(PLAIN_WHERE["sqlite"]),
        postgresql_where=sa.text(PLAIN_WHERE["postgresql"]),
    )


def downgrade() -> None:
    conn = op.get_bind()
    where = PLAIN_WHERE[conn.dialect.name]
    sealed = conn.execute(sa.text(f"SELECT count(*) FROM fixes WHERE NOT ({where})")).scalar()
    if sealed:
        raise RuntimeError(
            f"{sealed} fix positions are sealed with the data keys: schema 0007 keeps them in "
            "plaintext columns, and a migration has no keys to open them with"
        )
    op.drop_index("ix_fixes_plain", table_name="fixes")
    with op.batch_alter_table("fixes") as batch:
        for name in ("lat", "lon", "speed_mps", "heading_deg"):
            batch.add_column(sa.Column(name, sa.Float(), nullable=True))
    after = 0
    while True:
        rows = conn.execute(
            sa.text("SELECT id, position FROM fixes WHERE id > :after ORDER BY id LIMIT :n"),
            {"after": after, "n": BATCH},
        ).all()
        if not rows:
            break
        params = []
        for row_id, record in rows:
            lat, lon, speed, heading = POSITION.unpack(bytes(record)[1:])
            params.append(
                {"id": row_id, "a": lat, "o": lon, "s": _none(speed), "h": _none(heading)}
            )
        conn.execute(
            sa.text(
                "UPDATE fixes SET lat = :a, lon = :o, speed_mps = :s, heading_deg = :h "
                "WHERE id = :id"
            ),
            params,
        )
        after = rows[-1][0]
    with op.batch_alter_table("fixes") as batch:
        batch.alter_column("lat", existing_type=sa.Float(), nullable=False)
        batch.alter_column("lon", existing_type=sa.Float(), nullable=False)
        batch.drop_column("position")
