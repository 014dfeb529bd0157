"""Two-way links: conflict log, last_write_wins row clock, pending corrections."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0005_conflicts"
down_revision: str | Sequence[str] | None = "0004_snapshots_verify"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of cdc_sync.state.tables as of this revision (see 0001).
_TS = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    schema = op.get_context().version_table_schema
    op.create_table(
        "cdc_sync_conflicts",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True, autoincrement=True),
        sa.Column("pipeline", sa.String(100), nullable=False),
        sa.Column("link", sa.String(100), nullable=False),
        sa.Column("source_table", sa.String(255), nullable=True),
        sa.Column("target_table", sa.String(255), nullable=True),
        sa.Column("pk", sa.Text, nullable=True),
        sa.Column("op", sa.String(16), nullable=True),
        sa.Column("kind", sa.String(32), nullable=True),
        sa.Column("rule", sa.String(32), nullable=True),
        sa.Column("winner", sa.String(16), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.Column(
            "incoming", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        sa.Column(
            "current", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        sa.Column(
            "before", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        sa.Column(
            "resolved", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        sa.Column("incoming_commit_time", _TS, nullable=False),
        sa.Column("current_commit_time", _TS, nullable=True),
        sa.Column("incoming_position", sa.String(255), nullable=False),
        sa.Column("current_position", sa.String(255), nullable=True),
        sa.Column("detected_at", _TS, nullable=False),
        schema=schema,
    )
    op.create_index(
        "ix_cdc_sync_conflicts_pipeline",
        "cdc_sync_conflicts",
        ["pipeline", "detected_at"],
        schema=schema,
    )
    op.create_index(
        "ix_cdc_sync_conflicts_table",
        "cdc_sync_conflicts",
        ["target_table", "detected_at"],
        schema=schema,
    )
    op.create_table(
        "cdc_sync_row_clock",
        sa.Column("link", sa.String(100), primary_key=True),
        sa.Column("table_name", sa.String(255), primary_key=True),
        sa.Column("key_hash", sa.String(64), primary_key=True),
        sa.Column("remote_time", _TS, nullable=True),
        sa.Column("remote_digest", sa.String(64), nullable=True),
        sa.Column("local_time", _TS, nullable=True),
        sa.Column("local_position", sa.String(255), nullable=True),
        sa.Column("updated_at", _TS, nullable=False),
        schema=schema,
    )
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


def downgrade() -> None:
    schema = op.get_context().version_table_schema
    op.drop_table("cdc_sync_corrections", schema=schema)
    op.drop_table("cdc_sync_row_clock", schema=schema)
    op.drop_table("cdc_sync_conflicts", schema=schema)
