"""PostgreSQL statements for planned groups, executed on the psycopg connection underneath."""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from datetime import timedelta
from itertools import islice
from typing import Any

import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format

from cdc_sync.errors import RowLevelError, TransientError
from cdc_sync.records import Interval, TableId
from cdc_sync.sinks.sql.plan import Group, Kind
from cdc_sync.sinks.sql.types import PostgresTypes, quote_ident

# unnest: one array parameter per column; 1000-row chunks so that, in the sink's pipeline
# mode, the server runs one chunk while the next is encoded (measured ~15% faster sink
# time than one 10,000-row statement). VALUES lists: the
# protocol allows 65535 parameters per statement, and planning time grows with the list, so
# chunks stay small (200 rows measured faster than 1000 here).
_UNNEST_ROWS = 1_000
_VALUES_ROWS = 200
_MAX_PARAMS = 65_000
_COPY_MIN_ROWS = 50  # below this a probe + COPY round trip costs more than the upsert
# Target tables (server, database, table) where a COPY failed on a unique index: upserts only
# from then on, for the whole process, so the retry after the failure (a new sink) does not
# take the COPY path again and fail the same way forever.
_NO_COPY: set[tuple[str, int, str, TableId]] = set()


def _where(cur: psycopg.Cursor[Any], table: TableId) -> tuple[str, int, str, TableId]:
    info = cur.connection.info
    return (info.host, info.port, info.dbname, table)


_INTERVAL_OID = 1186
_INTERVAL_BIN = struct.Struct("!qii")


class _IntervalDumper(Dumper):
    """Interval → ISO 8601 text PostgreSQL parses exactly (months, days, µs kept apart)."""

    oid = _INTERVAL_OID

    def dump(self, obj: Interval) -> bytes:
        return obj.to_iso().encode()


class _IntervalBinaryDumper(Dumper):
    """Interval → PostgreSQL's binary interval: int64 µs, int32 days, int32 months."""

    format = Format.BINARY
    oid = _INTERVAL_OID

    def dump(self, obj: Interval) -> bytes:
        return _INTERVAL_BIN.pack(obj.microseconds, obj.days, obj.months)


class _DurationBinaryDumper(Dumper):
    """timedelta (a MySQL TIME duration) → interval of microseconds only: 900 h stays
    900:00:00 and is not turned into days (a day is not always 24 h in interval arithmetic)."""

    format = Format.BINARY
    oid = _INTERVAL_OID

    def dump(self, obj: timedelta) -> bytes:
        micros = (obj.days * 86_400 + obj.seconds) * 1_000_000 + obj.microseconds
        return _INTERVAL_BIN.pack(micros, 0, 0)


class _DurationDumper(Dumper):
    oid = _INTERVAL_OID

    def dump(self, obj: timedelta) -> bytes:
        micros = (obj.days * 86_400 + obj.seconds) * 1_000_000 + obj.microseconds
        return Interval(0, 0, micros).to_iso().encode()


def register_adapters(conn: psycopg.Connection[Any]) -> None:
    """Per connection, not global: the daemon must not change psycopg for other code."""
    conn.adapters.register_dumper(Interval, _IntervalDumper)
    conn.adapters.register_dumper(Interval, _IntervalBinaryDumper)
    conn.adapters.register_dumper(timedelta, _DurationDumper)
    conn.adapters.register_dumper(timedelta, _DurationBinaryDumper)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    if len(items) <= size:
        yield items
        return
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _id(name: str) -> str:
    # Statements here carry %s placeholders, so a literal % in a name must be doubled.
    return quote_ident(name).replace("%", "%%")


def _pct(sql: str) -> str:
    return sql.replace("%", "%%")


def _qualified(t: TableId) -> str:
    return f"{_id(t.schema)}.{_id(t.name)}"


