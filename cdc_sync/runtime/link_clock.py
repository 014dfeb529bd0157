"""Commit times of a link side's current rows, for last_write_wins: where each comes from.

A row's current version on side X was written either by the link (the other direction's
change, applied here: its source commit time is kept in ``cdc_sync_row_clock`` in the same
transaction) or locally on X. A local version's time is read from X itself where the
engine keeps it (PostgreSQL ``track_commit_timestamp``), else it is stamped into the clock
by the pipeline that captures X as it reads the change (MySQL / MariaDB): the applier then
waits until that reader has passed X's binlog head before it decides.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
import sqlalchemy as sa

from cdc_sync.errors import PermanentError, TransientError
from cdc_sync.records import BinlogPosition, Position, Row, TableId, TableSchema
from cdc_sync.state.tables import state_tables
from cdc_sync.verify.canonical import renderer

SEEN = "__seen__"  # table_name of the row holding how far a side's reader has stamped
_WAIT_SECONDS = 30.0


def key_hash(key: Iterable[object]) -> str:
    """The same text for a key whether it comes from a binlog row or a target read."""
    text = json.dumps([None if v is None else str(v) for v in key], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def row_digest(schema: TableSchema, row: Row) -> str:
    """Of a full row in canonical text: equal for what we wrote and what we read back."""
    parts = [None if v is None else renderer(c.type)(v) for c, v in zip(schema.columns, row,
                                                                        strict=True)]  # fmt: skip
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()[:40]


class Clock:
    """The ``cdc_sync_row_clock`` rows of one link in one side's database."""

    def __init__(self, link: str, schema: str | None) -> None:
        self.link = link
        self.table = state_tables(schema).metadata.tables[_clock_key(schema)]

    def write_remote(
        self, conn: sa.Connection, table: TableId, entries: Sequence[tuple[str, datetime, str]]
    ) -> None:
        """(key hash, version time, digest) of rows the link wrote, in the caller's
        transaction: the time travels with the row."""
        if entries:
            self._upsert(conn, table, entries, ("remote_time", "remote_digest"))

    def stamp_local(
        self,
        conn: sa.Connection,
        table: TableId,
        entries: Sequence[tuple[str, datetime, str]],
    ) -> None:
        """(key hash, commit time, position) of local changes, as the capture reads them."""
        if entries:
            self._upsert(conn, table, entries, ("local_time", "local_position"))

    def _upsert(
        self,
        conn: sa.Connection,
        table: TableId,
        entries: Sequence[tuple[str, datetime | None, str]],
        cols: tuple[str, str],
    ) -> None:
        now = datetime.now(UTC)
        rows = [
            {"link": self.link, "table_name": str(table), "key_hash": k, cols[0]: t, cols[1]: v,
             "updated_at": now}
            for k, t, v in {e[0]: e for e in entries}.values()
        ]  # fmt: skip
        t = self.table
        stmt: Any
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert  # noqa: PLC0415

            stmt = pg_insert(t).values(rows)
            stmt = stmt.on_conflict_do_update(
                index_elements=["link", "table_name", "key_hash"],
                set_={c: stmt.excluded[c] for c in (*cols, "updated_at")},
            )
        else:
            from sqlalchemy.dialects.mysql import insert as my_insert  # noqa: PLC0415

            mstmt = my_insert(t).values(rows)
            stmt = mstmt.on_duplicate_key_update(
                {c: mstmt.inserted[c] for c in (*cols, "updated_at")}
            )
        conn.execute(stmt)

    def mark_seen(self, conn: sa.Connection, side: str, position: Position) -> None:
        self._upsert(conn, TableId(SEEN, side), [("-", None, position.to_text())],
                     ("local_time", "local_position"))  # fmt: skip

    def seen(self, conn: sa.Connection, side: str) -> Position | None:
        t = self.table
        text = conn.execute(
            sa.select(t.c.local_position).where(
                t.c.link == self.link, t.c.table_name == str(TableId(SEEN, side))
            )
        ).scalar()
        return None if text is None else Position.parse(str(text))

    def read(
        self, conn: sa.Connection, table: TableId, hashes: Sequence[str]
    ) -> dict[str, tuple[datetime | None, str | None, datetime | None]]:
        """key hash → (remote time, remote digest, local time)."""
        t = self.table
        out: dict[str, tuple[datetime | None, str | None, datetime | None]] = {}
        for start in range(0, len(hashes), 500):
            rows = conn.execute(
                sa.select(t.c.key_hash, t.c.remote_time, t.c.remote_digest, t.c.local_time)
                .where(t.c.link == self.link, t.c.table_name == str(table))
                .where(t.c.key_hash.in_(hashes[start : start + 500]))
            )
            for k, rt, rd, lt in rows:
                out[str(k)] = (rt, rd, lt)
        return out


