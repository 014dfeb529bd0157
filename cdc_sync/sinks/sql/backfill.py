"""Constant literals for the DEFAULT that gives a target's rows an added column's value."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from decimal import Decimal

import pymysql
import sqlalchemy as sa
from psycopg import sql

from cdc_sync.records import Backfill, Column, Kind
from cdc_sync.state.driver import psycopg_connection

BackfillOf = Callable[[str], Backfill | None]
"""Target column name → the value the rows already there get (None: unknown)."""

# Kinds and value types whose literal means the same on both engines; anything else (BIT,
# SET, JSON, bytes, intervals, PostgreSQL-only types) stays unknown: NULL and the WARNING,
# as without a backfill, never a DEFAULT the target could read otherwise or refuse.
_KINDS = frozenset({
    Kind.BOOLEAN, Kind.TINYINT, Kind.SMALLINT, Kind.MEDIUMINT, Kind.INTEGER, Kind.BIGINT,
    Kind.YEAR, Kind.NUMERIC, Kind.DOUBLE, Kind.TEXT, Kind.VARCHAR, Kind.CHAR, Kind.ENUM,
    Kind.DATE, Kind.TIME, Kind.TIMESTAMP, Kind.TIMESTAMPTZ, Kind.UUID,
})  # fmt: skip
_PLAIN = (bool, int, str, Decimal, float, date, time, uuid.UUID)


def _plain(col: Column, value: object) -> bool:
    if col.type.kind not in _KINDS or col.type.array_dims or not isinstance(value, _PLAIN):
        return False
    if isinstance(value, float | Decimal) and not math.isfinite(value):
        return False
    return not (isinstance(value, str) and "\x00" in value)


def pg_literal(conn: sa.Connection, col: Column, value: object) -> str | None:
    """``value`` as a PostgreSQL literal (psycopg's own quoting), or None."""
    raw = psycopg_connection(conn)
    if raw is None or not _plain(col, value):
        return None
    return sql.Literal(value).as_string(raw)


def my_literal(conn: sa.Connection, col: Column, value: object) -> str | None:
    """``value`` as a MySQL literal (PyMySQL's own escaping, '%' doubled for
    exec_driver_sql), or None. An aware time is written as naive UTC, as rows are."""
    raw = conn.connection.driver_connection
    if not isinstance(raw, pymysql.connections.Connection) or not _plain(col, value):
        return None
    if isinstance(value, datetime) and value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    if isinstance(value, uuid.UUID):
        value = str(value)
    return str(raw.escape(value)).replace("%", "%%")