class PostgresWriter:
    """Set-based statements per group; SQL text cached per (kind, table, schema, columns, n).

    Rows reach the server in one of two shapes, both joined as ``v`` with the target's types:
    ``unnest(%b::type[], …)`` with one binary array parameter per column (measured here ~4x
    faster than a multi-row VALUES list, whose planning grows with its size), or, when a
    column is itself an array (unnest would flatten it), a VALUES list in small chunks.
    """

    def __init__(self) -> None:
        self.types = PostgresTypes()
        self._sql: dict[tuple[object, ...], bytes] = {}
        self._copy_sqls: dict[tuple[TableId, object], tuple[bytes, bytes]] = {}
        self.copied_rows = 0  # rows that went by COPY (tests and diagnostics)

    def copyable(self, group: Group) -> bool:
        """Inserts-only runs big enough to pay for a key probe go by COPY (see ``_copy``)."""
        return (
            group.kind is Kind.UPSERT
            and group.inserts_only
            and len(group.rows) >= _COPY_MIN_ROWS
            and not any(c.type.array_dims for c in group.schema.columns)
        )

    def execute(self, cur: psycopg.Cursor[Any], group: Group) -> None:
        copy = self.copyable(group) and _where(cur, group.target) not in _NO_COPY
        if copy and self._copy(cur, group):
            return
        kind = group.kind
        if kind is Kind.UPSERT:
            for sql, params, _ in self._batches(group, range(len(group.schema.columns))):
                cur.execute(sql, params)
        elif kind is Kind.DELETE:
            # A delete's rows are its keys alone, in key order (the key's columns need not
            # be the table's first ones, nor in table order).
            for sql, params, _ in self._batches(group, group.schema.key_indexes, keys=True):
                cur.execute(sql, params)
        elif kind is Kind.UPDATE:
            self._update(cur, group)
        elif kind is Kind.REKEY:
            self._rekey(cur, group)
        else:
            t = group.target
            cur.execute(f"TRUNCATE TABLE {quote_ident(t.schema)}.{quote_ident(t.name)}".encode())

    def _copy(self, cur: psycopg.Cursor[Any], group: Group) -> bool:
        """Rows of source INSERTs whose keys no target row has yet: plain COPY, measured
        ~2x cheaper per row on the server than INSERT … ON CONFLICT, and psycopg formats
        COPY rows in C where the unnest arrays are built in Python.

        Safe because the checkpoint commits with the rows: a re-delivered transaction was
        never applied, so its inserted keys are normally absent. When any key is present
        (rows written to the target by something else), False: the caller upserts. A row
        that appears between probe and COPY makes the COPY fail with a unique violation;
        the table then stays on the upsert path and the batch is retried (TransientError)."""
        schema, target = group.schema, group.target
        probe, copy = self._copy_sql(group)
        keys = list(group.rows)
        cols = list(zip(*keys, strict=True))
        if cur.execute(probe, [list(c) for c in cols]).fetchone() is not None:
            return False
        try:
            with cur.copy(copy) as cp:
                write = cp.write_row
                for row in group.rows.values():
                    write(row)
            self.copied_rows += len(group.rows)
        except psycopg.errors.UniqueViolation:
            _NO_COPY.add(_where(cur, target))
            raise TransientError(
                f"target table {target}: a row with a key being inserted appeared in the "
                f"target meanwhile; retrying with upserts ({len(schema.key)} key column(s))"
            ) from None
        return True

    def _copy_sql(self, group: Group) -> tuple[bytes, bytes]:
        """(key probe, COPY statement) for the group's table and schema, cached."""
        key = (group.target, group.schema)
        got = self._copy_sqls.get(key)
        if got is None:
            schema, target = group.schema, group.target
            table = _qualified(target)
            arrays = ", ".join(
                f"%b::{_pct(self.types.cast_name(schema.columns[i].type, target))}[]"
                for i in schema.key_indexes
            )
            names = ", ".join(_id(k) for k in schema.key)
            match = " AND ".join(f"t.{_id(k)} = v.{_id(k)}" for k in schema.key)
            probe = f"SELECT 1 FROM {table} AS t JOIN unnest({arrays}) AS v ({names}) ON {match}"
            cols = ", ".join(quote_ident(n) for n in schema.names)
            where = f"{quote_ident(target.schema)}.{quote_ident(target.name)}"
            copy = f"COPY {where} ({cols}) FROM STDIN"
            got = self._copy_sqls[key] = (f"{probe} LIMIT 1".encode(), copy.encode())
        return got

    # -- rows as a relation ------------------------------------------------------------

    def _batches(
        self, group: Group, cols: Sequence[int], keys: bool = False
    ) -> Iterator[tuple[bytes, list[Any], int]]:
        """(statement, params, row count) per chunk of the group's rows, restricted to ``cols``;
        ``keys``: the rows are key tuples, holding exactly ``cols``' values in that order."""
        schema = group.schema
        rows = list(group.rows.values())
        every = keys or len(cols) == len(schema.columns)
        at = range(len(cols)) if keys else cols  # where each column's value is in a row
        if not any(schema.columns[i].type.array_dims for i in cols):
            for chunk in _chunks(rows, _UNNEST_ROWS):
                if every:
                    params = [list(c) for c in zip(*chunk, strict=True)]
                else:
                    params = [[r[i] for r in chunk] for i in at]
                yield self._statement(group, cols, None), params, len(chunk)
            return
        size = max(1, min(_VALUES_ROWS, _MAX_PARAMS // len(cols)))
        for chunk in _chunks(rows, size):
            params = [r[i] for r in chunk for i in at]
            yield self._statement(group, cols, len(chunk)), params, len(chunk)

    def _relation(self, group: Group, cols: Sequence[int], n: int | None) -> str:
        """``unnest(...) AS v (cols)`` (n None) or ``(VALUES ...) AS v (cols)`` of n rows.
        Every column is cast to the target's type, so bpchar keys compare blank-insensitively
        and text-sent values (enum, json, interval) get their real type."""
        schema, target = group.schema, group.target
        names = ", ".join(_id(schema.names[i]) for i in cols)
        types = [self.types.cast_name(schema.columns[i].type, target) for i in cols]
        if n is None:
            arrays = ", ".join(f"%b::{_pct(t)}[]" for t in types)
            return f"unnest({arrays}) AS v ({names})"
        # Casting the first row is enough: a VALUES list resolves each column to one type.
        first = "(" + ", ".join(f"%s::{_pct(t)}" for t in types) + ")"
        rest = "(" + ", ".join(["%s"] * len(cols)) + ")"
        return "(VALUES " + ", ".join([first] + [rest] * (n - 1)) + f") AS v ({names})"

    def _statement(self, group: Group, cols: Sequence[int], n: int | None) -> bytes:
        key = (group.kind, group.target, group.schema, group.unchanged, n)
        sql = self._sql.get(key)
        if sql is None:
            sql = self._sql[key] = self._build(group, cols, n).encode()
        return sql

    def _build(self, group: Group, cols: Sequence[int], n: int | None) -> str:
        schema, table = group.schema, _qualified(group.target)
        rel = self._relation(group, cols, n)
        match = " AND ".join(f"t.{_id(k)} = v.{_id(k)}" for k in schema.key)
        keyset = set(schema.key_indexes)
        sets = [
            f"{_id(schema.names[i])} = v.{_id(schema.names[i])}" for i in cols if i not in keyset
        ]
        if group.kind is Kind.DELETE:
            return f"DELETE FROM {table} AS t USING {rel} WHERE {match}"
        if group.kind is Kind.UPDATE:
            if not sets:  # every non-key column unchanged: still check that the row exists
                k = _id(schema.key[0])
                sets = [f"{k} = v.{k}"]
            return f"UPDATE {table} AS t SET {', '.join(sets)} FROM {rel} WHERE {match}"
        names = ", ".join(_id(schema.names[i]) for i in cols)
        excluded = [
            f"{_id(schema.names[i])} = EXCLUDED.{_id(schema.names[i])}"
            for i in cols
            if i not in keyset
        ]
        conflict = ", ".join(_id(k) for k in schema.key)
        action = f"DO UPDATE SET {', '.join(excluded)}" if excluded else "DO NOTHING"
        return (
            f"INSERT INTO {table} ({names}) SELECT {names} FROM {rel} "
            f"ON CONFLICT ({conflict}) {action}"
        )

    # -- execution ---------------------------------------------------------------------

    def _update(self, cur: psycopg.Cursor[Any], group: Group) -> None:
        """Rows with UNCHANGED (unchanged TOAST) columns: UPDATE only what the source sent.

        Such a row cannot be created here (the unchanged value is unknown to us), so a key
        that matches no target row is an error for that row, never a silently wrong insert.
        """
        schema = group.schema
        skip = set(group.unchanged)
        cols = [i for i in range(len(schema.columns)) if i not in skip]
        for sql, params, expected in self._batches(group, cols):
            cur.execute(sql, params)
            if cur.rowcount != expected:
                missing = ", ".join(schema.names[i] for i in group.unchanged)
                raise RowLevelError(
                    f"target table {group.target}: {expected - cur.rowcount} row(s) updated "
                    f"at source with unchanged TOAST column(s) {missing} are missing in the "
                    "target, so the unchanged value cannot be filled in"
                )

    def _rekey(self, cur: psycopg.Cursor[Any], group: Group) -> None:
        """Key change of a row with UNCHANGED columns: move the target row to its new key."""
        (row,) = group.rows.values()
        old = group.old_key
        if old is None:
            raise ValueError("REKEY group without old key")
        schema = group.schema
        skip = set(group.unchanged)
        cols = [i for i in range(len(schema.columns)) if i not in skip]
        sets = ", ".join(
            f"{_id(schema.names[i])} = %s::"
            + _pct(self.types.cast_name(schema.columns[i].type, group.target))
            for i in cols
        )
        where = " AND ".join(
            f"{_id(schema.names[i])} = %s::"
            + _pct(self.types.cast_name(schema.columns[i].type, group.target))
            for i in schema.key_indexes
        )
        table = _qualified(group.target)
        new = [row[i] for i in schema.key_indexes]
        # When a batch is re-applied, the new key can already exist (left by the first run)
        # while the old row is back too: the old row is the one the source moved, so the
        # leftover goes first, or the move would hit a duplicate key.
        leftover = (
            f"DELETE FROM {table} WHERE {where} AND EXISTS (SELECT FROM {table} WHERE {where})"
        )
        cur.execute(leftover.encode(), [*new, *old])
        cur.execute(
            f"UPDATE {table} SET {sets} WHERE {where}".encode(), [row[i] for i in cols] + list(old)
        )
        if cur.rowcount == 0:
            # Already moved (the batch is being re-applied): update the row at its new key.
            key = tuple(new)
            self._update(cur, Group(Kind.UPDATE, group.target, schema, group.unchanged, {key: row}))
