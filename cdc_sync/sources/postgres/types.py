"""Map PostgreSQL types (oid + typmod; arrays, enums, domains via the catalog) to ColumnType."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from cdc_sync.errors import UnsupportedTypeError
from cdc_sync.records import ColumnType, Kind, PgTypeName
from cdc_sync.sources.postgres.values import Converter, converter_for


@dataclass(frozen=True, slots=True)
class PgType:
    """The pg_type facts needed to map a type (typtype: b base, e enum, d domain, …)."""

    oid: int
    schema: str
    name: str
    typtype: str
    elem: int = 0  # element type oid when this is an array type
    base: int = 0  # base type oid of a domain
    base_typmod: int = -1  # typmod a domain imposes on its base type
    enum_labels: tuple[str, ...] = ()
    extension: str | None = None  # the extension that defines the type (pg_depend 'e')
    create: str | None = None  # CREATE TYPE of a composite / range type, for a target
    delim: str = ","  # typdelim: the array element separator (box: ';')

    @property
    def display(self) -> str:
        return self.name if self.schema in ("pg_catalog", "") else f"{self.schema}.{self.name}"


TypeLookup = Callable[[int], PgType | None]
"""Looks a type oid up in the source's catalog; None when it does not exist."""

# Built-in scalar types by oid (stable across PostgreSQL versions): no catalog round trip.
BUILTIN: dict[int, tuple[str, Kind]] = {
    16: ("boolean", Kind.BOOLEAN),
    17: ("bytea", Kind.BYTES),
    19: ("name", Kind.TEXT),
    20: ("bigint", Kind.BIGINT),
    21: ("smallint", Kind.SMALLINT),
    23: ("integer", Kind.INTEGER),
    25: ("text", Kind.TEXT),
    114: ("json", Kind.JSON),
    700: ("real", Kind.REAL),
    701: ("double precision", Kind.DOUBLE),
    1042: ("character", Kind.CHAR),
    1043: ("character varying", Kind.VARCHAR),
    1560: ("bit", Kind.BIT),
    1082: ("date", Kind.DATE),
    1083: ("time without time zone", Kind.TIME),
    1114: ("timestamp without time zone", Kind.TIMESTAMP),
    1184: ("timestamp with time zone", Kind.TIMESTAMPTZ),
    1186: ("interval", Kind.INTERVAL),
    1700: ("numeric", Kind.NUMERIC),
    2950: ("uuid", Kind.UUID),
    3802: ("jsonb", Kind.JSONB),
}

# Array type oid → element oid for the built-ins above.
BUILTIN_ARRAYS: dict[int, int] = {
    1000: 16, 1001: 17, 1003: 19, 1016: 20, 1005: 21, 1007: 23, 1009: 25, 199: 114,
    1021: 700, 1022: 701, 1014: 1042, 1015: 1043, 1182: 1082, 1183: 1083, 1115: 1114,
    1185: 1184, 1187: 1186, 1231: 1700, 2951: 2950, 3807: 3802, 1561: 1560,
}  # fmt: skip

_TYPTYPE_WORD = {"c": "composite type", "r": "range type", "m": "multirange type", "p": "pseudo"}
# typtype of types carried as their text form (Kind.PG_TEXT): base, composite, range and
# multirange types; the input function of each reads its own output back exactly.
_AS_TEXT = frozenset("bcrm")
_MONEY = 790
# Built-in types whose text does not mean the same on another server: reg* name objects by
# (search_path-dependent) name and fail where they do not exist; aclitem names roles; the
# planner's statistics types have no input function.
_NOT_PORTABLE = frozenset({
    "regclass", "regcollation", "regconfig", "regdictionary", "regnamespace", "regoper",
    "regoperator", "regproc", "regprocedure", "regrole", "regtype", "aclitem",
    "pg_node_tree", "pg_ndistinct", "pg_dependencies", "pg_mcv_list", "pg_brin_bloom_summary",
    "pg_brin_minmax_multi_summary", "unknown",
})  # fmt: skip
_INTERVAL_FULL_PRECISION = 0xFFFF


