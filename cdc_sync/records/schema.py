"""Engine-neutral table identity and schema: what sinks need to create and write tables."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import NamedTuple


class TableId(NamedTuple):
    """A schema-qualified table name; ``str()`` gives ``schema.name``. Ordered, hashable.

    A NamedTuple: it keys the hot path's dicts, and tuple hashing and equality run in C
    where a frozen dataclass's generated ``__hash__`` / ``__eq__`` are Python calls per lookup.
    """

    schema: str
    name: str

    @classmethod
    def parse(cls, text: str, default_schema: str = "public") -> TableId:
        schema, sep, name = text.partition(".")
        if not sep:
            return cls(default_schema, schema)
        if not schema or not name or "." in name:
            raise ValueError(f"not a table name (expected schema.table): {text!r}")
        return cls(schema, name)

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


class Kind(enum.Enum):
    """Canonical column kinds; each has one canonical Python value type (see README)."""

    TINYINT = "tinyint"  # int (MySQL; PostgreSQL targets widen it to smallint)
    SMALLINT = "smallint"  # int
    MEDIUMINT = "mediumint"  # int (MySQL; PostgreSQL targets widen it to integer)
    INTEGER = "integer"  # int
    BIGINT = "bigint"  # int
    NUMERIC = "numeric"  # decimal.Decimal (NaN / Infinity allowed, see README)
    REAL = "real"  # float
    DOUBLE = "double"  # float
    TEXT = "text"  # str
    VARCHAR = "varchar"  # str, length = max characters (None: unbounded)
    CHAR = "char"  # str, blank-padded to length
    BOOLEAN = "boolean"  # bool
    DATE = "date"  # datetime.date
    TIME = "time"  # datetime.time (naive)
    TIMESTAMP = "timestamp"  # datetime.datetime (naive)
    TIMESTAMPTZ = "timestamptz"  # datetime.datetime (aware, UTC)
    INTERVAL = "interval"  # records.values.Interval
    UUID = "uuid"  # uuid.UUID
    JSON = "json"  # records.values.JsonText (text exactly as stored)
    JSONB = "jsonb"  # records.values.JsonText
    BYTES = "bytes"  # bytes (ColumnType.fixed: MySQL BINARY(n), exactly `length` bytes)
    ENUM = "enum"  # str (labels in ColumnType.enum_labels)
    SET = "set"  # str, members comma-joined in label order as MySQL shows them (enum_labels)
    YEAR = "year"  # int (MySQL YEAR; smallint in PostgreSQL)
    DURATION = "duration"  # datetime.timedelta (MySQL TIME: negative / > 24 h; interval in PG)
    BIT = "bit"  # str of '0'/'1', exactly `length` digits (MySQL BIT(n), PostgreSQL bit(n))
    # str: a PostgreSQL type's own text output, read back by its input function (citext,
    # inet, hstore, ranges, composites…); which type in ColumnType.pg_type
    PG_TEXT = "pg_text"


@dataclass(frozen=True, slots=True)
class PgTypeName:
    """The PostgreSQL type of a Kind.PG_TEXT column, and how a target that lacks it gets it."""

    schema: str  # "pg_catalog" for built-in types
    name: str
    # The extension that defines the type (citext, hstore, ltree): CREATE EXTENSION on a
    # target. Neither this nor ``create`` is compared: they only word a fix.
    extension: str | None = field(default=None, compare=False)
    # A type defined in the source database (composite, range): the CREATE TYPE to run.
    create: str | None = field(default=None, compare=False)
    composite: bool = False  # a row type (typtype 'c'): its values are '(f1,f2,…)'

    @property
    def display(self) -> str:
        return self.name if self.schema == "pg_catalog" else f"{self.schema}.{self.name}"


@dataclass(frozen=True, slots=True)
class ColumnType:
    """A canonical type: kind + parameters. ``array_dims`` > 0 makes it an array of the kind.

    ``source_name`` is the type as the source spells it, for error messages only.
    """

    kind: Kind
    length: int | None = None  # VARCHAR / CHAR chars; BIT digits; TEXT / BYTES max bytes (MySQL)
    precision: int | None = None  # NUMERIC digits, TIME/TIMESTAMP fractional digits
    scale: int | None = None  # NUMERIC
    array_dims: int = 0
    enum_name: str | None = None
    enum_labels: tuple[str, ...] = ()
    unsigned: bool = False  # MySQL UNSIGNED integer kinds (PG widens to the next kind)
    # BYTES of exactly ``length`` bytes (MySQL BINARY(n), zero-padded; never set by
    # PostgreSQL): compared, since BINARY(n) -> VARBINARY(n) changes what the column holds.
    fixed: bool = False
    source_name: str = field(default="", compare=False)
    # MySQL source text columns: their collation, i.e. which values the source holds as one
    # key ('ABC' = 'abc' under *_ci). None: compared byte for byte (PostgreSQL). Read by the
    # target's key check only; not compared, so the binlog and the catalog need not agree.
    collation: str | None = field(default=None, compare=False)
    # MySQL TINYINT(1), the BOOLEAN idiom clients read as true / false: known from the
    # catalog only (the binlog's table map has no display width), so not compared; it never
    # changes which values the column holds.
    display_width: int | None = field(default=None, compare=False)
    pg_type: PgTypeName | None = None  # Kind.PG_TEXT only

    def element(self) -> ColumnType:
        return dataclasses.replace(self, array_dims=0)


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: ColumnType
    nullable: bool = True


@dataclass(frozen=True, slots=True)
class TableSchema:
    """Columns in source order and the key columns (primary key / replica identity)."""

    table: TableId
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    # Derived once: they are read for every row on the hot path.
    names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    key_indexes: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = tuple(c.name for c in self.columns)
        missing = [k for k in self.key if k not in names]
        if missing:
            raise ValueError(f"{self.table}: key columns {missing} not among columns")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "key_indexes", tuple(names.index(k) for k in self.key))
        object.__setattr__(self, "_hash", hash((self.table, self.columns, self.key)))

    def __hash__(self) -> int:
        # Schemas key per-row dict lookups (SQL and literal caches): the generated hash
        # walked every column's fields each time (a fifth of the MySQL writer's time).
        return self._hash

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.table}: no column {name!r}")


@dataclass(frozen=True, slots=True)
class Backfill:
    """The value that a column the source added holds in the rows that existed before its
    ``ALTER`` (the ``DEFAULT`` it was added with; None: NULL): what the target's rows get
    when the column is added there. The stream never carries it: no row changed."""

    value: object
