"""Reading target tables back for verification: keyset scans in key order, rows by key."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
import pymysql
import sqlalchemy as sa

from cdc_sync.errors import PermanentError
from cdc_sync.records import (
    ColumnType,
    Interval,
    JsonText,
    Kind,
    Row,
    TableId,
    TableSchema,
    float32,
)
from cdc_sync.sinks.sql.errors import classify_db_error
from cdc_sync.sinks.sql.types import MYSQL_DIALECTS

Key = tuple[object, ...]
_LOOKUP_CHUNK = 500  # keys per statement: bounded statement size
_TEXT_KINDS = (Kind.TEXT, Kind.VARCHAR, Kind.CHAR)
_INTS = (Kind.TINYINT, Kind.SMALLINT, Kind.MEDIUMINT, Kind.INTEGER, Kind.BIGINT, Kind.YEAR)
# Key kinds whose SQL order is not Python's order of the canonical values (enum label order,
# SET bit order, JSON, intervals): tables keyed by them are verified by key lookups.
_UNORDERED = (
    Kind.ENUM, Kind.SET, Kind.JSON, Kind.JSONB, Kind.INTERVAL, Kind.REAL, Kind.DOUBLE,
    Kind.PG_TEXT,  # the type's own order (citext ignores case, inet is by address)
)  # fmt: skip
# PG_TEXT columns of a PostgreSQL target are read as text printed as the source prints it
# (its stream's session settings: a tstzrange prints in the session's TimeZone), set around
# each read and put back after it: the reader may share a transaction with the sink.
_PG_TEXT_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "iso_8601",
    "extra_float_digits": "3",
    "bytea_output": "hex",
}
_SHOW = "SELECT " + ", ".join(["current_setting(%s)"] * len(_PG_TEXT_SETTINGS))
_SET = "SELECT " + ", ".join(["set_config(%s, %s, true)"] * len(_PG_TEXT_SETTINGS))


def key_orderable(schema: TableSchema) -> bool:
    """True when ORDER BY the key gives Python's order of the canonical key values."""
    return all(
        schema.column(k).type.kind not in _UNORDERED and not schema.column(k).type.array_dims
        for k in schema.key
    )


def _utc(v: datetime) -> datetime:
    return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)


def _interval(v: Any) -> Interval:
    months, days, micros = (int(x) for x in str(v).split(","))
    return Interval(months, days, micros)


def _bits(length: int | None) -> Callable[[Any], str]:
    def conv(v: Any) -> str:
        if isinstance(v, bytes | bytearray):
            return format(int.from_bytes(v, "big"), f"0{length or 1}b")
        return str(v)

    return conv


def _int(v: Any) -> int:
    return int(v)


_PG_INT_TYPES = frozenset({"int2", "int4", "int8"})


def _converters(
    schema: TableSchema, mysql: bool, pg_types: dict[str, str] | None = None
) -> list[tuple[int, Callable[[Any], Any]]]:
    """Per column that needs it: driver value → canonical value (None passes through).
    ``pg_types``: PostgreSQL column name → type name, where known."""
    out: list[tuple[int, Callable[[Any], Any]]] = []
    for i, c in enumerate(schema.columns):
        k = c.type.kind
        if c.type.array_dims:
            continue
        conv: Callable[[Any], Any] | None = None
        if k is Kind.TIMESTAMPTZ:
            conv = _utc
        elif k in (Kind.JSON, Kind.JSONB):
            conv = JsonText
        elif k is Kind.BIT:
            conv = _bits(c.type.length)
        elif k is Kind.INTERVAL and not mysql:
            conv = _interval  # MySQL keeps Interval.to_iso() text: compared as rendered
        elif mysql and k is Kind.BOOLEAN:
            conv = bool
        elif mysql and k is Kind.UUID:
            conv = UUID
        elif mysql and k is Kind.REAL:
            conv = float32
        elif not mysql and k in _INTS and (pg_types or {}).get(c.name) not in _PG_INT_TYPES:
            conv = _int  # numeric(20,0) holds MySQL bigint unsigned in PostgreSQL
        if conv is not None:
            out.append((i, conv))
    return out