def _params(kind: Kind, typmod: int) -> tuple[int | None, int | None, int | None]:
    """(length, precision, scale) from a typmod; -1 means "not constrained"."""
    if typmod < 0:
        return None, None, None
    if kind in (Kind.VARCHAR, Kind.CHAR):
        return typmod - 4, None, None  # VARHDRSZ is included in the typmod
    if kind is Kind.NUMERIC:
        t = typmod - 4
        scale = ((t & 0x7FF) ^ 1024) - 1024  # 11-bit signed: PG15 allows negative scale
        return None, (t >> 16) & 0xFFFF, scale
    if kind is Kind.BIT:
        return typmod, None, None  # bit(n): the typmod is n
    if kind in (Kind.TIME, Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
        return None, typmod, None
    if kind is Kind.INTERVAL:
        precision = typmod & 0xFFFF
        return None, None if precision == _INTERVAL_FULL_PRECISION else precision, None
    return None, None, None


class TypeResolver:
    """Resolves (type oid, typmod) to a ColumnType and converter; caches catalog lookups."""

    def __init__(self, lookup: TypeLookup | None = None) -> None:
        self._lookup = lookup
        self._cache: dict[int, PgType | None] = {}

    def forget(self, oid: int) -> None:
        """A Type message announced this oid again: enum labels may have changed. pgoutput
        announces a column's own type only, so an array's element and a domain's base are
        forgotten too: an enum array whose enum gained a label kept the old labels, and rows
        using the new one became dead letters."""
        for _ in range(12):  # a chain of domains / arrays; a cycle would be a catalog bug
            t = self._cache.pop(oid, None)
            if t is None:
                return
            oid = t.elem or (t.base if t.typtype == "d" else 0)
            if not oid:
                return

    def _get(self, oid: int) -> PgType | None:
        if oid in BUILTIN:
            name, _ = BUILTIN[oid]
            return PgType(oid, "pg_catalog", name, "b")
        if oid in BUILTIN_ARRAYS:
            return PgType(oid, "pg_catalog", f"_{BUILTIN[BUILTIN_ARRAYS[oid]][0]}", "b",
                          elem=BUILTIN_ARRAYS[oid])  # fmt: skip
        if oid not in self._cache:
            self._cache[oid] = self._lookup(oid) if self._lookup else None
        return self._cache[oid]

    def resolve(
        self, oid: int, typmod: int, table: str, column: str, dims: int = 1
    ) -> tuple[ColumnType, Converter | None]:
        """Raises UnsupportedTypeError naming table, column and type when it cannot map."""
        ctype = self._column_type(oid, typmod, (table, column), max(dims, 1), 0)
        return ctype, converter_for(ctype)

    def _column_type(
        self, oid: int, typmod: int, where: tuple[str, str], dims: int, depth: int
    ) -> ColumnType:
        table, column = where
        t = self._get(oid)
        if t is None:
            raise UnsupportedTypeError(table, column, f"unknown type oid {oid}")
        if depth > 10:  # domains over domains over …: a cycle would be a catalog bug
            raise UnsupportedTypeError(table, column, t.display)
        if t.typtype == "d":
            mod = typmod if typmod >= 0 else t.base_typmod
            return self._column_type(t.base, mod, where, dims, depth + 1)
        if t.elem:
            # typmod of an array column constrains its elements (varchar(10)[] etc.)
            inner = self._column_type(t.elem, typmod, where, 0, depth + 1)
            elem = self._get(t.elem)
            if inner.array_dims or (elem is not None and elem.delim != ","):
                # Array literals of ';'-delimited types (box[]) are not what parse_array reads
                raise UnsupportedTypeError(table, column, t.display)
            return dataclasses.replace(inner, array_dims=dims, source_name=f"{inner.source_name}[]")
        if t.typtype == "e":
            return ColumnType(
                Kind.ENUM, enum_name=t.name, enum_labels=t.enum_labels, source_name=t.display
            )
        if t.typtype == "b" and oid in BUILTIN:
            kind = BUILTIN[oid][1]
            length, precision, scale = _params(kind, typmod)
            return ColumnType(kind, length, precision, scale, source_name=t.display)
        if oid == _MONEY:
            raise UnsupportedTypeError(
                table, column, t.display,
                "its text form depends on the server's lc_monetary, so it cannot be carried "
                f"exactly; change the column type: ALTER TABLE {table} ALTER COLUMN {column} "
                "TYPE numeric(…);",
            )  # fmt: skip
        if t.typtype in _AS_TEXT and not (t.schema == "pg_catalog" and t.name in _NOT_PORTABLE):
            name = PgTypeName(t.schema, t.name, t.extension, t.create, t.typtype == "c")
            return ColumnType(Kind.PG_TEXT, pg_type=name, source_name=t.display)
        word = _TYPTYPE_WORD.get(t.typtype)
        raise UnsupportedTypeError(table, column, f"{word} {t.display}" if word else t.display)
