"""Snapshot chunks as COPY text: the rows passed through undecoded, only the keys decoded."""

from __future__ import annotations

import re

import psycopg

from cdc_sync.errors import PermanentError
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
        with conn.cursor() as cur, cur.copy(f"COPY ({query}) TO STDOUT", args) as cp:
            data = b"".join(cp)
    except psycopg.errors.DataError as e:
        # Class 22 messages quote the input: a key value (PII).
        raise PermanentError(
            f"cannot read a chunk of {table} from the source: a key value does not fit its "
            f"column's type (SQLSTATE {e.sqlstate})"
        ) from None
    except psycopg.Error as e:
        raise classify(e, f"cannot read a chunk of {table} from the source") from e
    try:
        keys = read_keys(data, schema, encoding)
    except (ValueError, ArithmeticError, IndexError):
        return None
    return CopyText(schema, data, keys, encoding)
