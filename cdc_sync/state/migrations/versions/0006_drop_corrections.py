"""Two-way links: drop the pending-corrections table (every built-in rule decides alike on
both sides; a custom rule must too)."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0006_drop_corrections"
down_revision: str | Sequence[str] | None = "0005_conflicts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    schema = op.get_context().version_table_schema
    op.drop_table("cdc_sync_corrections", schema=schema)


def downgrade() -> None:
    schema = op.get_context().version_table_schema
    json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    op.create_table(
        "cdc_sync_corrections",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True, autoincrement=True),
        sa.Column("pipeline", sa.String(100), nullable=False),
        sa.Column("table_name", sa.String(255), nullable=False),
        sa.Column("pk", json, nullable=False),
        sa.Column("set_values", json, nullable=False),
        sa.Column("expected", json, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        schema=schema,
    )
    op.create_index(
        "ix_cdc_sync_corrections_pipeline",
        "cdc_sync_corrections",
        ["pipeline", "id"],
        schema=schema,
    )