def _clock_key(schema: str | None) -> str:
    return f"{schema}.cdc_sync_row_clock" if schema else "cdc_sync_row_clock"


class CurrentTimes:
    """Finds the commit time of the target's current row for conflicting keys."""

    def __init__(self, clock: Clock, origin: str, local_side: str) -> None:
        self.clock, self.origin, self.local_side = clock, origin, local_side

    def of(
        self,
        conn: sa.Connection,
        target: TableId,
        schema: TableSchema,
        rows: Mapping[str, Row],
    ) -> dict[str, datetime | None]:
        """key hash → time of the current row (None: unknown, i.e. older than any change)."""
        if not rows:
            return {}
        if conn.dialect.name == "postgresql":
            return self._pg(conn, target, schema, rows)
        return self._mysql(conn, target, schema, rows)

    def _pg(
        self, conn: sa.Connection, target: TableId, schema: TableSchema, rows: Mapping[str, Row]
    ) -> dict[str, datetime | None]:
        raw = conn.connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        keys = [schema.columns[i].name for i in schema.key_indexes]
        cols = ", ".join(f't."{k}"' for k in keys)
        one = "(" + ", ".join(["%s"] * len(keys)) + ")"
        values = [row[i] for row in rows.values() for i in schema.key_indexes]
        try:
            found = raw.execute(
                f"SELECT {cols}, c.timestamp, c.roident = pg_replication_origin_oid(%s) "
                f'FROM "{target.schema}"."{target.name}" t, '
                "LATERAL pg_xact_commit_timestamp_origin(t.xmin) c "
                f"WHERE ({cols}) IN ({', '.join([one] * len(rows))})",
                (self.origin, *values),
            ).fetchall()
        except psycopg.errors.ObjectNotInPrerequisiteState as e:
            raise PermanentError(
                f"last_write_wins on {target} needs commit timestamps on this PostgreSQL "
                "server; fix: ALTER SYSTEM SET track_commit_timestamp = on; then restart it"
            ) from e
        wanted = set(rows)
        times: dict[str, datetime | None] = {}
        ours: list[str] = []
        for r in found:
            h = key_hash(r[: len(keys)])
            if h not in wanted:
                continue
            ts, mine = r[len(keys)], r[len(keys) + 1]
            times[h] = ts
            if mine:
                ours.append(h)
        if ours:
            clock = self.clock.read(conn, target, ours)
            for h in ours:
                remote = clock.get(h, (None, None, None))[0]
                times[h] = remote if remote is not None else times[h]
        return times

    def _mysql(
        self, conn: sa.Connection, target: TableId, schema: TableSchema, rows: Mapping[str, Row]
    ) -> dict[str, datetime | None]:
        clock = self.clock.read(conn, target, list(rows))
        times: dict[str, datetime | None] = {}
        local: list[str] = []
        for h, row in rows.items():
            rt, rd, _ = clock.get(h, (None, None, None))
            if rd is not None and rd == row_digest(schema, row):
                times[h] = rt  # the version the link wrote
            else:
                local.append(h)
        if local:
            self._wait_for_stamps(conn)
            # On a connection of its own: the open transaction's REPEATABLE READ view was
            # taken before the capture's latest stamps were committed.
            with conn.engine.connect() as other:
                stamps = self.clock.read(other, target, local)
            for h in local:
                times[h] = stamps.get(h, (None, None, None))[2]
        return times

    def _wait_for_stamps(self, conn: sa.Connection) -> None:
        """Until the capture of this side has stamped every change committed so far."""
        row = conn.exec_driver_sql("SHOW MASTER STATUS").first()
        if row is None:
            raise PermanentError("last_write_wins needs the binary log on this side")
        head = BinlogPosition(str(row[0]), int(row[1]))
        deadline = time.monotonic() + _WAIT_SECONDS
        while True:
            seen = _seen_outside(conn, self.clock, self.local_side)
            if seen is not None and isinstance(seen, BinlogPosition) and seen >= head:
                return
            if time.monotonic() > deadline:
                raise TransientError(
                    f"last_write_wins: waiting for the capture of {self.local_side} to read "
                    f"past {head.to_text()} (read: {seen.to_text() if seen else 'nothing'}); "
                    "is the link's other direction running?"
                )
            time.sleep(0.05)


def _seen_outside(conn: sa.Connection, clock: Clock, side: str) -> Position | None:
    """The stamp position as committed by the other pipeline: read on a fresh snapshot (the
    open transaction's REPEATABLE READ view would never see it move)."""
    with conn.engine.connect() as other:
        return clock.seen(other, side)
