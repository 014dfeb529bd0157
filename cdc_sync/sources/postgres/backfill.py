"""The value a column added to a PostgreSQL table holds in the rows that existed before."""

from __future__ import annotations

import psycopg

from cdc_sync.records import Backfill, Column, TableId
from cdc_sync.sources.postgres.fetch import SETTINGS_ARGS, SETTINGS_SQL
from cdc_sync.sources.postgres.values import converter_for, parse_array

Conn = psycopg.Connection[tuple[object, ...]]


def backfill(conn: Conn, table: TableId, column: Column) -> Backfill | None:
    """``ADD COLUMN … DEFAULT <non-volatile>`` writes no row: the rows of that moment read
    the default from ``pg_attribute.attmissingval`` (kept even if the default is changed or
    dropped later). A column with neither that nor a default has NULL there. Otherwise (a
    volatile default rewrote the table, or a rewrite since stored the values) it is unknown."""
    if column.type.array_dims:
        return None  # attmissingval would be an array of arrays
    try:
        with conn.transaction():
            # The text output the stream's converters read (ISO dates, UTC, hex bytea).
            conn.execute(SETTINGS_SQL, SETTINGS_ARGS)
            row = conn.execute(
                "SELECT a.atthasmissing, a.attmissingval::text, a.atthasdef "
                "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s AND a.attname = %s "
                "AND a.attnum > 0 AND NOT a.attisdropped",
                (table.schema, table.name, column.name),
            ).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        return None
    if row is None:
        return None  # dropped again since
    has_missing, missing, has_default = row
    if has_missing and isinstance(missing, str):
        values = parse_array(missing, converter_for(column.type))
        return Backfill(values[0]) if len(values) == 1 else None
    return None if has_default else Backfill(None)
