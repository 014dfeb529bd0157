"""Canonical ColumnType → MySQL / MariaDB column types (docs/types.md, MySQL target)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeEngine

from cdc_sync.errors import UnsupportedTypeError
from cdc_sync.records import ColumnType, Kind, TableId, TableSchema

# Largest DECIMAL MySQL has; unconstrained or wider numerics land here, checked per value.
MAX_PRECISION, MAX_SCALE = 65, 30
# Key columns: InnoDB indexes at most 3072 bytes, i.e. 768 utf8mb4 characters.
KEY_CHARS, KEY_BYTES = 768, 3072
_CHAR_MAX, _VARCHAR_MAX, _VARBINARY_MAX = 255, 16_383, 65_532
_BINARY_MAX = 255
_DEFAULT_FSP = 6  # PostgreSQL keeps microseconds by default; MySQL's default would be 0

_INTS: dict[Kind, type[mysql.types._IntegerType]] = {
    Kind.TINYINT: mysql.TINYINT,
    Kind.SMALLINT: mysql.SMALLINT,
    Kind.MEDIUMINT: mysql.MEDIUMINT,
    Kind.INTEGER: mysql.INTEGER,
    Kind.BIGINT: mysql.BIGINT,
}


# PostgreSQL types of bounded text (Kind.PG_TEXT): the longest output, in characters (an
# IPv6 address with its netmask; a MAC address of 6 or 8 bytes).
_PG_TEXT_CHARS = {"inet": 43, "cidr": 43, "macaddr": 17, "macaddr8": 23}


def pg_text_chars(ct: ColumnType) -> int | None:
    t = ct.pg_type
    return _PG_TEXT_CHARS.get(t.name) if t is not None and t.schema == "pg_catalog" else None


def decimal_bounds(ct: ColumnType) -> tuple[int, int]:
    """(precision, scale) of the target DECIMAL: the source's when MySQL can hold it."""
    p, s = ct.precision, ct.scale or 0
    if p is None:
        return MAX_PRECISION, MAX_SCALE
    if p > MAX_PRECISION or s > MAX_SCALE:
        return MAX_PRECISION, min(s, MAX_SCALE)
    return p, s


def _fixed_key_bytes(ct: ColumnType) -> int | None:
    """Index bytes of a key column of bounded size; None for unbounded text / bytes."""
    n = ct.length
    if ct.kind in (Kind.TEXT, Kind.VARCHAR, Kind.CHAR):
        return 4 * n if n is not None and n <= KEY_CHARS else None
    if ct.kind is Kind.BYTES:
        return n if n is not None and n <= KEY_BYTES else None
    if ct.kind is Kind.PG_TEXT:
        chars = pg_text_chars(ct)
        return None if chars is None else 4 * chars
    return 144 if ct.kind is Kind.UUID else 32  # generous for numbers, dates, enums


