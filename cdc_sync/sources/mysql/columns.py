"""Binlog table-map columns → our ColumnSpec (what the row decoder needs) and canonical types."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from cdc_sync.errors import NoKeyError, PermanentError, UnsupportedTypeError
from cdc_sync.records import Column, ColumnType, Kind, TableId, TableSchema
from cdc_sync.sources.mysql.charsets import codec, unsupported_fix

# MySQL field type codes as they appear in the binlog (include/field_types.h).
TINY, SHORT, LONG, FLOAT, DOUBLE, TIMESTAMP, LONGLONG, INT24 = 1, 2, 3, 4, 5, 7, 8, 9
DATE, TIME, DATETIME, YEAR, VARCHAR, BIT = 10, 11, 12, 13, 15, 16
TIMESTAMP2, DATETIME2, TIME2 = 17, 18, 19
JSON, NEWDECIMAL, ENUM, SET, BLOB, STRING, GEOMETRY = 245, 246, 247, 248, 252, 254, 255

_INTS = {TINY: Kind.TINYINT, SHORT: Kind.SMALLINT, INT24: Kind.MEDIUMINT, LONG: Kind.INTEGER}
_INTS[LONGLONG] = Kind.BIGINT
_INT_NAMES = {TINY: "tinyint", SHORT: "smallint", INT24: "mediumint", LONG: "int"}
_INT_NAMES[LONGLONG] = "bigint"
_TEXT_TYPES = frozenset({VARCHAR, STRING, BLOB})
_BLOB_BYTES = {1: 255, 2: 65535, 3: 16777215, 4: None}
_BLOB_NAMES = {1: "tiny", 2: "", 3: "medium", 4: "long"}
# Bytes per character, to turn a table map's byte length into VARCHAR(n) / CHAR(n).
_MBMAXLEN = {
    "utf8mb4": 4, "utf8mb3": 3, "utf8": 3, "latin1": 1, "latin2": 1, "ascii": 1, "binary": 1,
    "ucs2": 2, "utf16": 4, "utf16le": 4, "utf32": 4, "cp1250": 1, "cp1251": 1, "cp1256": 1,
    "cp1257": 1, "greek": 1, "hebrew": 1, "koi8r": 1, "koi8u": 1, "gbk": 2, "big5": 2,
    "sjis": 2, "cp932": 2, "euckr": 2, "gb2312": 2, "ujis": 3, "eucjpms": 3, "gb18030": 4,
}  # fmt: skip
_TYPE_NAMES = {
    **_INT_NAMES, NEWDECIMAL: "decimal", FLOAT: "float", DOUBLE: "double", VARCHAR: "varchar",
    STRING: "char", BLOB: "blob/text", JSON: "json", DATE: "date", DATETIME2: "datetime",
    DATETIME: "datetime", TIMESTAMP2: "timestamp", TIMESTAMP: "timestamp", TIME2: "time",
    TIME: "time", YEAR: "year", ENUM: "enum", SET: "set", BIT: "bit", GEOMETRY: "geometry",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One column as the binlog describes it: enough to decode its bytes."""

    name: str
    type: int  # binlog field type code
    nullable: bool = True
    unsigned: bool = False
    max_length: int = 0  # VARCHAR / CHAR: bytes
    length_size: int = 0  # BLOB / JSON / GEOMETRY: bytes of the length prefix
    precision: int = 0  # NEWDECIMAL
    decimals: int = 0  # NEWDECIMAL scale; TIME2 / DATETIME2 / TIMESTAMP2 fsp
    bits: int = 0  # BIT(n)
    size: int = 0  # ENUM / SET: bytes of the stored index / mask
    labels: tuple[str, ...] = ()  # ENUM / SET
    charset: str | None = None  # MySQL charset name; "binary" for byte strings
    collation: str | None = field(default=None, compare=False)  # text: e.g. utf8mb4_general_ci
    is_json: bool = False  # MariaDB JSON: LONGTEXT with a json_valid() check
    # TINYINT(1) from the catalog; the table map cannot tell it, hence not compared
    display_width: int = field(default=0, compare=False)

    @property
    def encoding(self) -> str:
        if not self.charset:
            return "utf-8"
        found = codec(self.charset)
        if found is None:  # refused before any reader is built (check_charset)
            raise PermanentError(f"column {self.name!r}: no decoder for {self.charset}")
        return found

    @property
    def binary(self) -> bool:
        return self.charset == "binary"

    def type_name(self) -> str:
        """The MySQL type, for messages."""
        return _TYPE_NAMES.get(self.type, f"binlog type {self.type}")


