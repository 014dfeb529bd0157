"""Canonical ColumnType → target SQL types, per dialect (PostgreSQL now, MySQL in #3)."""

from __future__ import annotations

from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeEngine, UserDefinedType

from cdc_sync.errors import PermanentError, UnsupportedTypeError
from cdc_sync.records import ColumnType, Kind, TableId


def quote_ident(name: str) -> str:
    """Double-quote an identifier (PostgreSQL / standard SQL); embedded quotes are doubled."""
    return '"' + name.replace('"', '""') + '"'


def enum_type_id(ct: ColumnType, table: TableId) -> TableId:
    """Where the enum type lives in the target: as qualified by the source, else the table's
    schema (so ``format_type`` in the target shows the same name as in the source)."""
    name = ct.enum_name or ""
    if not name:
        raise UnsupportedTypeError(str(table), "?", ct.source_name or "enum without a name")
    schema, sep, bare = name.rpartition(".")
    return TableId(schema if sep else table.schema, bare)


class _Raw(UserDefinedType[Any]):
    """A type spelled literally, for the few that SQLAlchemy has no construct for."""

    cache_ok = True

    def __init__(self, spec: str) -> None:
        self.spec = spec

    def get_col_spec(self, **kw: Any) -> str:
        return self.spec


class TypeMapper(Protocol):
    """What a dialect offers the sink: DDL types, and SQL casts for bound parameters."""

    dialect: str

    def column_type(self, ct: ColumnType, table: TableId, column: str) -> TypeEngine[Any]:
        """The SQLAlchemy type for CREATE TABLE / ADD COLUMN."""
        ...

    def base_name(self, ct: ColumnType, table: TableId) -> str:
        """The type without modifiers, as used in casts and compared with an existing column."""
        ...


class PostgresTypes:
    """Exact round trip of every canonical kind into PostgreSQL.

    Enums become real PostgreSQL enum types with the source's labels (created by the sink),
    not TEXT: the target column then has the same type, ordering and validation as the source.
    """

    dialect = "postgresql"

    def column_type(self, ct: ColumnType, table: TableId, column: str) -> TypeEngine[Any]:
        elem = self._scalar(ct, table, column)
        if ct.array_dims:
            return postgresql.ARRAY(elem, dimensions=ct.array_dims)
        return elem

    def _scalar(self, ct: ColumnType, table: TableId, column: str) -> TypeEngine[Any]:
        k = ct.kind
        if k is Kind.NUMERIC:
            if ct.precision is None:
                return sa.Numeric()  # unconstrained: keeps any scale, NaN and ±Infinity
            return sa.Numeric(ct.precision, ct.scale)
        if k is Kind.VARCHAR:
            return sa.VARCHAR(ct.length)
        if k is Kind.CHAR:
            # bpchar without a length is unbounded; CHAR without one would mean char(1).
            return sa.CHAR(ct.length) if ct.length is not None else _Raw("bpchar")
        if k is Kind.TIME:
            return postgresql.TIME(precision=ct.precision)
        if k is Kind.TIMESTAMP:
            return postgresql.TIMESTAMP(precision=ct.precision)
        if k is Kind.TIMESTAMPTZ:
            return postgresql.TIMESTAMP(timezone=True, precision=ct.precision)
        if k is Kind.ENUM:
            tid = enum_type_id(ct, table)
            return postgresql.ENUM(
                *ct.enum_labels, name=tid.name, schema=tid.schema, create_type=False
            )
        simple = _PG_SIMPLE.get(k)
        if simple is None:
            raise UnsupportedTypeError(str(table), column, ct.source_name or k.value)
        return simple

    def base_name(self, ct: ColumnType, table: TableId) -> str:
        if ct.kind is Kind.ENUM:
            tid = enum_type_id(ct, table)
            base = f"{quote_ident(tid.schema)}.{quote_ident(tid.name)}"
        else:
            base = _PG_BASE[ct.kind]
        return base + "[]" * (1 if ct.array_dims else 0)


_PG_SIMPLE: dict[Kind, TypeEngine[Any]] = {
    Kind.SMALLINT: sa.SmallInteger(),
    Kind.INTEGER: sa.Integer(),
    Kind.BIGINT: sa.BigInteger(),
    Kind.REAL: postgresql.REAL(),
    Kind.DOUBLE: postgresql.DOUBLE_PRECISION(),
    Kind.TEXT: sa.Text(),
    Kind.BOOLEAN: sa.Boolean(),
    Kind.DATE: sa.Date(),
    Kind.INTERVAL: postgresql.INTERVAL(),
    Kind.UUID: postgresql.UUID(as_uuid=True),
    Kind.JSON: postgresql.JSON(),
    Kind.JSONB: postgresql.JSONB(),
    Kind.BYTES: postgresql.BYTEA(),
}

# Names as PostgreSQL's format_type() spells them, without typmods: used for casts of bound
# parameters and for checking an existing target column.
_PG_BASE: dict[Kind, str] = {
    Kind.SMALLINT: "smallint",
    Kind.INTEGER: "integer",
    Kind.BIGINT: "bigint",
    Kind.NUMERIC: "numeric",
    Kind.REAL: "real",
    Kind.DOUBLE: "double precision",
    Kind.TEXT: "text",
    Kind.VARCHAR: "character varying",
    Kind.CHAR: "bpchar",
    Kind.BOOLEAN: "boolean",
    Kind.DATE: "date",
    Kind.TIME: "time without time zone",
    Kind.TIMESTAMP: "timestamp without time zone",
    Kind.TIMESTAMPTZ: "timestamp with time zone",
    Kind.INTERVAL: "interval",
    Kind.UUID: "uuid",
    Kind.JSON: "json",
    Kind.JSONB: "jsonb",
    Kind.BYTES: "bytea",
}

MAPPERS: dict[str, TypeMapper] = {"postgresql": PostgresTypes()}


def mapper_for(dialect: str) -> TypeMapper:
    try:
        return MAPPERS[dialect]
    except KeyError:
        raise PermanentError(f"target dialect {dialect!r} is not supported yet") from None
