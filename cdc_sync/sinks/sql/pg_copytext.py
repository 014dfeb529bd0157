"""Snapshot chunks loaded into PostgreSQL as the COPY text the source printed."""

from __future__ import annotations

from typing import Any

import psycopg

from cdc_sync.errors import TransientError
from cdc_sync.records import CopyText, TableId, TableSchema
from cdc_sync.sinks.sql.postgres import _NO_COPY, _id, _pct, _qualified, _where
from cdc_sync.sinks.sql.types import PostgresTypes, quote_ident

# Classes whose errors are about a row's content (22 data exception, 23 integrity): the
# chunk then goes again row by row, where one refused row is dead-lettered, not the chunk.
_ROW_CLASSES = ("22", "23")


def _table(t: TableId) -> str:
    return f"{quote_ident(t.schema)}.{quote_ident(t.name)}"


def ready(
    cur: psycopg.Cursor[Any],
    types: PostgresTypes,
    target: TableId,
    schema: TableSchema,
    after: tuple[object, ...] | None,
) -> bool:
    """Whether chunks after key ``after`` can be COPYed into ``target``: no row of it has
    such a key yet (a fresh or resumed copy), so the COPY inserts and never conflicts, and
    no COPY into it has failed in this process. A table that already holds rows there (a
    repeated snapshot) takes the row path, whose upserts overwrite them."""
    if _where(cur, target) in _NO_COPY:
        return False
    # Names with a % doubled: the statement carries %s placeholders.
    sql = f"SELECT 1 FROM {_qualified(target)}"
    if after is not None:
        keys = ", ".join(_id(k) for k in schema.key)
        casts = ", ".join(
            f"%s::{_pct(types.cast_name(schema.columns[i].type, target))}"
            for i in schema.key_indexes
        )
        sql += f" WHERE ({keys}) > ({casts})"
    return cur.execute(f"{sql} LIMIT 1", list(after or ())).fetchone() is None


def load(cur: psycopg.Cursor[Any], target: TableId, chunk: CopyText) -> None:
    """COPY the chunk's lines into ``target``, in the caller's transaction.

    A row the target refuses (a value that does not fit a differently typed target column,
    a constraint, a key written meanwhile by someone else) fails the whole COPY: the table
    then leaves this path for the process and the batch is retried (TransientError), so the
    retry reads those rows typed and refuses only the offending row (dead letter)."""
    cols = ", ".join(quote_ident(n) for n in chunk.schema.names)
    data = chunk.data
    encoding = cur.connection.info.encoding
    if encoding != chunk.encoding:
        data = data.decode(chunk.encoding).encode(encoding)
    try:
        with cur.copy(f"COPY {_table(target)} ({cols}) FROM STDIN".encode()) as cp:
            cp.write(data)
    except psycopg.Error as e:
        if not (e.sqlstate or "").startswith(_ROW_CLASSES):
            raise
        _NO_COPY.add(_where(cur, target))
        # No driver text: class 22 / 23 messages quote the row (PII).
        raise TransientError(
            f"target table {target}: refused a row of a copied chunk (SQLSTATE "
            f"{e.sqlstate}); copying that table row by row from here on"
        ) from None
