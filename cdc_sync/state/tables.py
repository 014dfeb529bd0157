"""SQLAlchemy table definitions of the daemon's own ``cdc_sync_*`` tables in the target."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

CHECKPOINTS = "cdc_sync_checkpoints"
AUDIT = "cdc_sync_audit"
ALEMBIC_VERSION_TABLE = "cdc_sync_alembic_version"

# Types are chosen to work on PostgreSQL now and MySQL/MariaDB later (issue #3): indexed
# identifiers are bounded VARCHARs (MySQL cannot index TEXT without a prefix length), long
# free text is TEXT, and JSON is JSONB on PostgreSQL and the generic JSON type elsewhere.
_NAME = sa.String(255)
_PIPELINE = sa.String(100)


class UtcDateTime(sa.TypeDecorator[datetime]):
    """timestamptz on PostgreSQL; DATETIME(6) holding UTC on MySQL / MariaDB (whose TIMESTAMP
    ends in 2038 and whose drivers refuse aware datetimes). Always aware UTC in Python."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None and dialect.name != "postgresql":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # MySQL sessions run in UTC ('+00:00')
        return value


_TS = UtcDateTime()
_JSON_DETAIL = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _build(schema: str | None) -> sa.MetaData:
    metadata = sa.MetaData(schema=schema)
    sa.Table(
        CHECKPOINTS,
        metadata,
        sa.Column("pipeline", _PIPELINE, primary_key=True),
        # Position.to_text(); NULL until the first batch commits (the row exists from the
        # first lease on, so the fencing token is in place before any data is written).
        sa.Column("position", sa.Text, nullable=True),
        sa.Column("source_tx", sa.Text, nullable=True),
        sa.Column("committed_at", _TS, nullable=True),  # source commit time of `position`
        sa.Column("updated_at", _TS, nullable=False, server_default=sa.func.now()),
        # Single-active-daemon rule (invariant 6): whoever took the lease last holds the
        # highest token; a save with an older token matches no row and is refused.
        sa.Column("owner", sa.Text, nullable=True),
        sa.Column("token", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("lease_expires_at", _TS, nullable=True),
        # Identity of the source server (PG system identifier, MySQL server_uuid) so that a
        # replaced source whose positions mean something else can be detected.
        sa.Column("source_id", sa.Text, nullable=True),
    )
    sa.Table(
        AUDIT,
        metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True, autoincrement=True),
        sa.Column("pipeline", _PIPELINE, nullable=False),
        # Transaction-level rows (op 'transaction') have no single table or key.
        sa.Column("source_table", _NAME, nullable=True),
        sa.Column("target_table", _NAME, nullable=True),
        sa.Column("op", sa.String(16), nullable=False),
        # Key values only, as a JSON object in key order; never other row values (PII).
        sa.Column("pk", sa.Text, nullable=True),
        sa.Column("source_position", sa.Text, nullable=True),
        sa.Column("source_tx", sa.Text, nullable=True),
        sa.Column("committed_at", _TS, nullable=True),
        sa.Column("applied_at", _TS, nullable=False, server_default=sa.func.now()),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("detail", _JSON_DETAIL, nullable=True),
        sa.Index("ix_cdc_sync_audit_applied_at", "applied_at", postgresql_using="brin"),
        sa.Index("ix_cdc_sync_audit_table_pk", "target_table", "pk", mysql_length={"pk": 255}),
    )
    return metadata


@dataclass(frozen=True)
class StateTables:
    """The daemon's tables for one target schema (None: the connection's default schema)."""

    metadata: sa.MetaData
    checkpoints: sa.Table
    audit: sa.Table


@functools.cache
def state_tables(schema: str | None = None) -> StateTables:
    """Cached per schema: Table objects are immutable in use and compiled statements reuse."""
    md = _build(schema)
    prefix = f"{schema}." if schema else ""
    return StateTables(md, md.tables[prefix + CHECKPOINTS], md.tables[prefix + AUDIT])


metadata = state_tables().metadata
"""Metadata for the default schema: what Alembic autogenerate compares against."""
checkpoints = state_tables().checkpoints
audit = state_tables().audit
