"""The value a column added to a MariaDB table holds in the rows that existed before."""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from cdc_sync.records import Backfill, Column, Kind, TableId
from cdc_sync.sources.mysql.catalog import query

_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")
_INTS = {Kind.TINYINT, Kind.SMALLINT, Kind.MEDIUMINT, Kind.INTEGER, Kind.BIGINT, Kind.YEAR}
_TEXTS = {Kind.TEXT, Kind.VARCHAR, Kind.CHAR, Kind.ENUM, Kind.SET}


def backfill(conn: Any, table: TableId, column: Column) -> Backfill | None:
    """``ADD COLUMN … DEFAULT <literal>`` gives the rows of that moment the default without
    a row event. Read from MariaDB's ``COLUMN_DEFAULT`` (literals quoted since 10.2.7); an
    expression (``current_timestamp()``, ``uuid()``) or an implicit NOT NULL default (0,
    '') is unknown, and so is the value if the default was changed since the ALTER."""
    rows = query(
        conn,
        "SELECT COLUMN_DEFAULT, IS_NULLABLE FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND COLUMN_NAME = %s",
        (table.schema, table.name, column.name),
    )
    if not rows:
        return None
    default, nullable = rows[0]
    if default is None or default == "NULL":
        return Backfill(None) if nullable == "YES" else None
    return _literal(str(default), column)


def _literal(text: str, column: Column) -> Backfill | None:
    kind = column.type.kind
    if text.startswith("'") and text.endswith("'") and len(text) >= 2:
        inner = text[1:-1]
        if "\\" in inner:
            return None  # escapes: spelled differently from the value
        inner = inner.replace("''", "'")
        if kind in _TEXTS:
            return Backfill(inner)
        try:
            if kind is Kind.DATE:
                return Backfill(date.fromisoformat(inner))
            if kind is Kind.TIMESTAMP:  # DATETIME: naive, no time zone involved
                return Backfill(datetime.fromisoformat(inner))
        except ValueError:
            return None  # a zero date
        return None
    if not _NUMBER.match(text):
        return None  # an expression
    if kind in _INTS and "." not in text:
        return Backfill(int(text))
    if kind is Kind.NUMERIC:
        return Backfill(Decimal(text))
    if kind is Kind.DOUBLE:
        return Backfill(float(text))
    return None
