"""Snapshot progress (initial copy and re-snapshots) and verify run results."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0004_snapshots_verify"
down_revision: str | Sequence[str] | None = "0003_dead_letters"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of cdc_sync.state.tables as of this revision (see 0001).
_TS = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _now() -> sa.TextClause | sa.sql.functions.now:
    if op.get_bind().dialect.name in ("mysql", "mariadb"):
        return sa.text("CURRENT_TIMESTAMP(6)")
    return sa.func.now()


def upgrade() -> None:
    schema = op.get_context().version_table_schema
    op.create_table(
        "cdc_sync_snapshots",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True, autoincrement=True),
        sa.Column("pipeline", sa.String(100), nullable=False),
        sa.Column("source_table", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("where_sql", sa.Text, nullable=True),
        sa.Column("last_key", sa.Text, nullable=True),
        sa.Column("rows_done", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("rows_estimate", sa.BigInteger, nullable=True),
        sa.Column("position", sa.Text, nullable=True),
        sa.Column("requested_at", _TS, nullable=False, server_default=_now()),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("updated_at", _TS, nullable=True),
        sa.Column("finished_at", _TS, nullable=True),
        sa.Column("detail", sa.Text, nullable=True),
        schema=schema,
    )
    op.create_index(
        "ix_cdc_sync_snapshots_pipeline",
        "cdc_sync_snapshots",
        ["pipeline", "status"],
        schema=schema,
    )
    op.create_table(
        "cdc_sync_verify_runs",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True, autoincrement=True),
        sa.Column("pipeline", sa.String(100), nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("finished_at", _TS, nullable=True),
        sa.Column("position", sa.Text, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("rows_checked", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("missing", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("extra", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("different", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("repaired", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column(
            "detail", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        schema=schema,
    )
    op.create_index(
        "ix_cdc_sync_verify_runs_pipeline",
        "cdc_sync_verify_runs",
        ["pipeline", "started_at"],
        schema=schema,
    )


def downgrade() -> None:
    schema = op.get_context().version_table_schema
    op.drop_table("cdc_sync_verify_runs", schema=schema)
    op.drop_table("cdc_sync_snapshots", schema=schema)
