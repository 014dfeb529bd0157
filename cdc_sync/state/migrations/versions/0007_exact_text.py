"""State tables hold and compare text exactly (MySQL utf8mb4_bin; PostgreSQL audit keys "C")."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007_exact_text"
down_revision: str | Sequence[str] | None = "0006_drop_corrections"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The tables of revision 0006. Until now they took the database's default character set
# and collation: latin1 (MySQL 5.7, upstream MariaDB) refused any key outside Latin-1 in the
# audit, which stopped the pipeline, and a case-insensitive collation made the audit's
# `pk = '{"code":"abc"}'` match 'ABC' as well.
_TABLES = (
    "cdc_sync_checkpoints",
    "cdc_sync_audit",
    "cdc_sync_dead_letters",
    "cdc_sync_snapshots",
    "cdc_sync_verify_runs",
    "cdc_sync_conflicts",
    "cdc_sync_row_clock",
)
_AUDIT_KEYS = (("source_table", 255), ("target_table", 255), ("pk", None))


def _qualified(schema: str | None, table: str) -> str:
    return f"`{schema}`.`{table}`" if schema else f"`{table}`"


def _upgrade_mysql(schema: str | None) -> None:
    bind = op.get_bind()
    done = set(
        bind.execute(
            sa.text(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = COALESCE(:s, DATABASE()) "
                "AND table_collation = 'utf8mb4_bin'"
            ),
            {"s": schema},
        ).scalars()
    )
    for table in _TABLES:
        # Skipped when made so already: CONVERT copies the table (a big audit takes a while).
        if table not in done:
            op.execute(
                f"ALTER TABLE {_qualified(schema, table)} "
                "CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            )


def upgrade() -> None:
    schema = op.get_context().version_table_schema
    if op.get_bind().dialect.name in ("mysql", "mariadb"):
        _upgrade_mysql(schema)
        return
    if op.get_bind().dialect.name != "postgresql":
        return
    # Same bytes, same equality: PostgreSQL rebuilds the (target_table, pk) index only.
    for column, length in _AUDIT_KEYS:
        new = postgresql.TEXT(collation="C") if length is None else sa.String(length, "C")
        op.alter_column("cdc_sync_audit", column, type_=new, schema=schema)


def downgrade() -> None:
    schema = op.get_context().version_table_schema
    if op.get_bind().dialect.name != "postgresql":
        return  # MySQL: the earlier character set is not known; utf8mb4_bin holds it all
    for column, length in _AUDIT_KEYS:
        old = sa.Text() if length is None else sa.String(length)
        op.alter_column("cdc_sync_audit", column, type_=old, schema=schema)
