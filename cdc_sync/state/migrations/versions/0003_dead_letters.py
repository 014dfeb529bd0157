"""Dead letters: rows a rule or the target refused, kept (masked) for list / retry / discard."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0003_dead_letters"
down_revision: str | Sequence[str] | None = "0002_audit_drop_pipeline_index"
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
        "cdc_sync_dead_letters",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True, autoincrement=True),
        sa.Column("pipeline", sa.String(100), nullable=False),
        sa.Column("source_table", sa.String(255), nullable=False),
        sa.Column("target_table", sa.String(255), nullable=False),
        sa.Column("op", sa.String(16), nullable=False),
        sa.Column("pk", sa.Text, nullable=True),
        sa.Column("source_pk", sa.Text, nullable=True),
        sa.Column("source_position", sa.Text, nullable=True),
        sa.Column("source_tx", sa.Text, nullable=True),
        sa.Column("committed_at", _TS, nullable=True),
        sa.Column("created_at", _TS, nullable=False, server_default=_now()),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("rule", sa.String(64), nullable=True),
        sa.Column("column_name", sa.String(255), nullable=True),
        sa.Column("error_code", sa.String(16), nullable=True),
        sa.Column("constraint_name", sa.String(255), nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column(
            "row_masked", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        sa.Column("status", sa.String(16), nullable=False, server_default="open"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("resolved_at", _TS, nullable=True),
        sa.Column("resolved_by", sa.Text, nullable=True),
        schema=schema,
    )
    op.create_index(
        "ix_cdc_sync_dead_letters_open",
        "cdc_sync_dead_letters",
        ["pipeline", "status", "source_table"],
        schema=schema,
    )


def downgrade() -> None:
    schema = op.get_context().version_table_schema
    op.drop_table("cdc_sync_dead_letters", schema=schema)
