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
DEAD_LETTERS = "cdc_sync_dead_letters"
SNAPSHOTS = "cdc_sync_snapshots"
VERIFY_RUNS = "cdc_sync_verify_runs"
CONFLICTS = "cdc_sync_conflicts"
ROW_CLOCK = "cdc_sync_row_clock"
ALEMBIC_VERSION_TABLE = "cdc_sync_alembic_version"

# Types are chosen to work on PostgreSQL now and MySQL/MariaDB later (issue #3): indexed
# identifiers are bounded VARCHARs (MySQL cannot index TEXT without a prefix length), long
# free text is TEXT, and JSON is JSONB on PostgreSQL and the generic JSON type elsewhere.
_NAME = sa.String(255)
_PIPELINE = sa.String(100)
# The audit's indexed key text: compared byte for byte. On PostgreSQL the "C" collation keeps
# equality as it is (deterministic collations compare bytes for equality anyway) but makes
# each index insert a memcmp instead of a linguistic comparison (measured: 125k audit rows
# 0.55 s against 0.75 s under an ICU collation) and lets `pk LIKE 'prefix%'` use the index.
_KEY_TEXT = sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")
_NAME_C = _NAME.with_variant(postgresql.VARCHAR(255, collation="C"), "postgresql")
# MySQL / MariaDB: every state table holds any Unicode text and compares it exactly, whatever
# the database's default (often latin1 or a case-insensitive collation, where a non-Latin-1
# key stopped the pipeline and 'ABC' matched 'abc'); see migration 0007.
_MY_CHARSET, _MY_COLLATE = "utf8mb4", "utf8mb4_bin"


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
        mysql_charset=_MY_CHARSET,
        mysql_collate=_MY_COLLATE,
    )
    sa.Table(
        AUDIT,
        metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True, autoincrement=True),
        sa.Column("pipeline", _PIPELINE, nullable=False),
        # Transaction-level rows (op 'transaction') have no single table or key.
        sa.Column("source_table", _NAME_C, nullable=True),
        sa.Column("target_table", _NAME_C, nullable=True),
        sa.Column("op", sa.String(16), nullable=False),
        # Key values only, as a JSON object in key order; never other row values (PII).
        sa.Column("pk", _KEY_TEXT, nullable=True),
        sa.Column("source_position", sa.Text, nullable=True),
        sa.Column("source_tx", sa.Text, nullable=True),
        sa.Column("committed_at", _TS, nullable=True),
        sa.Column("applied_at", _TS, nullable=False, server_default=sa.func.now()),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("detail", _JSON_DETAIL, nullable=True),
        sa.Index("ix_cdc_sync_audit_applied_at", "applied_at", postgresql_using="brin"),
        sa.Index("ix_cdc_sync_audit_table_pk", "target_table", "pk", mysql_length={"pk": 255}),
        mysql_charset=_MY_CHARSET,
        mysql_collate=_MY_COLLATE,
    )
    sa.Table(
        DEAD_LETTERS,
        metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True, autoincrement=True),
        sa.Column("pipeline", _PIPELINE, nullable=False),
        sa.Column("source_table", _NAME, nullable=False),
        sa.Column("target_table", _NAME, nullable=False),
        sa.Column("op", sa.String(16), nullable=False),
        # Target-side key (after the key columns' rules: masked / hashed where configured).
        sa.Column("pk", sa.Text, nullable=True),
        # Source key, for `dlq retry` to re-read the row; NULL when a key column is masked,
        # hashed or redacted (the raw key is PII then and is not kept here).
        sa.Column("source_pk", sa.Text, nullable=True),
        sa.Column("source_position", sa.Text, nullable=True),
        sa.Column("source_tx", sa.Text, nullable=True),
        sa.Column("committed_at", _TS, nullable=True),
        sa.Column("created_at", _TS, nullable=False, server_default=sa.func.now()),
        # 'rule': a mapping / cleansing rule refused the row; 'target': the target refused it.
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("rule", sa.String(64), nullable=True),  # phone, map, cast, filter, custom, …
        sa.Column("column_name", _NAME, nullable=True),
        sa.Column("error_code", sa.String(16), nullable=True),  # SQLSTATE / MySQL errno
        sa.Column("constraint_name", _NAME, nullable=True),
        sa.Column("reason", sa.Text, nullable=False),  # what to fix; never a row value
        sa.Column("row_masked", _JSON_DETAIL, nullable=True),  # see transforms masked_row
        sa.Column("status", sa.String(16), nullable=False, server_default="open"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("resolved_at", _TS, nullable=True),
        sa.Column("resolved_by", sa.Text, nullable=True),
        sa.Index("ix_cdc_sync_dead_letters_open", "pipeline", "status", "source_table"),
        mysql_charset=_MY_CHARSET,
        mysql_collate=_MY_COLLATE,
    )
    sa.Table(
        SNAPSHOTS,
        metadata,
        # One row per table copy: the initial snapshot's tables and each re-snapshot request.
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True, autoincrement=True),
        sa.Column("pipeline", _PIPELINE, nullable=False),
        sa.Column("source_table", _NAME, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),  # initial | resnapshot
        sa.Column("status", sa.String(16), nullable=False),  # requested|running|done|failed
        sa.Column("where_sql", sa.Text, nullable=True),  # re-snapshot slice
        # Source key of the last row copied (JSON list, audit.keys.json_safe): the resume
        # point of a keyset scan. A source key, as dead letters keep it (docs/snapshot.md).
        sa.Column("last_key", sa.Text, nullable=True),
        sa.Column("rows_done", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("rows_estimate", sa.BigInteger, nullable=True),
        sa.Column("position", sa.Text, nullable=True),  # initial: where the stream starts
        sa.Column("requested_at", _TS, nullable=False, server_default=sa.func.now()),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("updated_at", _TS, nullable=True),
        sa.Column("finished_at", _TS, nullable=True),
        sa.Column("detail", sa.Text, nullable=True),  # why it failed; never a row value
        sa.Index("ix_cdc_sync_snapshots_pipeline", "pipeline", "status"),
        mysql_charset=_MY_CHARSET,
        mysql_collate=_MY_COLLATE,
    )
    sa.Table(
        VERIFY_RUNS,
        metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True, autoincrement=True),
        sa.Column("pipeline", _PIPELINE, nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("finished_at", _TS, nullable=True),
        sa.Column("position", sa.Text, nullable=True),  # source head the rows were checked at
        sa.Column("status", sa.String(16), nullable=False),  # equal | differences | error
        sa.Column("rows_checked", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("missing", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("extra", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("different", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("repaired", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("detail", _JSON_DETAIL, nullable=True),  # per table counts; no row values
        sa.Index("ix_cdc_sync_verify_runs_pipeline", "pipeline", "started_at"),
        mysql_charset=_MY_CHARSET,
        mysql_collate=_MY_COLLATE,
    )
    sa.Table(
        CONFLICTS,
        metadata,
        # Two-way links: one row per conflict a pipeline detected, written in the same target
        # transaction as the data (docs/two-way.md). Holds row values: a link has no masking
        # rules, and both databases hold these values already.
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True, autoincrement=True),
        sa.Column("pipeline", _PIPELINE, nullable=False),
        sa.Column("link", _PIPELINE, nullable=False),
        sa.Column("source_table", _NAME, nullable=True),
        sa.Column("target_table", _NAME, nullable=True),
        sa.Column("pk", sa.Text, nullable=True),  # JSON object of the key, as the audit's
        sa.Column("op", sa.String(16), nullable=True),  # incoming op: insert|update|delete
        # insert_insert | update_update | update_delete | delete_update
        sa.Column("kind", sa.String(32), nullable=True),
        sa.Column("rule", sa.String(32), nullable=True),  # last_write_wins|source_priority|custom
        sa.Column("winner", sa.String(16), nullable=True),  # incoming|current|merged|none
        sa.Column("outcome", sa.String(32), nullable=True),  # conflict_resolved|…_dead_letter
        sa.Column("incoming", _JSON_DETAIL, nullable=True),
        sa.Column("current", _JSON_DETAIL, nullable=True),
        sa.Column("before", _JSON_DETAIL, nullable=True),
        sa.Column("resolved", _JSON_DETAIL, nullable=True),
        sa.Column("incoming_commit_time", _TS, nullable=False),
        sa.Column("current_commit_time", _TS, nullable=True),
        sa.Column("incoming_position", _NAME, nullable=False),
        sa.Column("current_position", _NAME, nullable=True),
        sa.Column("detected_at", _TS, nullable=False),
        sa.Index("ix_cdc_sync_conflicts_pipeline", "pipeline", "detected_at"),
        sa.Index("ix_cdc_sync_conflicts_table", "target_table", "detected_at"),
        mysql_charset=_MY_CHARSET,
        mysql_collate=_MY_COLLATE,
    )
    sa.Table(
        ROW_CLOCK,
        metadata,
        # Two-way links, last_write_wins: the version time of a row on one side of a link
        # (runtime/link_clock.py). `remote_*`: the source commit time (and, on MySQL targets,
        # the row digest) of the version the link wrote; `local_*`: the commit time of a
        # local change, stamped by the capture of this side as it reads it.
        sa.Column("link", _PIPELINE, primary_key=True),
        sa.Column("table_name", _NAME, primary_key=True),
        sa.Column("key_hash", sa.String(64), primary_key=True),
        sa.Column("remote_time", _TS, nullable=True),
        sa.Column("remote_digest", sa.String(64), nullable=True),
        sa.Column("local_time", _TS, nullable=True),
        sa.Column("local_position", _NAME, nullable=True),
        sa.Column("updated_at", _TS, nullable=False),
        mysql_charset=_MY_CHARSET,
        mysql_collate=_MY_COLLATE,
    )
    return metadata


@dataclass(frozen=True)
class StateTables:
    """The daemon's tables for one target schema (None: the connection's default schema)."""

    metadata: sa.MetaData
    checkpoints: sa.Table
    audit: sa.Table
    dead_letters: sa.Table
    snapshots: sa.Table
    verify_runs: sa.Table
    conflicts: sa.Table
    row_clock: sa.Table


@functools.cache
def state_tables(schema: str | None = None) -> StateTables:
    """Cached per schema: Table objects are immutable in use and compiled statements reuse."""
    md = _build(schema)
    prefix = f"{schema}." if schema else ""
    return StateTables(
        md,
        md.tables[prefix + CHECKPOINTS],
        md.tables[prefix + AUDIT],
        md.tables[prefix + DEAD_LETTERS],
        md.tables[prefix + SNAPSHOTS],
        md.tables[prefix + VERIFY_RUNS],
        md.tables[prefix + CONFLICTS],
        md.tables[prefix + ROW_CLOCK],
    )


metadata = state_tables().metadata
"""Metadata for the default schema: what Alembic autogenerate compares against."""
checkpoints = state_tables().checkpoints
audit = state_tables().audit
dead_letters = state_tables().dead_letters
snapshots = state_tables().snapshots
verify_runs = state_tables().verify_runs
conflicts = state_tables().conflicts
row_clock = state_tables().row_clock
