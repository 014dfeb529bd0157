"""Initial cdc_sync state: checkpoints (with fencing lease) and audit log."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0001_initial"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of the definitions in cdc_sync.state.tables as of this revision: a migration
# must keep meaning the same thing when the model module changes later.
# MySQL / MariaDB: DATETIME(6) in UTC (the sessions run in UTC); TIMESTAMP would end in 2038.
_TS = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _now() -> sa.TextClause | sa.sql.functions.now:
    # CURRENT_TIMESTAMP(6) on MySQL: the default must have the column's fractional digits.
    if op.get_bind().dialect.name in ("mysql", "mariadb"):
        return sa.text("CURRENT_TIMESTAMP(6)")
    return sa.func.now()


def upgrade() -> None:
    schema = op.get_context().version_table_schema
    op.create_table(
        "cdc_sync_checkpoints",
        sa.Column("pipeline", sa.String(100), primary_key=True),
        sa.Column("position", sa.Text, nullable=True),
        sa.Column("source_tx", sa.Text, nullable=True),
        sa.Column("committed_at", _TS, nullable=True),
        sa.Column("updated_at", _TS, nullable=False, server_default=_now()),
        sa.Column("owner", sa.Text, nullable=True),
        sa.Column("token", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("lease_expires_at", _TS, nullable=True),
        sa.Column("source_id", sa.Text, nullable=True),
        schema=schema,
    )
    op.create_table(
        "cdc_sync_audit",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True, autoincrement=True),
        sa.Column("pipeline", sa.String(100), nullable=False),
        sa.Column("source_table", sa.String(255), nullable=True),
        sa.Column("target_table", sa.String(255), nullable=True),
        sa.Column("op", sa.String(16), nullable=False),
        sa.Column("pk", sa.Text, nullable=True),
        sa.Column("source_position", sa.Text, nullable=True),
        sa.Column("source_tx", sa.Text, nullable=True),
        sa.Column("committed_at", _TS, nullable=True),
        sa.Column("applied_at", _TS, nullable=False, server_default=_now()),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column(
            "detail", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        schema=schema,
    )
    # BRIN on PostgreSQL: the audit is append-only and applied_at grows with it, so a block
    # range index answers time-window queries at a fraction of a btree's upkeep per row.
    op.create_index(
        "ix_cdc_sync_audit_applied_at",
        "cdc_sync_audit",
        ["applied_at"],
        schema=schema,
        postgresql_using="brin",
    )
    op.create_index(
        "ix_cdc_sync_audit_table_pk",
        "cdc_sync_audit",
        ["target_table", "pk"],
        schema=schema,
        mysql_length={"pk": 255},
    )
    op.create_index(
        "ix_cdc_sync_audit_pipeline_id", "cdc_sync_audit", ["pipeline", "id"], schema=schema
    )


def downgrade() -> None:
    schema = op.get_context().version_table_schema
    op.drop_table("cdc_sync_audit", schema=schema)
    op.drop_table("cdc_sync_checkpoints", schema=schema)