def specs_from_table_map(
    event: Any, json_columns: Collection[str], tinyint1: Collection[str] = ()
) -> tuple[ColumnSpec, ...]:
    """ColumnSpecs from a parsed TableMapEvent (binlog_row_metadata=FULL required).
    ``json_columns`` (MariaDB JSON) and ``tinyint1`` (TINYINT(1)) come from the catalog:
    the table map cannot tell them."""
    table = TableId(event.schema, event.table)
    meta = event.optional_metadata
    if not meta.column_name_list:
        raise PermanentError(
            f"table {table}: the binlog carries no column names; set binlog_row_metadata = FULL "
            "(SET GLOBAL binlog_row_metadata = 'FULL'; and in my.cnf)"
        )
    nulls = event.null_bitmask
    out = []
    for i, c in enumerate(event.columns):
        t = c.type
        labels: tuple[str, ...] = ()
        if t == ENUM:
            labels = tuple(c.enum_values[1:]) if c.enum_values else ()
        elif t == SET:
            labels = tuple(c.set_values or ())
        out.append(
            ColumnSpec(
                name=c.name,
                type=t,
                nullable=bool(nulls[i >> 3] & (1 << (i & 7))),
                unsigned=bool(c.unsigned),
                max_length=getattr(c, "max_length", 0),
                length_size=getattr(c, "length_size", 0),
                precision=getattr(c, "precision", 0),
                decimals=getattr(c, "decimals", getattr(c, "fsp", 0)),
                bits=getattr(c, "bits", 0),
                size=getattr(c, "size", 0) if t in (ENUM, SET) else 0,
                labels=labels,
                charset=_charset(c),
                collation=_collation(c),
                is_json=t == BLOB and c.name in json_columns,
                display_width=1 if t == TINY and c.name in tinyint1 else 0,
            )
        )
    for spec in out:
        check_charset(table, spec)
    return tuple(out)


def check_charset(table: TableId, spec: ColumnSpec) -> None:
    """Refuses, by table, column and character set, text Python cannot decode exactly."""
    cs = spec.charset
    if cs and cs != "binary" and spec.type in _TEXT_TYPES and codec(cs) is None:
        raise UnsupportedTypeError(
            str(table),
            spec.name,
            f"{spec.type_name()} CHARACTER SET {cs}",
            unsupported_fix(table, cs),
        )


def _charset(col: Any) -> str | None:
    # The library keeps the Python codec name ('utf8' for utf8mb4 and utf8mb3); the MySQL
    # charset is the collation's prefix (utf8mb4_bin -> utf8mb4), needed for VARCHAR(n).
    collation = getattr(col, "collation_name", None)
    if collation:
        return str(collation).split("_", 1)[0]
    return None if col.character_set_name is None else str(col.character_set_name)


def _collation(col: Any) -> str | None:
    name = getattr(col, "collation_name", None)
    return str(name) if name else None


def key_from_table_map(event: Any) -> tuple[str, ...]:
    """Primary-key column names in key order, from the table map's metadata."""
    meta = event.optional_metadata
    idx = list(meta.simple_primary_key_list) or list(meta.primary_keys_with_prefix)
    return tuple(event.columns[i].name for i in idx)