def _for_digest(
    schema: TableSchema, mysql: bool, conv: list[tuple[int, Callable[[Any], Any]]]
) -> list[tuple[int, Callable[[Any], Any]]]:
    """The converters a row digest still needs: key columns (keys are compared, bound and
    reported as canonical values) and PostgreSQL intervals (their 'months,days,us' text is
    no form the renderer reads). The digest takes every other driver value as it comes."""
    keys = set(schema.key_indexes)
    return [
        (i, f)
        for i, f in conv
        if i in keys or (not mysql and schema.columns[i].type.kind is Kind.INTERVAL)
    ]


def _pg_column(name: str, ct: ColumnType) -> str:
    q, kind = _pg_ident(name), ct.kind
    if kind is Kind.PG_TEXT:
        # The type's output function, as the source's text is (format's %s): ::text may
        # call a cast function that prints otherwise (inet's text() adds the /32). NULL
        # by num_nulls, not IS NULL: a row of NULL fields IS NULL.
        if ct.array_dims:  # elements in order (a multi-dimensional array flattened)
            return (
                f"CASE WHEN {q} IS NULL THEN NULL ELSE ARRAY(SELECT CASE WHEN num_nulls(e) = 1 "
                f"THEN NULL ELSE format('%%s', e) END FROM unnest({q}) WITH ORDINALITY u(e, n) "
                "ORDER BY n) END"
            )
        return f"CASE WHEN num_nulls({q}) = 1 THEN NULL ELSE format('%%s', {q}) END"
    if kind in (Kind.JSON, Kind.JSONB, Kind.BIT, Kind.ENUM):
        return f"{q}::text"  # exact stored text; psycopg would parse JSON into objects
    if kind is Kind.INTERVAL:
        # The three stored fields exactly (psycopg folds months into 30-day timedeltas).
        return (
            f"(extract(year from {q}) * 12 + extract(month from {q}))::bigint || ',' || "
            f"extract(day from {q})::bigint || ',' || ((extract(hour from {q}) * 3600 + "
            f"extract(minute from {q}) * 60) * 1000000 + extract(microseconds from {q}))::bigint"
        )
    return q


def _pg_ident(name: str) -> str:
    return '"' + name.replace('"', '""').replace("%", "%%") + '"'


def _my_ident(name: str) -> str:
    return "`" + name.replace("`", "``").replace("%", "%%") + "`"


def _my_column(name: str, kind: Kind) -> str:
    # A FLOAT's text has 6 digits, which reads back as another single-precision value (verify
    # then saw a difference that --repair could never clear): as DOUBLE it is exact.
    return f"CAST({_my_ident(name)} AS DOUBLE)" if kind is Kind.REAL else _my_ident(name)


def _my_param(v: object) -> object:
    """A canonical key value as PyMySQL can bind it for the column the sink created."""
    if isinstance(v, datetime) and v.tzinfo is not None:
        return v.astimezone(UTC).replace(tzinfo=None)
    if isinstance(v, UUID | Interval):
        return str(v) if isinstance(v, UUID) else v.to_iso()
    if isinstance(v, bool):
        return int(v)
    return v