def key_budgets(schema: TableSchema) -> dict[str, int]:
    """Index bytes per key column. InnoDB allows 3072 bytes per index, shared by all key
    columns: unbounded text / bytes key columns split what the bounded ones leave."""
    fixed = {k: _fixed_key_bytes(schema.column(k).type) for k in schema.key}
    open_ = [k for k, b in fixed.items() if b is None]
    left = KEY_BYTES - sum(b for b in fixed.values() if b is not None)
    share = max(4, left // len(open_)) if open_ else 0
    return {k: share if b is None else b for k, b in fixed.items()}


def fsp(ct: ColumnType) -> int:
    """Fractional seconds digits of TIME / DATETIME / TIMESTAMP columns."""
    return _DEFAULT_FSP if ct.precision is None else min(ct.precision, 6)


class MySqlTypes:
    """MySQL and MariaDB share one mapping; SQLAlchemy names both dialects ``mysql``."""

    dialect = "mysql"

    def column_type(
        self, ct: ColumnType, table: TableId, column: str, key: int | None = None
    ) -> TypeEngine[Any]:
        """``key``: the index bytes this column may use when it is a key column."""
        if ct.array_dims:
            raise UnsupportedTypeError(str(table), column, ct.source_name or f"{ct.kind.value}[]")
        k = ct.kind
        if k in _INTS:
            if ct.display_width:  # TINYINT(1) stays TINYINT(1) (clients read it as boolean)
                return _INTS[k](display_width=ct.display_width, unsigned=ct.unsigned)
            return _INTS[k](unsigned=ct.unsigned)
        if k is Kind.NUMERIC:
            p, s = decimal_bounds(ct)
            return mysql.DECIMAL(p, s)
        if k in (Kind.TEXT, Kind.VARCHAR, Kind.CHAR):
            return _string(ct, key)
        if k is Kind.PG_TEXT:
            # The PostgreSQL text form, in the table's utf8mb4 binary collation
            chars = pg_text_chars(ct)
            if chars is not None:
                return mysql.VARCHAR(chars)
            return mysql.VARCHAR(key // 4) if key is not None else mysql.LONGTEXT()
        if k is Kind.BYTES:
            n = ct.length
            # A MySQL source's BINARY(n) stays BINARY(n). BINARY(0) as VARBINARY(0): both hold
            # only b'', and SQLAlchemy spells BINARY(0) as BINARY, which MySQL reads BINARY(1).
            if ct.fixed and n and n <= _BINARY_MAX:
                return mysql.BINARY(n)
            if key is not None:
                return mysql.VARBINARY(min(n or key, key))
            if n is not None and n <= _VARBINARY_MAX:
                return mysql.VARBINARY(n)
            # By size, as TEXT: a MySQL BLOB / MEDIUMBLOB stays one (not LONGBLOB)
            if n is not None and n <= 65_535:
                return mysql.BLOB()
            if n is not None and n <= 16_777_215:
                return mysql.MEDIUMBLOB()
            return mysql.LONGBLOB()
        if k in (Kind.TIME, Kind.DURATION):
            return mysql.TIME(fsp=fsp(ct))
        if k is Kind.TIMESTAMP:
            return mysql.DATETIME(fsp=fsp(ct))
        if k is Kind.TIMESTAMPTZ:
            return mysql.TIMESTAMP(fsp=fsp(ct))
        if k is Kind.ENUM:
            return mysql.ENUM(*ct.enum_labels)
        if k is Kind.SET:
            return mysql.SET(*ct.enum_labels)
        if k is Kind.BIT:
            return mysql.BIT(ct.length or 1)
        simple = _SIMPLE.get(k)
        if simple is None:
            raise UnsupportedTypeError(str(table), column, ct.source_name or k.value)
        return simple

    def base_name(self, ct: ColumnType, table: TableId) -> str:
        return str(self.column_type(ct, table, "?").compile(dialect=mysql.dialect()))


def _string(ct: ColumnType, key: int | None) -> TypeEngine[Any]:
    n = ct.length
    if ct.kind is Kind.CHAR and n is not None and n <= _CHAR_MAX:
        return mysql.CHAR(n)
    if key is not None:
        return mysql.VARCHAR(min(n or key // 4, key // 4))
    if ct.kind is Kind.TEXT:
        if n is not None and n <= 255:
            return mysql.TINYTEXT()
        if n is not None and n <= 65_535:
            return mysql.TEXT()
        if n is not None and n <= 16_777_215:
            return mysql.MEDIUMTEXT()
        return mysql.LONGTEXT()
    if ct.kind is Kind.VARCHAR and n is not None and n <= _VARCHAR_MAX:
        return mysql.VARCHAR(n)
    return mysql.LONGTEXT()


_SIMPLE: dict[Kind, TypeEngine[Any]] = {
    Kind.YEAR: mysql.YEAR(),
    Kind.BOOLEAN: mysql.TINYINT(display_width=1),
    Kind.REAL: mysql.FLOAT(),
    Kind.DOUBLE: mysql.DOUBLE(),
    Kind.DATE: mysql.DATE(),
    Kind.INTERVAL: mysql.VARCHAR(100),  # ISO 8601 duration text: MySQL has no interval
    Kind.UUID: mysql.CHAR(36),
    Kind.JSON: mysql.JSON(),
    Kind.JSONB: mysql.JSON(),
}