def _chars(spec: ColumnSpec) -> int:
    per = _MBMAXLEN.get(spec.charset or "", 1)
    return spec.max_length // per if spec.max_length % per == 0 else spec.max_length


def column_type(table: TableId, spec: ColumnSpec) -> ColumnType:
    """The canonical type of one column (docs/types.md); unsupported types are refused."""
    t = spec.type
    if t in _INTS:
        name = _INT_NAMES[t] + (" unsigned" if spec.unsigned else "")
        width = spec.display_width or None
        return ColumnType(_INTS[t], unsigned=spec.unsigned, source_name=name, display_width=width)
    if t == NEWDECIMAL:
        p, s = spec.precision, spec.decimals
        return ColumnType(Kind.NUMERIC, precision=p, scale=s, source_name=f"decimal({p},{s})")
    if t == FLOAT:
        return ColumnType(Kind.REAL, source_name="float")
    if t == DOUBLE:
        return ColumnType(Kind.DOUBLE, source_name="double")
    if t in (VARCHAR, STRING):
        if spec.binary:
            # BINARY(n) is STRING in the table map and in the catalog's ColumnSpec alike, so
            # the stream and the snapshot agree on ``fixed``.
            fixed = t == STRING
            name = f"{'binary' if fixed else 'varbinary'}({spec.max_length})"
            return ColumnType(Kind.BYTES, length=spec.max_length, fixed=fixed, source_name=name)
        kind, n = (Kind.VARCHAR if t == VARCHAR else Kind.CHAR), _chars(spec)
        return ColumnType(
            kind, length=n, source_name=f"{kind.value}({n})", collation=spec.collation
        )
    if t == BLOB:
        length = _BLOB_BYTES.get(spec.length_size)
        prefix = _BLOB_NAMES.get(spec.length_size, "")
        if spec.binary:
            return ColumnType(Kind.BYTES, length=length, source_name=f"{prefix}blob")
        if spec.is_json:
            return ColumnType(Kind.JSONB, source_name="json")
        return ColumnType(
            Kind.TEXT, length=length, source_name=f"{prefix}text", collation=spec.collation
        )
    if t == JSON:
        return ColumnType(Kind.JSONB, source_name="json")
    if t == DATE:
        return ColumnType(Kind.DATE, source_name="date")
    if t in (DATETIME2, DATETIME):
        return ColumnType(Kind.TIMESTAMP, precision=spec.decimals, source_name="datetime")
    if t in (TIMESTAMP2, TIMESTAMP):
        return ColumnType(Kind.TIMESTAMPTZ, precision=spec.decimals, source_name="timestamp")
    if t in (TIME2, TIME):
        return ColumnType(Kind.DURATION, precision=spec.decimals, source_name="time")
    if t == YEAR:
        return ColumnType(Kind.YEAR, source_name="year")
    if t == ENUM:
        return ColumnType(
            Kind.ENUM,
            enum_name=f"{table.name}_{spec.name}",
            enum_labels=spec.labels,
            source_name="enum",
        )
    if t == SET:
        return ColumnType(Kind.SET, enum_labels=spec.labels, source_name="set")
    if t == BIT:
        return ColumnType(Kind.BIT, length=spec.bits, source_name=f"bit({spec.bits})")
    name = "geometry" if t == GEOMETRY else f"binlog type {t}"
    raise UnsupportedTypeError(str(table), spec.name, name)


def build_schema(table: TableId, specs: Sequence[ColumnSpec], key: Sequence[str]) -> TableSchema:
    if not key:
        raise NoKeyError(
            f"table {table} has no primary key; cdc-sync needs one to apply updates and deletes "
            f"exactly (fix: ALTER TABLE {table} ADD PRIMARY KEY (...);)"
        )
    cols = tuple(Column(s.name, column_type(table, s), s.nullable) for s in specs)
    return TableSchema(table, cols, tuple(key))