class TargetReader:
    """One target table, target-shaped ``schema``: rows as canonical values.

    Scans run in the order of the key *as Python orders the canonical values*: text key
    columns are compared byte-wise (PostgreSQL ``COLLATE "C"`` unless the column already
    sorts that way; MySQL / MariaDB tables made by the sink are binary NO PAD), so a merge
    with the source's rows never depends on a locale. Callers still check the order they get.
    """

    def __init__(self, conn: sa.Connection, table: TableId, schema: TableSchema) -> None:
        self.conn = conn
        self.table = table
        self.schema = schema
        self.mysql = conn.dialect.name in MYSQL_DIALECTS
        self._pg_text = not self.mysql and any(c.type.kind is Kind.PG_TEXT for c in schema.columns)
        self._key_idx = schema.key_indexes
        pg_types: dict[str, str] | None = None
        if self.mysql:
            self._from = f"{_my_ident(table.schema)}.{_my_ident(table.name)}"
            self._cols = ", ".join(_my_column(c.name, c.type.kind) for c in schema.columns)
            self._keys = [_my_ident(k) for k in schema.key]
            self._order = self._keys
        else:
            self._from = f"{_pg_ident(table.schema)}.{_pg_ident(table.name)}"
            self._cols = ", ".join(_pg_column(c.name, c.type) for c in schema.columns)
            self._keys = [_pg_ident(k) for k in schema.key]
            binary, pg_types = self._pg_columns()
            self._order = [
                q
                if schema.column(k).type.kind not in _TEXT_KINDS or k in binary
                else f'{q} COLLATE "C"'
                for k, q in zip(schema.key, self._keys, strict=True)
            ]
        self._conv = _converters(schema, self.mysql, pg_types)
        self._conv_digest = _for_digest(schema, self.mysql, self._conv)

    def _pg_columns(self) -> tuple[set[str], dict[str, str]]:
        """Columns whose collation already sorts by code point (C / POSIX / ucs_basic): no
        COLLATE clause for them, so that the primary key index serves the scan; and every
        column's type name (an integer kind stored as int2/4/8 needs no conversion)."""
        rows = self._execute(
            "SELECT a.attname, CASE WHEN co.collname = 'default' THEN d.datcollate "
            "ELSE co.collname END, t.typname FROM pg_attribute a "
            "JOIN pg_type t ON t.oid = a.atttypid "
            "LEFT JOIN pg_collation co ON co.oid = a.attcollation "
            "JOIN pg_database d ON d.datname = current_database() "
            "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped",
            [f"{self._from}".replace("%%", "%")],
            convert=False,
        )
        binary = {str(n) for n, coll, _ in rows if str(coll) in ("C", "POSIX", "ucs_basic")}
        return binary, {str(n): str(t) for n, _, t in rows}

    def _execute(
        self,
        sql: str,
        args: Sequence[object],
        convert: bool = True,
        conv: list[tuple[int, Callable[[Any], Any]]] | None = None,
    ) -> list[Row]:
        raw = self.conn.connection.driver_connection
        try:
            if isinstance(raw, psycopg.Connection):
                if not self.conn.in_transaction():
                    self.conn.begin()
                rows: list[Row] = (
                    _with_pg_text_settings(raw, sql, args)
                    if self._pg_text
                    else raw.execute(sql, args).fetchall()
                )
            elif isinstance(raw, pymysql.connections.Connection):
                if not self.conn.in_transaction():
                    self.conn.begin()
                with raw.cursor() as cur:
                    cur.execute(sql, [_my_param(a) for a in args])
                    rows = list(cur.fetchall())
            else:
                raise PermanentError("verify reads targets through psycopg or PyMySQL only")
        except (psycopg.Error, pymysql.MySQLError) as e:
            raise classify_db_error(e, str(self.table)) from None
        if not convert:
            return rows
        conv = self._conv if conv is None else conv
        if not conv:
            return rows
        return [_canonical(r, conv) for r in rows]

    def key_of(self, row: Row) -> Key:
        return tuple(row[i] for i in self._key_idx)

    def _after(self, after: Key, op: str) -> tuple[str, list[object]]:
        """``key op after`` in scan order (op '>' or '<='), index-friendly on both engines."""
        cols = self._order
        if not self.mysql:
            return f"({', '.join(cols)}) {op} ({', '.join(['%s'] * len(cols))})", list(after)
        # MariaDB does not use an index for row-value inequalities: spelled out.
        terms, args = [], []
        for i in range(len(cols)):
            cmp = op if i == len(cols) - 1 else op[0]  # '<=' on the last column only
            eqs = [f"{c} = %s" for c in cols[:i]]
            terms.append("(" + " AND ".join([*eqs, f"{cols[i]} {cmp} %s"]) + ")")
            args += [*after[:i], after[i]]
        return "(" + " OR ".join(terms) + ")", args

    def scan(
        self,
        after: Key | None,
        limit: int,
        upto: Key | None = None,
        keys_only: bool = False,
        for_digest: bool = False,
    ) -> list[Row]:
        """Up to ``limit`` rows with ``after`` < key <= ``upto`` (unbounded when None), in
        scan order. ``keys_only``: only the key columns (still converted). ``for_digest``:
        canonical key values, the others as the row digest takes them (mostly the driver's
        own: converting every value costs more than reading it)."""
        where, args = [], []
        if after is not None:
            sql, a = self._after(after, ">")
            where.append(sql)
            args += a
        if upto is not None:
            sql, a = self._after(upto, "<=")
            where.append(sql)
            args += a
        cols = ", ".join(self._keys) if keys_only else self._cols
        text = f"SELECT {cols} FROM {self._from}"
        if where:
            text += " WHERE " + " AND ".join(where)
        text += f" ORDER BY {', '.join(self._order)} LIMIT {int(limit)}"
        if not keys_only:
            return self._execute(text, args, conv=self._conv_digest if for_digest else None)
        rows = self._execute(text, args, convert=False)
        reader = _KeyOnly(self._key_idx, self._conv)
        return [reader(r) for r in rows] if reader.needed else rows

    def lookup(self, keys: Sequence[Key], lock: bool = False) -> dict[Key, Row]:
        """The target rows that exist for these keys, by their canonical key. ``lock``:
        FOR UPDATE, so that no local writer changes them before our transaction ends."""
        out: dict[Key, Row] = {}
        width = len(self._keys)
        tuple_sql = "(" + ", ".join(["%s"] * width) + ")"
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[start : start + _LOOKUP_CHUNK]
            text = (
                f"SELECT {self._cols} FROM {self._from} WHERE ({', '.join(self._keys)}) IN "
                f"({', '.join([tuple_sql] * len(chunk))})" + (" FOR UPDATE" if lock else "")
            )
            for row in self._execute(text, [v for k in chunk for v in k]):
                out[self.key_of(row)] = row
        return out


