"""Snapshot chunks as COPY text: the rows passed through undecoded, only the keys decoded."""

from __future__ import annotations

import re

import psycopg
from psycopg.abc import PQGen
from psycopg.errors import error_from_result
from psycopg.pq import ExecStatus
from psycopg.pq.abc import PGconn, PGresult
from psycopg.waiting import Wait

from cdc_sync.errors import CdcSyncError, PermanentError
from cdc_sync.records import CopyText, Kind, TableId, TableSchema
from cdc_sync.sources.postgres.fetch import key_text
from cdc_sync.sources.postgres.stream import classify
from cdc_sync.sources.postgres.values import Converter, converter_for

Conn = psycopg.Connection[tuple[object, ...]]

_INTS = frozenset({Kind.SMALLINT, Kind.INTEGER, Kind.BIGINT})
# COPY TO's text format escapes only these (and never prints octal or hex escapes).
_ESCAPES = {b"b": "\b", b"f": "\f", b"n": "\n", b"r": "\r", b"t": "\t", b"v": "\v", b"\\": "\\"}
_ESCAPED = re.compile(rb"\\(.)", re.DOTALL)


def _unescape(field: bytes, encoding: str) -> str:
    if b"\\" not in field:
        return field.decode(encoding)
    parts: list[str] = []
    pos = 0
    for m in _ESCAPED.finditer(field):
        parts.append(field[pos : m.start()].decode(encoding))
        parts.append(_ESCAPES.get(m.group(1), m.group(1).decode(encoding)))
        pos = m.end()
    parts.append(field[pos:].decode(encoding))
    return "".join(parts)


# A line starts after a newline byte (the chunk gets one in front): a search for a literal
# newline, several times faster than a MULTILINE `^` tried at every position.
_FIRST_INT = re.compile(rb"\n(-?[0-9]+)[\t\n]")


def chunk_error(err: psycopg.Error, table: TableId) -> CdcSyncError:
    """A failed chunk read, classified; never with the driver's text for class 22, whose
    messages quote the input: a key value (PII)."""
    where = f"cannot read a chunk of {table} from the source"
    if isinstance(err, psycopg.errors.DataError):
        return PermanentError(
            f"{where}: a key value does not fit its column's type (SQLSTATE {err.sqlstate})"
        )
    return classify(err, where)


def read_keys(data: bytes, schema: TableSchema, encoding: str) -> list[tuple[object, ...]]:
    """Each row's key, typed as the stream types it, from COPY text lines.

    A single integer key first in the row (the common CRM shape) is found by one regular
    expression over the whole chunk: this runs for every copied row. A newline inside a
    value is printed as an escape, so every newline byte ends a row."""
    idx = schema.key_indexes
    first = schema.columns[idx[0]].type
    if idx == (0,) and first.kind in _INTS and not first.array_dims:
        found = _FIRST_INT.findall(b"\n" + data)
        if len(found) == data.count(b"\n"):  # else not what COPY prints: read it the long way
            return list(zip(map(int, found), strict=True))
    convs: list[tuple[int, Converter | None]] = [
        (i, converter_for(schema.columns[i].type)) for i in idx
    ]
    top = max(idx)
    out: list[tuple[object, ...]] = []
    for line in data.split(b"\n")[:-1]:
        fields = line.split(b"\t", top + 1)
        key: list[object] = []
        for i, conv in convs:
            text = _unescape(fields[i], encoding)
            key.append(text if conv is None else conv(text))
        out.append(tuple(key))
    return out


def copy_chunk(
    conn: Conn, table: TableId, schema: TableSchema, query: str, after: tuple[object, ...] | None
) -> CopyText | None:
    """The rows of the chunk ``query`` selects, as COPY text, in the transaction ``conn``
    is in. None when a key cannot be typed (e.g. a timestamp key of 'infinity'): the caller
    reads that chunk row by row, where the row-level handling applies."""
    args = [key_text(v) for v in after] if after is not None else []
    encoding = conn.info.encoding
    try:
        sql = psycopg.ClientCursor(conn).mogrify(f"COPY ({query}) TO STDOUT", args)
        with conn.lock:
            data = conn.wait(_copy_out(conn.pgconn, sql.encode(encoding), encoding))
    except psycopg.Error as e:
        raise chunk_error(e, table) from None
    try:
        keys = read_keys(data, schema, encoding)
    except (ValueError, ArithmeticError, IndexError):
        return None
    return CopyText(schema, data, keys, encoding)


def _result(pg: PGconn) -> PQGen[PGresult | None]:
    """The next result of the statement in flight; None when there is no more."""
    while True:
        pg.consume_input()
        if not pg.is_busy():
            return pg.get_result()
        while not (yield Wait.R):
            continue


def _copy_out(pg: PGconn, query: bytes, encoding: str) -> PQGen[bytes]:
    """Run ``COPY … TO STDOUT`` and return its rows, on the libpq connection directly.

    psycopg's Copy object reads one row per wait (a generator and a wait per row: ~40 % of a
    snapshot's read time here); this takes every row already buffered in one go and waits
    (through the connection's ``wait``: the dead-peer watch) only when none is."""
    pg.send_query(query)
    while pg.flush():
        while not (yield Wait.RW):
            continue
    res = yield from _result(pg)
    if res is None or res.status != ExecStatus.COPY_OUT:
        while (yield from _result(pg)) is not None:
            pass  # the connection takes no new statement until every result is read
        raise (
            error_from_result(res, encoding=encoding)
            if res
            else psycopg.OperationalError("COPY TO STDOUT returned no result")
        )
    parts: list[memoryview] = []
    while True:
        n, buf = pg.get_copy_data(1)
        if n > 0:
            parts.append(buf)
            continue
        if n < 0:
            break
        while not (yield Wait.R):
            continue
        pg.consume_input()
    end = yield from _result(pg)
    while (yield from _result(pg)) is not None:
        pass
    if end is None or end.status != ExecStatus.COMMAND_OK:
        raise (
            error_from_result(end, encoding=encoding)
            if end
            else psycopg.OperationalError("COPY TO STDOUT ended without a result")
        )
    return b"".join(parts)
