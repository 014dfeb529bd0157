"""MysqlCapture: the Source protocol over a MySQL / MariaDB binlog stream."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from typing import Any

import pymysql

from cdc_sync.config.dsn import MysqlDsn
from cdc_sync.errors import CdcSyncError, PermanentError
from cdc_sync.records import (
    Backfill,
    BinlogPosition,
    Column,
    Position,
    Row,
    SourceEvent,
    TableId,
    TableSchema,
)
from cdc_sync.sources.base import SourceHealth
from cdc_sync.sources.mysql import admin, catalog, fetch, health, snapshot, xa
from cdc_sync.sources.mysql.backfill import backfill as my_backfill
from cdc_sync.sources.mysql.cascades import cascades
from cdc_sync.sources.mysql.conn import connect as connect_mysql
from cdc_sync.sources.mysql.ddl_watch import DdlWatch
from cdc_sync.sources.mysql.decoder import BinlogDecoder
from cdc_sync.sources.mysql.errors import RESNAPSHOT_HINT, classify
from cdc_sync.sources.mysql.gtids import GtidState, MariaGtidState, MysqlGtidState
from cdc_sync.sources.mysql.stream import open_reader
from cdc_sync.sources.mysql.wire import BinlogWire
from cdc_sync.sources.mysql.xa_lookback import read_prepared

_MODES = ("auto", "gtid", "file")


def _as_binlog(position: Position | None, what: str) -> BinlogPosition | None:
    if position is None or isinstance(position, BinlogPosition):
        return position
    raise PermanentError(f"{what} is a {type(position).__name__}, a MySQL source needs mysql:")


class MysqlCapture:
    """Capture configured tables of one MySQL / MariaDB server from its binlog.

    Nothing is created on the server but the ``signal_table`` (DBLog watermarks, created by
    ``prepare(create=True)`` when missing), which is streamed like a configured table and
    left out of the schemas ``prepare`` / ``table_schemas`` return. The checkpoint in the
    target is the only state.

    Two-way sync: ``marker_table`` is the origin marker table another pipeline's OriginTag
    writes into this server (``<state schema>.cdc_sync_origin``, created by that pipeline,
    possibly after this stream started). Its rows are read, never emitted; a transaction
    whose marker names an origin in ``skip_origins`` is passed on without its rows.
    """

    def __init__(
        self,
        dsn: MysqlDsn,
        server_id: int,
        tables: Sequence[TableId],
        *,
        position_mode: str = "auto",
        heartbeat_seconds: float = 1.0,
        signal_table: TableId | None = None,
        skip_origins: frozenset[str] = frozenset(),
        marker_table: TableId | None = None,
        cascades_accepted: frozenset[TableId] = frozenset(),
    ) -> None:
        self._dsn, self._server_id, self._tables = dsn, server_id, list(dict.fromkeys(tables))
        self._mode, self._heartbeat = position_mode, heartbeat_seconds
        if position_mode not in _MODES:
            raise PermanentError(f"position_mode must be one of {_MODES}, not {position_mode!r}")
        if not self._tables:
            raise PermanentError("a MySQL source needs at least one table")
        if signal_table in self._tables:
            raise PermanentError(f"the signal table {signal_table} is also a configured table")
        self._signal = signal_table
        # What the stream reads: the configured tables and the signal table.
        self._captured = [*self._tables, signal_table] if signal_table else self._tables
        if skip_origins and marker_table is None:
            raise PermanentError("skip_origins needs the origin marker table (marker_table)")
        if marker_table is not None and marker_table in self._captured:
            raise PermanentError(f"the origin marker table {marker_table} is also captured")
        self._marker, self._skip_origins = marker_table, frozenset(skip_origins)
        # Tables whose foreign keys may cascade unlogged (`fk_cascades: accept`).
        self._accepted = cascades_accepted
        self._conn: Any = None
        self._reader: Any = None
        self._info: catalog.ServerInfo | None = None
        self._schemas: dict[TableId, TableSchema] = {}

    # -- catalog connection ------------------------------------------------------------------

    def _catalog(self) -> Any:
        if self._conn is None or not self._conn.open:
            try:
                self._conn = connect_mysql(
                    **{"connect_timeout": 10, "read_timeout": 60, **self._dsn.connect_args()},
                    charset="utf8mb4",
                    autocommit=True,
                    program_name="cdc-sync",
                )
            except pymysql.err.MySQLError as e:
                raise classify(e, "cannot connect to the source server") from e
        return self._conn

    def _server(self) -> catalog.ServerInfo:
        if self._info is None:
            try:
                self._info = catalog.server_info(self._catalog())
            except pymysql.err.MySQLError as e:
                raise classify(e, "cannot read the source server's version") from e
        return self._info

    def _by_gtid(self) -> bool:
        info = self._server()
        if self._mode == "gtid" and not info.gtid_on:
            raise PermanentError(
                "position_mode is 'gtid' but the source has gtid_mode OFF; set gtid_mode = ON "
                "and enforce_gtid_consistency = ON, or use position_mode 'file'"
            )
        return self._mode != "file" and info.gtid_on

    def _new_state(self, text: str) -> GtidState:
        return MariaGtidState(text) if self._server().mariadb else MysqlGtidState(text)

    # -- Source protocol -----------------------------------------------------------------------

    def problems(self) -> list[str]:
        try:
            conn = self._catalog()
            info = self._server()
            tables = self._tables
            # A missing signal table is created by prepare (create is always allowed here).
            if self._signal is not None and admin.table_exists(conn, self._signal):
                tables = self._captured
            out = admin.problems(conn, info, self._server_id, self._mode, tables)
            # A table without SELECT is hidden from information_schema too: its GRANT is the
            # problem to report, not a "does not exist".
            hidden = set(admin.unreadable(conn, tables))
            readable = [t for t in tables if t not in hidden]
            _, errors = catalog.read_schemas(conn, readable, info.mariadb)
            out += self._cascade_problems(conn, [t for t in readable if t in self._tables])
        except pymysql.err.MySQLError as e:
            raise classify(e, "cannot check the source server") from e
        return out + [str(e) for e in errors]

    def _cascade_problems(self, conn: Any, tables: Sequence[TableId]) -> list[str]:
        return [c.problem() for c in cascades(conn, tables) if c.table not in self._accepted]

    def prepare(self, create: bool) -> Mapping[TableId, TableSchema]:
        """Validate the configured tables; ``create``: create the signal table if missing."""
        try:
            conn = self._catalog()
            info = self._server()
            unready = admin.settings_problems(conn, info, self._server_id, self._mode)
            tables = self._tables
            if self._signal is not None:
                if create:
                    admin.create_signal_table(conn, self._signal)  # IF NOT EXISTS
                if create or admin.table_exists(conn, self._signal):
                    tables = self._captured
                else:
                    unready += _signal_missing(self._signal)
            schemas, errors = catalog.read_schemas(conn, tables, info.mariadb)
            unready += admin.filter_problems(conn, tables)
            unready += self._cascade_problems(conn, self._tables)
        except pymysql.err.MySQLError as e:
            raise classify(e, "cannot read the source tables") from e
        if unready:
            # Rows read under these settings would be incomplete or undecodable: never start.
            raise PermanentError(
                "the MySQL source is not ready:\n" + "\n".join(f"  - {p}" for p in unready)
            )
        if len(errors) == 1:
            raise errors[0]  # keeps its type (NoKeyError, UnsupportedTypeError…)
        if errors:
            raise PermanentError(
                "the MySQL source is not ready:\n" + "\n".join(f"  - {e}" for e in errors)
            )
        self._schemas = schemas
        # Callers compile rules for what we return: the signal table is not theirs.
        return {t: s for t, s in schemas.items() if t != self._signal}

    def tables_unstreamed(self) -> frozenset[TableId]:
        # The binlog holds every table's changes whatever the config said when they were
        # written: a newly configured table's changes since the checkpoint are all there.
        return frozenset()

    def backfill(self, table: TableId, column: Column) -> Backfill | None:
        if not self._server().mariadb:
            return None  # MySQL 8 spells string defaults unquoted: not told from expressions
        try:
            return my_backfill(self._catalog(), table, column)
        except pymysql.MySQLError as e:
            raise classify(e, "cannot read the source catalog") from e

    def table_schemas(self) -> Mapping[TableId, TableSchema]:
        """The configured tables' schemas from information_schema, without the settings checks."""
        try:
            conn = self._catalog()
            schemas, errors = catalog.read_schemas(conn, self._tables, self._server().mariadb)
        except pymysql.err.MySQLError as e:
            raise classify(e, "cannot read the source tables") from e
        if len(errors) == 1:
            raise errors[0]  # keeps its type, as in prepare()
        if errors:
            raise PermanentError(
                "the MySQL source is not ready:\n" + "\n".join(f"  - {e}" for e in errors)
            )
        return dict(schemas)

    def fetch_rows(
        self, table: TableId, schema: TableSchema, keys: Sequence[tuple[object, ...]]
    ) -> list[Row | None]:
        """The current committed row per key (None: no such row), decoded as the binlog is."""
        if not keys:
            return []
        mariadb = self._server().mariadb
        return fetch.fetch_rows(self._catalog(), table, schema, keys, mariadb=mariadb)

    def open_snapshot(self, fresh: bool) -> snapshot.MysqlSnapshot:
        """A consistent read view on a connection of its own; ``fresh``: ``position`` is the
        binlog position it matches, in ``head()``'s form, for ``stream()`` to resume after."""
        by_gtid = self._by_gtid() if fresh else False
        return snapshot.open_session(self._dsn, self._server(), fresh=fresh, by_gtid=by_gtid)

    def read_chunk(
        self,
        table: TableId,
        schema: TableSchema,
        after: tuple[object, ...] | None,
        limit: int,
        where: str | None = None,
    ) -> list[Row]:
        """A chunk of the current committed rows (a short transaction on the catalog
        connection; the binlog connection is never touched)."""
        mariadb = self._server().mariadb
        return snapshot.read_committed_chunk(
            self._catalog(), table, schema, after, limit, where=where, mariadb=mariadb
        )

    def last_chunk_sees(self, xid: str) -> bool:
        """Always True: with ordered commits (binlog_order_commits, the default) InnoDB makes
        a transaction visible before any later one in the binlog commits, so everything
        logged before the low watermark is in the chunk."""
        del xid
        return True

    def write_signal(self, pipeline: str, value: str) -> None:
        if self._signal is None:
            raise PermanentError("no signal table is configured for this pipeline")
        try:
            admin.write_signal(self._catalog(), self._signal, pipeline, value)
        except pymysql.err.MySQLError as e:
            raise classify(e, f"cannot write the watermark into {self._signal}") from e

    def head(self) -> BinlogPosition:
        try:
            return admin.head(self._catalog(), self._server(), self._by_gtid())
        except pymysql.err.MySQLError as e:
            raise classify(e, "cannot read the source's binlog position") from e

    def start_position(self) -> BinlogPosition:
        """Where a new pipeline starts: the current head (stored as its first checkpoint)."""
        return self.head()

    def checkpoint_problems(self, position: Position) -> list[str]:
        """Why ``position`` cannot be resumed from on this server (empty: it can)."""
        pos = _as_binlog(position, "the checkpoint")
        assert pos is not None
        try:
            found = admin.checkpoint_problems(self._catalog(), self._server(), pos, self._by_gtid())
            return [f"{p}; {RESNAPSHOT_HINT}" for p in found]
        except pymysql.err.MySQLError as e:
            raise classify(e, "cannot list the source's binlogs") from e

    def boundary_problem(self, position: BinlogPosition) -> str | None:
        """Why ``position`` is not where a transaction starts (None: it is); see admin."""
        try:
            return admin.boundary_problem(self._catalog(), position)
        except pymysql.err.MySQLError as e:
            raise classify(e, "cannot read the source's binlog events") from e

    def _json_columns(self, table: TableId) -> set[str]:
        if not self._server().mariadb:
            return set()
        try:
            return catalog.json_columns(self._catalog(), table)
        except pymysql.err.MySQLError as e:
            raise classify(e, f"cannot read the JSON columns of {table}") from e

    def _tinyint1_columns(self, table: TableId) -> set[str]:
        try:
            return catalog.tinyint1_columns(self._catalog(), table)
        except pymysql.err.MySQLError as e:
            raise classify(e, f"cannot read the column types of {table}") from e

    def stream(self, resume_after: Position | None) -> Iterator[SourceEvent]:
        resume = _as_binlog(resume_after, "the checkpoint")
        if not self._schemas:
            self.prepare(create=False)
        by_gtid = track = self._by_gtid()
        if resume is None:
            start = self.head()
        else:
            problems = self.checkpoint_problems(resume)
            if problems:
                raise PermanentError(f"cannot resume from {resume}: {'; '.join(problems)}")
            start = resume
            if by_gtid and not resume.gtid:
                start, known = self._gtid_at(resume)
                # An empty state (MariaDB, before any transaction) cannot be resumed from by
                # GTID, so the reader goes by file:pos; the state is still tracked from there,
                # so that later checkpoints carry GTIDs (and `reset --to <GTID>` finds them).
                by_gtid = bool(start.gtid)
                track = known
        state = self._new_state(start.gtid) if track else None
        skip_to = start if resume is not None else None
        decoder = BinlogDecoder(
            self._captured, start, state, skip_to, self._json_columns,
            marker=self._marker, skip_origins=self._skip_origins,
            tinyint1_columns=self._tinyint1_columns,
        )  # fmt: skip
        decoder.known_schemas(self._schemas)
        decoder.on_ddl = DdlWatch(self._catalog, self._accepted)
        self.close_stream()
        # The marker table's events pass the library's table filter too (never emitted).
        read = [*self._captured, self._marker] if self._marker else self._captured
        # An XA COMMIT whose PREPARE lies before `start`: that group is read again.
        side = partial(open_reader, self._dsn, server_id=xa.side_server_id(self._server_id),
                       tables=read, heartbeat_seconds=self._heartbeat, by_gtid=False,
                       mariadb=self._server().mariadb)  # fmt: skip
        decoder.on_prepared_missing = partial(read_prepared, self._catalog, decoder, side)
        reader = self._reader = open_reader(
            self._dsn, server_id=self._server_id, tables=read,
            heartbeat_seconds=self._heartbeat, start=start, by_gtid=by_gtid,
            mariadb=self._server().mariadb,
        )  # fmt: skip
        try:
            try:
                # The library connects, registers, sends the dump command and parses the
                # first event (the fake ROTATE); then the wire layer reads the packets.
                first = reader.fetchone()
                if first is None:
                    raise classify(ConnectionError(), "binlog stream ended by the server")
                yield from decoder.feed(first, reader.log_file)
                yield from BinlogWire(reader, decoder).events()
            except CdcSyncError:
                raise
            except (pymysql.err.MySQLError, OSError) as e:
                raise classify(e, "binlog stream failed") from e
        finally:
            # An abandoned or failed iteration must not leave a binlog dump thread open.
            if self._reader is reader:
                self._reader = None
            reader.close()

    def _gtid_at(self, pos: BinlogPosition) -> tuple[BinlogPosition, bool]:
        """A file:pos checkpoint in a GTID mode: MariaDB knows the GTID state at a position
        (possibly empty); the flag says whether it was known (NULL: not a position it has)."""
        if not self._server().mariadb:
            return pos, False
        try:
            rows = catalog.query(
                self._catalog(), "SELECT BINLOG_GTID_POS(%s, %s)", (pos.file, pos.pos)
            )
        except pymysql.err.MySQLError as e:
            raise classify(e, "cannot map the checkpoint to a GTID state") from e
        if not rows or rows[0][0] is None:
            return pos, False
        return BinlogPosition(pos.file, pos.pos, str(rows[0][0])), True

    def health(self) -> SourceHealth:
        try:
            return health.read_health(self._catalog())
        except pymysql.err.MySQLError as e:
            raise classify(e, "cannot read the source's binlog retention") from e

    def identity(self) -> str:
        try:
            return health.identity(self._catalog(), self._server())
        except pymysql.err.MySQLError as e:
            raise classify(e, "cannot read the source server's identity") from e

    def instance(self) -> str:
        try:
            return health.instance(self._catalog())
        except pymysql.err.MySQLError as e:
            raise classify(e, "cannot read the source server's identity") from e

    def ack(self, position: Position) -> None:
        """Nothing to tell a MySQL server: the checkpoint in the target is the truth."""

    def close_stream(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def close(self) -> None:
        self.close_stream()
        conn, self._conn = self._conn, None
        if conn is not None and conn.open:
            conn.close()


def _signal_missing(table: TableId) -> list[str]:
    return [f"signal table {table} does not exist and creating it is not allowed; "
            f"fix: {admin.signal_table_sql(table)}"]  # fmt: skip