def _with_pg_text_settings(
    raw: psycopg.Connection[Any], sql: str, args: Sequence[object]
) -> list[Row]:
    names = list(_PG_TEXT_SETTINGS)
    was = raw.execute(_SHOW, names).fetchone()
    assert was is not None
    raw.execute(_SET, [x for kv in _PG_TEXT_SETTINGS.items() for x in kv])
    rows: list[Row] = raw.execute(sql, args).fetchall()
    # Not on an error: the transaction is then rolled back, and its settings with it.
    raw.execute(_SET, [x for kv in zip(names, was, strict=True) for x in kv])
    return rows


def _canonical(row: Row, conv: list[tuple[int, Callable[[Any], Any]]]) -> Row:
    out = list(row)
    for i, f in conv:
        v = out[i]
        if v is not None:
            out[i] = f(v)
    return tuple(out)


class _KeyOnly:
    """Converters of a full row applied to a row of key columns only."""

    def __init__(
        self, key_idx: tuple[int, ...], conv: list[tuple[int, Callable[[Any], Any]]]
    ) -> None:
        by_col = dict(conv)
        self._conv = [(pos, by_col[i]) for pos, i in enumerate(key_idx) if i in by_col]
        self.needed = bool(self._conv)

    def __call__(self, row: Row) -> Row:
        out = list(row)
        for pos, conv in self._conv:
            if out[pos] is not None:
                out[pos] = conv(out[pos])
        return tuple(out)
