"""Current rows by key from PostgreSQL, decoded exactly as the pgoutput stream decodes them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime, time
from decimal import Decimal

import psycopg
from psycopg.pq.abc import PGresult

from cdc_sync.errors import PermanentError
from cdc_sync.records import Column, Interval, Row, RowProblem, TableId, TableSchema, UnreadableRow
from cdc_sync.sources.postgres.stream import classify
from cdc_sync.sources.postgres.values import (
    SESSION_SETTINGS,
    Converter,
    converter_for,
    unrepresentable,
)

CHUNK = 500
"""Keys per statement: bounded statement size and parameter count (see ``select_sql``)."""
_MAX_PARAMS = 65_535  # the protocol's limit of parameters per statement

# The output settings the replication session runs with (values.SESSION_SETTINGS), made
# local to the fetch's transaction: the catalog connection is shared and keeps its own.
SETTINGS_SQL = "SELECT " + ", ".join(["set_config(%s, %s, true)"] * len(SESSION_SETTINGS))
SETTINGS_ARGS = [x for kv in SESSION_SETTINGS.items() for x in kv]


def ident(name: str) -> str:
    # Always quoted (reserved words, case); % doubled because the statement has placeholders.
    return '"' + name.replace('"', '""').replace("%", "%%") + '"'


def key_text(value: object) -> str:
    """A canonical key value as PostgreSQL's text input for the column's type.

    Sent as an untyped parameter, so the server parses it with the key column's own type:
    no type names are needed and every kind compares with the column's ``=`` operator.
    """
    if isinstance(value, bool):  # before int: bool is an int
        return "t" if value else "f"
    if isinstance(value, str):  # text kinds, enum labels, JsonText
        return value
    if isinstance(value, int | Decimal | uuid.UUID):
        return str(value)  # Decimal: 'NaN', 'Infinity', '1E+2' are all numeric input
    if isinstance(value, float):
        return repr(value)  # shortest exact form; 'nan' / 'inf' / '-inf' are float input
    if isinstance(value, datetime):  # before date: datetime is a date
        return value.isoformat(sep=" ")
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, Interval):
        return value.to_iso()
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, list | tuple):
        return "{" + ",".join(_element_text(v) for v in value) + "}"
    raise PermanentError(f"a key value of type {type(value).__name__} cannot be looked up")


def _element_text(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, list | tuple):
        return key_text(value)
    # Quoted, so '', 'NULL', commas, braces and blanks stay part of the element.
    return '"' + key_text(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def select_sql(table: TableId, schema: TableSchema, n: int) -> str:
    """``n`` keys as a VALUES list joined to the table, each row tagged with its key's index.

    The first VALUES row is a typed NULL per key column (``(SELECT k FROM t LIMIT 0)``):
    it makes the untyped key parameters resolve to the key columns' own types, without
    naming a type, and joins nothing. The server then matches each key with the column's
    own equality (interval '1 day' = '24 hours', NaN = NaN, numeric scale), which Python
    equality on decoded values would not reproduce. One plan per chunk: 500 UNION ALL
    point lookups measured ~80x slower here (planning and starting 500 subplans).
    """
    qual = f"{ident(table.schema)}.{ident(table.name)}"
    cols = ", ".join(f"t.{ident(c)}" for c in schema.names)
    typed = ", ".join(f"(SELECT {ident(k)} FROM {qual} LIMIT 0)" for k in schema.key)
    marks = ", %s" * len(schema.key)
    rows = ", ".join(f"({i}{marks})" for i in range(n))
    names = ", ".join(f"k{j}" for j in range(len(schema.key)))
    on = " AND ".join(f"t.{ident(k)} = v.k{j}" for j, k in enumerate(schema.key))
    return (
        f"SELECT v.i, {cols} FROM (VALUES (-1, {typed}), {rows}) AS v(i, {names}) "
        f"JOIN {qual} AS t ON {on}"
    )


def decode_row(
    res: PGresult, r: int, convs: Sequence[Converter | None], columns: Sequence[Column],
    *, encoding: str, table: TableId, first: int = 1,
) -> Row:  # fmt: skip
    """Row ``r`` of ``res``, its columns from ``first`` on (0 when the query has no tag). A
    value with no exact canonical value (timestamp 'infinity', a BC date) makes it an
    ``UnreadableRow``, as the stream decoder makes it a record with a problem."""
    out: list[object] = []
    problem: RowProblem | None = None
    for j, conv in enumerate(convs):
        raw = res.get_value(r, j + first)
        if raw is None:
            out.append(None)
            continue
        text = raw.decode(encoding)
        try:
            out.append(text if conv is None else conv(text))
        except (ValueError, ArithmeticError):
            out.append(None)
            if problem is None:
                problem = unrepresentable(table, columns[j])
    return tuple(out) if problem is None else UnreadableRow(out, problem)


def fetch_rows(
    conn: psycopg.Connection[tuple[object, ...]],
    table: TableId,
    schema: TableSchema,
    keys: Sequence[tuple[object, ...]],
) -> list[Row | None]:
    """One row (or None) per key, in order; values aligned with ``schema.columns``.

    Columns are read as the server's text output under the replication session's settings,
    straight from the result (not through psycopg's loaders, nor ``::text`` casts, which
    differ for boolean and char(n)), then through the pgoutput decoder's converters: the
    same text and the same code give the same values. All chunks read one snapshot.
    """
    if not keys:
        return []
    width = len(schema.key)
    if not width or any(len(k) != width for k in keys):
        raise PermanentError(f"table {table}: every key must have {width} value(s) {schema.key}")
    convs = [converter_for(c.type) for c in schema.columns]
    per = max(1, min(CHUNK, _MAX_PARAMS // width))
    out: list[Row | None] = [None] * len(keys)
    try:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            conn.execute(SETTINGS_SQL, SETTINGS_ARGS)
            encoding = conn.info.encoding
            with conn.cursor() as cur:
                for start in range(0, len(keys), per):
                    chunk = keys[start : start + per]
                    args = [key_text(v) for k in chunk for v in k]
                    cur.execute(select_sql(table, schema, len(chunk)), args)
                    res = cur.pgresult
                    assert res is not None and res.nfields == len(convs) + 1
                    for r in range(res.ntuples):
                        tag = res.get_value(r, 0)
                        assert tag is not None
                        out[start + int(tag)] = decode_row(
                            res, r, convs, schema.columns, encoding=encoding, table=table
                        )
    except psycopg.errors.DataError as e:
        # Class 22 messages quote the input ('value "…" is out of range'): a key value (PII).
        raise PermanentError(
            f"cannot read rows of {table} from the source: a key value does not fit its "
            f"column's type (SQLSTATE {e.sqlstate})"
        ) from None
    except psycopg.Error as e:
        raise classify(e, f"cannot read rows of {table} from the source") from e
    return out
