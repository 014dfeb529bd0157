"""MySQL / MariaDB statements for planned groups, executed on the PyMySQL connection underneath."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

import pymysql

from cdc_sync.errors import RowLevelError
from cdc_sync.records import Row, TableId, TableSchema
from cdc_sync.sinks.sql.errors import TargetRowError, classify_db_error, mysql_column, mysql_errno
from cdc_sync.sinks.sql.mysql_values import Literal, Refused, literal_for
from cdc_sync.sinks.sql.plan import Group, Kind

# Multi-row statements are cut at about this many bytes: well under max_allowed_packet
# (4 MiB on old servers, 16 MiB on MariaDB 10.11, 64 MiB on MySQL 8), and large enough that
# per-statement overhead is small (measured: 256 KiB and 1 MiB perform alike here).
_STATEMENT_BYTES = 1 << 20
# Room left in a packet for a statement's text around one row (names, ON DUPLICATE KEY ...).
_STATEMENT_ROOM = 64 << 10
_MATCHED = re.compile(rb"Rows matched: (\d+)")


def quote_mysql(name: str) -> str:
    """Backtick-quote an identifier; embedded backticks are doubled."""
    return "`" + name.replace("`", "``") + "`"


def qualified_mysql(t: TableId) -> str:
    """``schema`` is the MySQL database."""
    return f"{quote_mysql(t.schema)}.{quote_mysql(t.name)}"


class MySqlWriter:
    """Rows are sent as SQL literals built here (one function per column, chosen once per
    schema), so every value passes the policy checks of mysql_values and no driver-side
    type guessing is involved; statements carry no placeholders, so no '%' escaping."""

    def __init__(self) -> None:
        self._literals: dict[tuple[TableId, TableSchema], tuple[Literal, ...]] = {}
        self._sql: dict[tuple[object, ...], tuple[str, str]] = {}
        self._row_chars = 0  # rows longer than this are measured in bytes (see _too_big)
        self._packet = 0

    def execute(self, cur: pymysql.cursors.Cursor, group: Group) -> None:
        if not self._packet:
            # A statement over the server's max_allowed_packet is not refused with an error
            # the row could be blamed for: the server drops the connection, which looked
            # transient and was retried for ever. Read once; the server's global value.
            cur.execute("SELECT @@max_allowed_packet")
            row = cur.fetchone()
            self._packet = int(row[0]) if row else 4 << 20
            self._row_chars = (self._packet - _STATEMENT_ROOM) // 4  # utf8mb4: <= 4 bytes
        try:
            kind = group.kind
            if kind is Kind.UPSERT:
                self._upsert(cur, group)
            elif kind is Kind.DELETE:
                self._delete(cur, group, list(group.rows.values()))
            elif kind is Kind.UPDATE:
                self._update(cur, group)
            elif kind is Kind.REKEY:
                self._rekey(cur, group)
            else:
                # DELETE, not TRUNCATE: TRUNCATE is DDL in MySQL and would commit the open
                # transaction (rows, audit and checkpoint must commit together).
                cur.execute(f"DELETE FROM {qualified_mysql(group.target)}")
        except pymysql.MySQLError as e:
            if (
                group.kind is Kind.UPSERT
                and mysql_errno(e) == 1048
                and mysql_column(e) == group.schema.key[0]
            ):
                # Our upsert turns a clash on another unique index into this 1048 on purpose
                # (see _upsert); it is reported as the duplicate key it is.
                reason = "another target row already has this value of a unique key"
                raise TargetRowError(
                    f"target table {group.target}: {reason} (a unique index other than the "
                    "key); the row is not merged into that row",
                    code="1062",
                    reason=reason,
                ) from None
            # from None: the driver's text can carry row values ("Duplicate entry 'x'").
            raise classify_db_error(e, group.target) from None

    # -- values --------------------------------------------------------------------------

    def _lits(self, group: Group) -> tuple[Literal, ...]:
        key = (group.target, group.schema)
        lits = self._literals.get(key)
        if lits is None:
            lits = self._literals[key] = tuple(literal_for(c.type) for c in group.schema.columns)
        return lits

    def _tuple(self, group: Group, row: Row, cols: Sequence[int]) -> str:
        lits = self._lits(group)
        try:
            text = (
                "("
                + ",".join(["NULL" if (v := row[i]) is None else lits[i](v) for i in cols])
                + ")"
            )
        except Refused:
            raise self._refused(group, row, cols) from None
        if len(text) > self._row_chars:
            self._too_big(group, text)
        return text

    def _too_big(self, group: Group, text: str) -> None:
        """A row whose statement cannot fit into one packet of the server: a dead letter
        (or a stop, by on_error) that says what to change, never a retry loop."""
        size = len(text.encode())
        if size + _STATEMENT_ROOM <= self._packet:
            return
        reason = "the row is larger than the server's max_allowed_packet"
        raise TargetRowError(
            f"target table {group.target}: {reason} ({size} bytes as SQL, the server takes "
            f"{self._packet}); fix: SET GLOBAL max_allowed_packet = "
            f"{min(1 << 30, (size + _STATEMENT_ROOM) * 2)}; (and in the server's config), "
            "then `cdc-sync dlq retry`",
            code="1153",
            reason=reason,
        )

    def _refused(self, group: Group, row: Row, cols: Sequence[int]) -> RowLevelError:
        """Which column refused (found again off the hot path), named with its type."""
        lits = self._lits(group)
        for i in cols:
            v = row[i]
            try:
                if v is not None:
                    lits[i](v)
            except Refused as e:
                col = group.schema.columns[i]
                kind = col.type.source_name or col.type.kind.value
                return TargetRowError(
                    f"target table {group.target}: column {col.name!r} ({kind}): value "
                    f"{e.why}; the row is stopped rather than stored altered",
                    code=None,
                    reason=f"the value {e.why} for the target column ({kind})",
                    column=col.name,
                )
        return RowLevelError(f"target table {group.target}: a value was refused")

    def _chunks(self, group: Group, rows: Sequence[Row], cols: Sequence[int]) -> Iterator[str]:
        """Comma-joined row tuples, each chunk under ``_STATEMENT_BYTES`` (one big row alone)."""
        parts: list[str] = []
        size = 0
        for row in rows:
            text = self._tuple(group, row, cols)
            if parts and size + len(text) > _STATEMENT_BYTES:
                yield ",".join(parts)
                parts, size = [], 0
            parts.append(text)
            size += len(text) + 1
        if parts:
            yield ",".join(parts)

    # -- statements ----------------------------------------------------------------------

    def _upsert(self, cur: pymysql.cursors.Cursor, group: Group) -> None:
        schema = group.schema
        head = self._sql.get((Kind.UPSERT, group.target, schema))
        if head is None:
            names = [quote_mysql(n) for n in schema.names]
            keys = set(schema.key_indexes)
            # ON DUPLICATE KEY fires on *any* unique index: a row that collides with another
            # row on some other unique index would silently overwrite that row. The first
            # assignment keeps the key when it matches and sets NULL otherwise, which strict
            # mode refuses (1048): the row is stopped instead of merged into a stranger.
            first = names[schema.key_indexes[0]]
            same = " AND ".join(f"{names[i]} <=> VALUES({names[i]})" for i in schema.key_indexes)
            sets = [f"{first} = IF({same}, {first}, NULL)"]
            sets += [f"{n} = VALUES({n})" for i, n in enumerate(names) if i not in keys]
            head = self._sql[(Kind.UPSERT, group.target, schema)] = (
                f"INSERT INTO {qualified_mysql(group.target)} ({', '.join(names)}) VALUES ",
                " ON DUPLICATE KEY UPDATE " + ", ".join(sets),
            )
        prefix, suffix = head
        cols = range(len(schema.columns))
        for values in self._chunks(group, list(group.rows.values()), cols):
            cur.execute(prefix + values + suffix)

    def _delete(self, cur: pymysql.cursors.Cursor, group: Group, keys: Sequence[Row]) -> None:
        """Keys as full-width rows are not at hand (DELETE groups hold key tuples), so the
        literals are taken from the key columns' positions."""
        schema = group.schema
        kcols = [quote_mysql(k) for k in schema.key]
        where = kcols[0] if len(kcols) == 1 else "(" + ", ".join(kcols) + ")"
        table = qualified_mysql(group.target)
        lits = self._lits(group)
        klits = [lits[i] for i in schema.key_indexes]
        single = len(kcols) == 1
        parts: list[str] = []
        size = 0
        for key in keys:
            try:
                text = ",".join(
                    ["NULL" if v is None else f(v) for f, v in zip(klits, key, strict=True)]
                )
            except Refused:
                full: list[object] = [None] * len(schema.columns)
                for i, v in zip(schema.key_indexes, key, strict=True):
                    full[i] = v
                raise self._refused(group, tuple(full), schema.key_indexes) from None
            text = text if single else f"({text})"
            parts.append(text)
            size += len(text) + 1
            if size > _STATEMENT_BYTES:
                cur.execute(f"DELETE FROM {table} WHERE {where} IN ({','.join(parts)})")
                parts, size = [], 0
        if parts:
            cur.execute(f"DELETE FROM {table} WHERE {where} IN ({','.join(parts)})")

    def _set_where(self, group: Group, row: Row, key: Sequence[object]) -> tuple[str, str]:
        schema = group.schema
        lits = self._lits(group)
        skip = set(group.unchanged)
        try:
            sets = ", ".join(
                f"{quote_mysql(schema.names[i])} = "
                + ("NULL" if row[i] is None else lits[i](row[i]))
                for i in range(len(schema.columns))
                if i not in skip
            )
            where = " AND ".join(
                f"{quote_mysql(schema.names[i])} = " + lits[i](v)
                for i, v in zip(schema.key_indexes, key, strict=True)
            )
        except Refused:
            raise self._refused(group, row, range(len(schema.columns))) from None
        if len(sets) > self._row_chars:
            self._too_big(group, sets)
        return sets, where

    def _update(self, cur: pymysql.cursors.Cursor, group: Group) -> None:
        """Rows with UNCHANGED columns: UPDATE only what the source sent, one row each (rare:
        only PostgreSQL sources omit unchanged TOASTed values). A missing row is an error
        for that row: the unchanged value is unknown here, so it cannot be inserted."""
        schema = group.schema
        table = qualified_mysql(group.target)
        for row in group.rows.values():
            key = [row[i] for i in schema.key_indexes]
            sets, where = self._set_where(group, row, key)
            cur.execute(f"UPDATE {table} SET {sets} WHERE {where}")
            if _matched(cur) == 0:
                missing = ", ".join(schema.names[i] for i in group.unchanged)
                raise RowLevelError(
                    f"target table {group.target}: a row updated at source with unchanged "
                    f"TOAST column(s) {missing} is missing in the target, so the unchanged "
                    "value cannot be filled in"
                )

    def _rekey(self, cur: pymysql.cursors.Cursor, group: Group) -> None:
        """Key change of a row with UNCHANGED columns: move the target row to its new key."""
        (row,) = group.rows.values()
        old = group.old_key
        if old is None:
            raise ValueError("REKEY group without old key")
        schema = group.schema
        table = qualified_mysql(group.target)
        new = [row[i] for i in schema.key_indexes]
        sets, where_old = self._set_where(group, row, old)
        _, where_new = self._set_where(group, row, new)
        # Re-applied batch: the new key may exist (left by the first run) while the old row
        # is back too; the old row is the one the source moved, so the leftover goes first.
        cur.execute(f"SELECT 1 FROM {table} WHERE {where_old} FOR UPDATE")
        if cur.fetchall():
            cur.execute(f"DELETE FROM {table} WHERE {where_new}")
            cur.execute(f"UPDATE {table} SET {sets} WHERE {where_old}")
        else:  # already moved: update the row at its new key
            self._update(cur, Group(Kind.UPDATE, group.target, schema, group.unchanged, {0: row}))


def _matched(cur: pymysql.cursors.Cursor) -> int:
    """Rows an UPDATE matched, also when their values did not change (MySQL's affected-rows
    count leaves those out unless the connection set CLIENT.FOUND_ROWS)."""
    result: Any = getattr(cur, "_result", None)
    info = getattr(result, "message", None) or b""
    found = _MATCHED.search(info if isinstance(info, bytes) else str(info).encode())
    return int(found.group(1)) if found else int(cur.rowcount)
