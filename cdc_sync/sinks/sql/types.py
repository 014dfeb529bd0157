"""Canonical ColumnType → target SQL types, per dialect (PostgreSQL here, MySQL in mysql_types)."""

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


def pg_type_sql(ct: ColumnType, table: TableId) -> str:
    """A Kind.PG_TEXT column's type, schema-qualified and quoted: the target's type of that
    name (the same extension or CREATE TYPE there), so its input reads the source's text."""
    t = ct.pg_type
    if t is None:
        raise UnsupportedTypeError(str(table), "?", ct.source_name or "pg_text without a type")
    if t.composite:
        return "text"  # see as_text
    return f"{quote_ident(t.schema)}.{quote_ident(t.name)}"


def as_text(ct: ColumnType) -> bool:
    """A row (composite) type goes into a PostgreSQL target as text, for now: the writer's
    ``unnest(%b::type[]) AS v (…)`` would expand a row type's fields into columns of their
    own, and a text parameter does not assign to a row-typed column. Its text is exact."""
    return ct.kind is Kind.PG_TEXT and ct.pg_type is not None and ct.pg_type.composite


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


def _pg_int(ct: ColumnType) -> TypeEngine[Any]:
    """MySQL integer kinds widen so every value fits: unsigned needs the next size up."""
    rank = _INT_RANK[ct.kind] + (1 if ct.unsigned else 0)
    return _PG_INTS[rank]


# Byte sizes 1, 2, 3, 4, 8 ranked; PostgreSQL has 2, 4, 8 and numeric(20,0) above them.
_INT_RANK = {Kind.TINYINT: 0, Kind.SMALLINT: 1, Kind.MEDIUMINT: 2, Kind.INTEGER: 3, Kind.BIGINT: 4}
_PG_INTS: tuple[TypeEngine[Any], ...] = (
    sa.SmallInteger(),  # tinyint
    sa.SmallInteger(),  # smallint, tinyint unsigned
    sa.Integer(),  # mediumint, smallint unsigned
    sa.Integer(),  # integer, mediumint unsigned
    sa.BigInteger(),  # bigint, integer unsigned
    sa.Numeric(20, 0),  # bigint unsigned: up to 18446744073709551615
)
_PG_INT_NAMES = ("smallint", "smallint", "integer", "integer", "bigint", "numeric")


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
        if k in _INT_RANK:
            return _pg_int(ct)
        if k is Kind.BIT:
            return postgresql.BIT(ct.length or 1)
        if k is Kind.PG_TEXT:
            return sa.Text() if as_text(ct) else _Raw(pg_type_sql(ct, table))
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
        elif ct.kind is Kind.PG_TEXT:
            base = pg_type_sql(ct, table)
        elif ct.kind in _INT_RANK:
            base = _PG_INT_NAMES[_INT_RANK[ct.kind] + (1 if ct.unsigned else 0)]
        else:
            base = _PG_BASE[ct.kind]
        return base + "[]" * (1 if ct.array_dims else 0)

    def cast_name(self, ct: ColumnType, table: TableId) -> str:
        """The type bound parameters are cast to: ``base_name`` except for bit strings, where
        a cast to ``bit`` would mean bit(1) and silently cut the value; ``bit varying`` keeps
        it whole and the assignment to a bit(n) column then checks its length."""
        if ct.kind is Kind.BIT:
            return "bit varying" + "[]" * (1 if ct.array_dims else 0)
        return self.base_name(ct, table)


_PG_SIMPLE: dict[Kind, TypeEngine[Any]] = {
    Kind.YEAR: sa.SmallInteger(),
    Kind.DURATION: postgresql.INTERVAL(),
    Kind.SET: sa.Text(),  # members comma-joined, as MySQL shows them
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
    Kind.YEAR: "smallint",
    Kind.DURATION: "interval",
    Kind.BIT: "bit",
    Kind.SET: "text",
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

MYSQL_DIALECTS = frozenset({"mysql", "mariadb"})


def mapper_for(dialect: str) -> TypeMapper:
    if dialect == "postgresql":
        return PostgresTypes()
    if dialect in MYSQL_DIALECTS:
        from cdc_sync.sinks.sql.mysql_types import MySqlTypes  # noqa: PLC0415  (no cycle)

        return MySqlTypes()
    raise PermanentError(f"target dialect {dialect!r} is not supported yet")
