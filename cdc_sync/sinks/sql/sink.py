"""SqlSink: apply ordered change records to a SQL target inside the caller's transaction."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from itertools import groupby
from typing import Any

import psycopg
import pymysql
import sqlalchemy as sa

from cdc_sync.errors import CdcSyncError, PermanentError, RowLevelError
from cdc_sync.records import ChangeRecord, CopyText, TableId, TableSchema
from cdc_sync.sinks.sql import pg_copytext
from cdc_sync.sinks.sql.backfill import BackfillOf
from cdc_sync.sinks.sql.ddl import TableMaker
from cdc_sync.sinks.sql.errors import TargetRowError, classify_db_error, pg_too_long_limit
from cdc_sync.sinks.sql.mysql import MySqlWriter
from cdc_sync.sinks.sql.mysql_ddl import MySqlTableMaker
from cdc_sync.sinks.sql.plan import Group, Kind, Ledger, plan
from cdc_sync.sinks.sql.postgres import PostgresWriter, register_adapters
from cdc_sync.sinks.sql.types import MYSQL_DIALECTS, mapper_for
from cdc_sync.state.driver import psycopg_connection

_PIPELINED = (Kind.UPSERT, Kind.DELETE)  # no per-statement result to look at


def _target_of(run: Sequence[Group], err: psycopg.Error) -> str:
    """The table(s) a failed statement of a pipelined run may have written to: the one the
    server names, else every table of the run (the failure surfaces at the run's end)."""
    name = getattr(err.diag, "table_name", None)
    tables = sorted({str(g.target) for g in run if name is None or g.target.name == name})
    return ", ".join(tables or sorted({str(g.target) for g in run}))


def _nul_column(run: Sequence[Group]) -> TargetRowError | None:
    """PostgreSQL text cannot hold NUL; psycopg refuses such a value client-side without
    saying where. Found again here, off the hot path, to name table, column and type."""
    for g in run:
        for row in g.rows.values():
            for col, v in zip(g.schema.columns, row, strict=False):
                if (isinstance(v, str) and "\x00" in v) or (
                    isinstance(v, list) and any(isinstance(x, str) and "\x00" in x for x in v)
                ):
                    return TargetRowError(
                        f"target table {g.target}: column {col.name!r} "
                        f"({col.type.source_name or col.type.kind.value}): text containing "
                        "NUL (\\x00) cannot be stored in PostgreSQL; the row is stopped",
                        code="22021",  # what the server says for it (character_not_in_repertoire)
                        reason="text containing NUL (\\x00) cannot be stored in PostgreSQL",
                        column=col.name,
                    )
    return None


def _too_long_column(run: Sequence[Group], err: psycopg.Error) -> str | None:
    """The column of a PG 22001 refusal, which the server does not name: the text column
    holding a value longer than the limit its message gives (the target's type, which a DBA
    may have narrowed below the source's). None unless exactly one column qualifies."""
    if err.sqlstate != "22001":
        return None
    limit = pg_too_long_limit(err)
    if limit is None:
        return None
    found: set[str] = set()
    for g in run:
        if g.kind is Kind.DELETE:  # its rows are keys only
            continue
        for row in g.rows.values():
            for col, v in zip(g.schema.columns, row, strict=False):
                # Excess spaces are cut silently by PostgreSQL, never refused.
                if isinstance(v, str) and len(v) > limit and len(v.rstrip(" ")) > limit:
                    found.add(col.name)
    return found.pop() if len(found) == 1 else None


def _savepoint(conn: sa.Connection, sql: str) -> None:
    """Savepoint statements on the driver connection, inside the runtime's transaction."""
    if not conn.in_transaction():
        conn.begin()
    raw = conn.connection.driver_connection
    try:
        if isinstance(raw, psycopg.Connection):
            raw.execute(sql)
        else:
            with raw.cursor() as cur:  # type: ignore[union-attr]
                cur.execute(sql)
    except (psycopg.Error, pymysql.MySQLError) as e:
        raise classify_db_error(e) from None


def is_mysql(conn: sa.Connection) -> bool:
    return conn.dialect.name in MYSQL_DIALECTS


class SqlSink:
    """Applies records in order, idempotently (re-applying a batch gives the same content).

    The sink never commits or rolls back: the runtime owns the target transaction and commits
    rows, checkpoint and audit together (invariant 1). Every method takes the runtime's
    ``sqlalchemy.Connection``; the hot path runs on the driver connection underneath it
    (psycopg or PyMySQL), in the same transaction, because multi-row statements built here
    are several times faster than SQLAlchemy's executemany with per-value type processing.

    On MySQL / MariaDB, DDL commits the open transaction implicitly, so ``ensure_table`` runs
    DDL only when the connection has no transaction open (else UncommittedWorkError); the
    runtime asks ``ddl_would_commit`` first and commits at a clean point (see pipeline).
    """

    def __init__(self, create_tables: bool = True, apply_truncate: bool = True) -> None:
        self.create_tables = create_tables
        self.apply_truncate = apply_truncate
        self._writer = PostgresWriter()
        self._my_writer = MySqlWriter()
        self._adapted: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()
        # Key swaps seen by earlier plans of the open target transaction (see plan.Ledger),
        # and that transaction: its knowledge is void once the transaction has ended.
        self._ledger = Ledger()
        self._ledger_tx: weakref.ref[sa.RootTransaction] | None = None

    def ensure_table(
        self,
        conn: sa.Connection,
        schema: TableSchema,
        target: TableId,
        backfill: BackfillOf | None = None,
        *,
        relax: frozenset[str] = frozenset(),
    ) -> None:
        """Create ``target`` like the source table (columns, types, NOT NULL, primary key =
        ``schema.key``), or add the source columns it lacks. A type that cannot be reconciled,
        a missing key index, or a missing table with ``create_tables`` off is a
        PermanentError naming table and column. ``backfill(column)``: the value the rows
        already there get in an added column (None: unknown, they get NULL and a WARNING).
        ``relax``: columns whose NOT NULL the source just dropped; the target's goes too."""
        try:
            if is_mysql(conn):
                MySqlTableMaker(self.create_tables).ensure(
                    conn, schema, target, backfill, relax=relax
                )
            else:
                TableMaker(mapper_for(conn.dialect.name), self.create_tables).ensure(
                    conn, schema, target, backfill, relax=relax
                )
        except CdcSyncError:
            raise
        except (sa.exc.DBAPIError, psycopg.Error, pymysql.MySQLError) as e:
            raise classify_db_error(e, target) from None

    def table_problem(
        self, conn: sa.Connection, schema: TableSchema, target: TableId
    ) -> str | None:
        """What ``ensure_table`` would refuse (a type, key or collation conflict), leaving
        the target as it is: MySQL only plans; on PostgreSQL it runs in a transaction rolled
        back after (DDL is transactional), with a short lock_timeout so that a check never
        queues behind a busy table."""
        try:
            if is_mysql(conn):
                MySqlTableMaker(self.create_tables).plan(conn, schema, target)
                return None
            with conn.begin_nested() as tx:
                conn.exec_driver_sql("SET LOCAL lock_timeout = '2s'")
                try:
                    self.ensure_table(conn, schema, target)
                finally:
                    tx.rollback()
        except CdcSyncError as e:
            return str(e)
        except (sa.exc.DBAPIError, psycopg.Error, pymysql.MySQLError) as e:
            return str(classify_db_error(e, target))
        return None

    def ddl_would_commit(
        self,
        conn: sa.Connection,
        schema: TableSchema,
        target: TableId,
        *,
        relax: frozenset[str] = frozenset(),
    ) -> bool:
        """True when ``ensure_table`` must run DDL that would commit the open transaction:
        MySQL / MariaDB only (PostgreSQL DDL is transactional). Reads, never writes."""
        if not is_mysql(conn):
            return False
        try:
            return bool(MySqlTableMaker(self.create_tables).plan(conn, schema, target, relax))
        except CdcSyncError:
            raise
        except (sa.exc.DBAPIError, pymysql.MySQLError) as e:
            raise classify_db_error(e, target) from None

    def apply(self, conn: sa.Connection, items: Sequence[tuple[ChangeRecord, TableId]]) -> None:
        """Apply ``(record, target table)`` pairs in order; consecutive records of one kind on
        one table go out as one multi-row statement."""
        if not items:
            return
        mysql = is_mysql(conn)
        raw = None if mysql else self._driver(conn)  # first: it begins the transaction
        # Statements on the driver connection bypass SQLAlchemy's autobegin; without this
        # the runtime's conn.commit() would see no transaction and do nothing.
        if mysql and not conn.in_transaction():
            conn.begin()
        ledger = self._ledger_of(conn)
        groups = [
            g for g in plan(items, ledger) if g.kind is not Kind.TRUNCATE or self.apply_truncate
        ]
        if raw is None:
            self._apply_mysql(conn, groups)
            ledger.commit()
            return
        with raw.cursor() as cur:
            # Runs of upserts and deletes go out in pipeline mode: the server executes one
            # chunk while the next is being encoded here, instead of in turn. Other groups
            # look at their statement's row count, so they go one by one.
            # COPY groups go on their own: COPY cannot run in pipeline mode.
            writer = self._writer
            pipelined_kind = lambda g: g.kind in _PIPELINED and not writer.copyable(g)  # noqa: E731
            for pipelined, members in groupby(groups, key=pipelined_kind):
                run = list(members)
                group = run[0]
                try:
                    with raw.pipeline() if pipelined else nullcontext():
                        for group in run:
                            self._writer.execute(cur, group)
                except psycopg.Error as e:
                    # NUL: refused by psycopg (no SQLSTATE) or by the server (22021).
                    if e.sqlstate in (None, "22021") and (nul := _nul_column(run)) is not None:
                        raise nul from None
                    # A pipelined statement fails at the end of the run: find its table.
                    target = _target_of(run, e) if pipelined else str(group.target)
                    # from None: the driver's exception text carries DETAIL (row values).
                    raise classify_db_error(e, target, _too_long_column(run, e)) from None
        # Only now: a refused batch is rolled back (to a savepoint), its plan never happened.
        ledger.commit()

    def _ledger_of(self, conn: sa.Connection) -> Ledger:
        """The ledger of ``conn``'s open transaction; a new one for a new transaction (a
        commit or a rollback ends what the last one knew)."""
        tx = conn.get_transaction()
        known = self._ledger_tx
        if tx is None or known is None or known() is not tx:
            self._ledger = Ledger()
            self._ledger_tx = None if tx is None else weakref.ref(tx)
        return self._ledger

    def takes_copy_text(
        self,
        conn: sa.Connection,
        target: TableId,
        schema: TableSchema,
        after: tuple[object, ...] | None,
    ) -> bool:
        """Whether snapshot chunks of ``target`` after key ``after`` can be loaded as COPY
        text (:meth:`load_copy_text`): a PostgreSQL target without rows there yet."""
        if conn.dialect.name != "postgresql":
            return False
        raw = self._driver(conn)
        try:
            with raw.cursor() as cur:
                return pg_copytext.ready(cur, self._writer.types, target, schema, after)
        except psycopg.Error as e:
            raise classify_db_error(e, target) from None

    def load_copy_text(self, conn: sa.Connection, target: TableId, chunk: CopyText) -> None:
        """Insert a snapshot chunk's rows as they are (see ``pg_copytext.load``)."""
        raw = self._driver(conn)
        try:
            with raw.cursor() as cur:
                pg_copytext.load(cur, target, chunk)
        except psycopg.Error as e:
            raise classify_db_error(e, target) from None
        self._writer.copied_rows += chunk.rows

    def apply_or_reject(
        self,
        conn: sa.Connection,
        items: Sequence[tuple[ChangeRecord, TableId]],
        reject: Callable[[int, RowLevelError], None],
    ) -> None:
        """Like :meth:`apply`, but a row the target refuses does not fail the batch: it is
        reported as ``reject(index in items, error)`` and every other row is applied.

        The batch runs under a savepoint; only when a row-level error comes back is it rolled
        back to it and re-run row by row, each row under a savepoint of its own. The happy
        path costs two statements per call; refused rows cost a round trip each."""
        if not items:
            return
        _savepoint(conn, "SAVEPOINT cdc_sync_batch")
        try:
            self.apply(conn, items)
        except RowLevelError:
            _savepoint(conn, "ROLLBACK TO SAVEPOINT cdc_sync_batch")
        else:
            _savepoint(conn, "RELEASE SAVEPOINT cdc_sync_batch")
            return
        for i, item in enumerate(items):
            refused = self._try(conn, item)
            if refused is None:
                continue
            reject(i, refused)
            rec, target = item
            if rec.key_changed():
                # The new row is refused, but the old key is gone at the source: it must not
                # stay (a second copy of the row once the letter is retried). A refusal of
                # this delete is let go: the change is a dead letter already.
                self._try(conn, (rec.old_row_gone(), target))
        _savepoint(conn, "RELEASE SAVEPOINT cdc_sync_batch")

    def _try(self, conn: sa.Connection, item: tuple[ChangeRecord, TableId]) -> RowLevelError | None:
        """Apply one change under a savepoint of its own; its refusal, rolled back."""
        _savepoint(conn, "SAVEPOINT cdc_sync_row")
        try:
            self.apply(conn, [item])
        except RowLevelError as e:
            _savepoint(conn, "ROLLBACK TO SAVEPOINT cdc_sync_row")
            return e
        _savepoint(conn, "RELEASE SAVEPOINT cdc_sync_row")
        return None

    def _apply_mysql(self, conn: sa.Connection, groups: Sequence[Group]) -> None:
        raw = conn.connection.driver_connection
        if not isinstance(raw, pymysql.connections.Connection):
            raise PermanentError("the SQL sink needs the PyMySQL driver (mysql+pymysql://)")
        with raw.cursor() as cur:
            for group in groups:
                self._my_writer.execute(cur, group)

    def _driver(self, conn: sa.Connection) -> psycopg.Connection[Any]:
        if conn.dialect.name != "postgresql":
            raise PermanentError(f"target dialect {conn.dialect.name!r} is not supported yet")
        raw = psycopg_connection(conn)  # joins the runtime's transaction
        if raw is None:
            raise PermanentError("the SQL sink needs the psycopg driver (postgresql+psycopg://)")
        if raw not in self._adapted:
            register_adapters(raw)
            self._adapted.add(raw)
        return raw
