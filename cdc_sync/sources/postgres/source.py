"""PostgresSource: the Source protocol over pgoutput logical replication."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Mapping, Sequence

import psycopg

from cdc_sync.errors import PermanentError, PrerequisiteError, TransientError
from cdc_sync.records import (
    Backfill,
    Column,
    Heartbeat,
    Idle,
    PgLsn,
    Position,
    Row,
    SourceEvent,
    TableId,
    TableSchema,
)
from cdc_sync.sources.base import SourceHealth
from cdc_sync.sources.postgres import admin, fetch, health, pubopts, relnames, snapshot
from cdc_sync.sources.postgres.backfill import backfill as pg_backfill
from cdc_sync.sources.postgres.catalog import lookup_type, read_schemas, warn_generated
from cdc_sync.sources.postgres.decoder import PgOutputDecoder
from cdc_sync.sources.postgres.liveness import WatchedConnection
from cdc_sync.sources.postgres.stream import (
    DRAINED,
    KEEPALIVE,
    XLOG,
    ReplicationStream,
    classify,
)
from cdc_sync.sources.postgres.types import PgType, TypeResolver
from cdc_sync.sources.postgres.xids import XidSnapshot

_IDLE = Idle()
_DRAINED = Idle(drained=True)
# How often the stream checks that every configured table is still published: rows
# written to a table created again in the meantime are copied at the restart that follows.
PUBLICATION_CHECK_SECONDS = 5.0


def _as_lsn(position: Position | None, what: str) -> PgLsn | None:
    if position is None or isinstance(position, PgLsn):
        return position
    raise PermanentError(f"{what} is a {type(position).__name__}, a PostgreSQL source needs pg:")


class PostgresSource:
    """Capture from one PostgreSQL database through a pgoutput slot and publication.

    ``may_create`` only affects ``problems()``: whether a missing slot / publication /
    signal table counts as a problem (``prepare(create=...)`` decides for itself).
    ``signal_table`` (DBLog watermarks) is published and streamed like a configured table
    but left out of the schemas ``prepare`` / ``table_schemas`` return.
    ``heartbeat_seconds``: between transactions, write a logical message this often (None:
    never) so that the slot can advance while only unpublished tables change.
    """

    def __init__(
        self,
        dsn: str,
        slot: str,
        publication: str,
        tables: Sequence[TableId],
        *,
        poll_interval: float = 0.5,
        status_interval: float = 10.0,
        may_create: bool = True,
        signal_table: TableId | None = None,
        heartbeat_seconds: float | None = None,
        skip_origins: Sequence[str] = (),
    ) -> None:
        self._dsn, self._slot, self._publication = dsn, slot, publication
        self._skip_origins = tuple(skip_origins)
        self._tables = list(dict.fromkeys(tables))
        if not self._tables:
            raise PermanentError("a PostgreSQL source needs at least one table")
        if signal_table in self._tables:
            raise PermanentError(f"the signal table {signal_table} is also a configured table")
        self._signal = signal_table
        self._poll, self._status_interval = poll_interval, status_interval
        self._may_create = may_create
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._stream: ReplicationStream | None = None
        self._resolver = TypeResolver(self._lookup_type)
        self._schemas: dict[TableId, TableSchema] = {}
        self._chunk_view: XidSnapshot | None = None
        self._heartbeat = heartbeat_seconds
        self._next_heartbeat = 0.0
        self._heartbeat_problem: str | None = None
        self._unstreamed: frozenset[TableId] = frozenset()
        self._next_publication_check = 0.0

    # -- the normal (catalog) connection ---------------------------------------------------

    def _catalog(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            try:
                # Watched: a silent peer must not hang the pipeline (see liveness).
                self._conn = WatchedConnection.open(
                    self._dsn, autocommit=True, application_name="cdc-sync"
                )
            except psycopg.Error as e:
                raise classify(e, "cannot connect to the source database") from e
        return self._conn

    def _lookup_type(self, oid: int) -> PgType | None:
        try:
            return lookup_type(self._catalog(), oid)
        except psycopg.Error as e:
            raise classify(e, "cannot read a type from the source catalog") from e

    def _encoding_problem(self, conn: psycopg.Connection[tuple[object, ...]]) -> list[str]:
        # pgoutput sends text in the database encoding, unconverted; we decode UTF-8.
        row = conn.execute("SHOW server_encoding").fetchone()
        enc = str(row[0]) if row else "?"
        if enc.upper() in ("UTF8", "UTF-8"):
            return []
        return [f"source database encoding is {enc}; only UTF8 databases are supported"]

    def _captured(self, conn: psycopg.Connection[tuple[object, ...]]) -> list[TableId]:
        """The tables to publish: the configured ones and the signal table when it exists
        (a missing one is reported on its own by ``admin.signal_problem``)."""
        sig = self._signal
        if sig is None or not admin.table_exists(conn, sig):
            return self._tables
        return [*self._tables, sig]

    def _public(self, schemas: Mapping[TableId, TableSchema]) -> dict[TableId, TableSchema]:
        # Callers compile rules for what we return: the signal table is not theirs.
        return {t: s for t, s in schemas.items() if t != self._signal}

    # -- Source protocol -------------------------------------------------------------------

    def problems(self) -> list[str]:
        try:
            conn = self._catalog()
            captured = self._captured(conn)
            out = admin.problems(conn, self._slot, self._publication, captured, self._may_create)
            if self._signal is not None:
                out += admin.signal_problem(conn, self._signal, self._may_create)
            out += self._encoding_problem(conn)
            _, table_errors = read_schemas(conn, captured, self._resolver)
        except psycopg.Error as e:
            raise classify(e, "cannot check the source database") from e
        return out + [str(e) for e in table_errors]

    def prepare(self, create: bool) -> Mapping[TableId, TableSchema]:
        try:
            conn = self._catalog()
            if create and self._signal is not None:
                admin.create_signal_table(conn, self._signal)  # IF NOT EXISTS
            captured = self._captured(conn)
            schemas, table_errors = read_schemas(conn, captured, self._resolver)
            warn_generated(conn, self._tables)
            problems = [str(e) for e in table_errors]
            problems += admin.problems(conn, self._slot, self._publication, captured, create)
            if self._signal is not None:
                problems += admin.signal_problem(conn, self._signal, create)
            problems += self._encoding_problem(conn)
            if not problems and create:
                # Publication before slot: see admin.ensure_slot.
                narrowed = pubopts.withheld(conn, self._publication, captured)
                added = admin.ensure_publication(conn, self._publication, captured)
                if narrowed is not None:
                    pubopts.realigned(self._publication, narrowed[0])
                self._unstreamed = frozenset(added & set(self._tables))
                admin.ensure_slot(conn, self._slot)
        except psycopg.Error as e:
            raise classify(e, "cannot prepare the source database") from e
        if len(problems) == 1 and table_errors:
            # A single table problem keeps its own type (NoKeyError, UnsupportedTypeError…)
            raise table_errors[0]
        if problems:
            raise PermanentError(
                "the PostgreSQL source is not ready:\n" + "\n".join(f"  - {p}" for p in problems)
            )
        self._schemas = schemas
        return self._public(schemas)

    def tables_unstreamed(self) -> frozenset[TableId]:
        return self._unstreamed

    def backfill(self, table: TableId, column: Column) -> Backfill | None:
        try:
            return pg_backfill(self._catalog(), table, column)
        except psycopg.Error as e:
            raise classify(e, "cannot read the source catalog") from e

    def table_schemas(self) -> Mapping[TableId, TableSchema]:
        """The configured tables' schemas from the catalog; creates no slot or publication."""
        try:
            schemas, table_errors = read_schemas(self._catalog(), self._tables, self._resolver)
        except psycopg.Error as e:
            raise classify(e, "cannot read the source tables") from e
        if len(table_errors) == 1:
            raise table_errors[0]  # keeps its own type, as in prepare()
        if table_errors:
            raise PermanentError(
                "the PostgreSQL source is not ready:\n"
                + "\n".join(f"  - {e}" for e in table_errors)
            )
        return dict(schemas)

    def fetch_rows(
        self, table: TableId, schema: TableSchema, keys: Sequence[tuple[object, ...]]
    ) -> list[Row | None]:
        """The current committed row per key (None: no such row), decoded as the stream does."""
        if not keys:
            return []
        return fetch.fetch_rows(self._catalog(), table, schema, keys)

    def open_snapshot(self, fresh: bool) -> snapshot.PgSnapshot:
        """A read view for copying tables; ``fresh``: (re)create the slot with an exported
        snapshot and read at it, ``position`` being the slot's consistent point.

        Only asked for when no checkpoint exists, so nothing depends on an existing slot; it
        is dropped (it must be inactive) because a slot's snapshot exists only at creation.
        """
        if not fresh:
            return snapshot.open_session(self._dsn, None, drop_slot=False)
        self.close_stream()  # our own walsender must not hold the slot
        try:
            conn = self._catalog()
            # Publication before slot: see admin.ensure_slot.
            admin.ensure_publication(conn, self._publication, self._captured(conn))
            info = admin.slot_info(conn, self._slot)
            problem = admin.slot_problem(conn, self._slot, info) if info else None
        except psycopg.Error as e:
            raise classify(e, "cannot prepare the source database for a snapshot") from e
        if problem:
            raise PrerequisiteError(*problem)  # not ours to drop
        if info is not None and info.active_pid is not None:
            # A previous instance's walsender may still be exiting: heals by itself.
            raise TransientError(
                f"replication slot {self._slot!r} is in use (pid {info.active_pid}); "
                "a fresh snapshot recreates it"
            )
        return snapshot.open_session(self._dsn, self._slot, drop_slot=info is not None)

    def read_chunk(
        self,
        table: TableId,
        schema: TableSchema,
        after: tuple[object, ...] | None,
        limit: int,
        where: str | None = None,
    ) -> list[Row]:
        """A chunk of the current committed rows (a short transaction on the catalog
        connection: the replication connection is never touched)."""
        rows, self._chunk_view = snapshot.read_committed_chunk(
            self._catalog(), table, schema, after, limit, where=where
        )
        return rows

    def last_chunk_sees(self, xid: str) -> bool:
        """Whether the last ``read_chunk`` saw transaction ``xid``. PostgreSQL may show a
        transaction as still running after its commit record is in the WAL (the commit is
        logged, then published to other sessions): such a change can precede the low
        watermark in the stream yet be missing from the chunk."""
        view = self._chunk_view
        return True if view is None else view.sees(xid)

    def write_signal(self, pipeline: str, value: str) -> None:
        if self._signal is None:
            raise PermanentError("no signal table is configured for this pipeline")
        try:
            admin.write_signal(self._catalog(), self._signal, pipeline, value)
        except psycopg.Error as e:
            raise classify(e, f"cannot write the watermark into {self._signal}") from e

    def _relation_names(self) -> relnames.RelationNames:
        try:
            oids = relnames.table_oids(self._catalog(), list(self._schemas))
        except psycopg.Error as e:
            raise classify(e, "cannot read the source catalog") from e

        def name_now(oid: int) -> TableId | None:
            try:
                return relnames.relation_name(self._catalog(), oid)
            except psycopg.Error as e:
                raise classify(e, "cannot read the source catalog") from e

        def nullable_now(oid: int) -> frozenset[str]:
            try:
                return relnames.nullable_columns(self._catalog(), oid)
            except psycopg.Error as e:
                raise classify(e, "cannot read the source catalog") from e

        return relnames.RelationNames(oids, name_now, nullable_now)

    def stream(self, resume_after: Position | None) -> Iterator[SourceEvent]:
        resume = _as_lsn(resume_after, "the checkpoint")
        if not self._schemas:
            self.prepare(create=False)
        start = resume.value if resume else 0
        self._check_slot(resume)
        decoder = PgOutputDecoder(
            self._resolver, list(self._schemas), self._schemas, start, self._skip_origins,
            names=self._relation_names(),
        )  # fmt: skip
        self.close_stream()
        stream = ReplicationStream(
            self._dsn, self._slot, self._publication, self._poll, self._status_interval
        )
        stream.start(start, acked=start)
        self._stream = stream
        decode = decoder.decode
        try:
            for kind, lsn, payload in stream.read():
                if kind == XLOG:
                    yield from decode(payload, lsn)
                elif kind == KEEPALIVE:
                    # Between transactions, everything before wal_end has been sent to us.
                    if not decoder.in_transaction:
                        self._maybe_heartbeat()
                        self._check_publication()
                        yield Heartbeat(PgLsn(lsn))
                elif kind == DRAINED:
                    if not decoder.in_transaction:
                        yield _DRAINED
                else:
                    if not decoder.in_transaction:
                        self._maybe_heartbeat()
                        self._check_publication()
                    yield _IDLE
        finally:
            # An abandoned or failed iteration must not leave a walsender holding the slot.
            if self._stream is stream:
                self._stream = None
            stream.close()

    def _check_publication(self) -> None:
        """Every few seconds, between transactions: a configured table that left the
        publication (dropped, maybe created again, or renamed) sends nothing any more, so
        the pipeline restarts (a transient error): the start adds a re-created table back
        and copies its rows, and stops, naming it, on a table that is gone."""
        now = time.monotonic()
        if now < self._next_publication_check:
            return
        self._next_publication_check = now + PUBLICATION_CHECK_SECONDS
        try:
            gone = admin.unpublished(self._catalog(), self._publication, self._tables)
            narrowed = pubopts.withheld(self._catalog(), self._publication, self._tables)
        except psycopg.Error as e:
            raise classify(e, "cannot read the publication's tables") from e
        if narrowed is not None:
            raise PermanentError(
                f"publication {self._publication!r} was changed while the pipeline streamed: "
                f"it now {narrowed[0]}, so the changes it withheld since then are lost to the "
                f"stream; fix: {narrowed[1]} (or start the daemon again, which does so when it "
                "may change the publication), then run cdc-sync verify --repair"
            )
        if gone:
            names = ", ".join(str(t) for t in gone)
            raise TransientError(
                f"configured table(s) {names} left the publication {self._publication!r} "
                "(dropped and created again, or renamed, at the source): restarting the "
                "pipeline to take them up again"
            )

    def _maybe_heartbeat(self) -> None:
        """Emit the heartbeat message when it is due (only ever between transactions: the
        stream is idle then, and the catalog connection is free)."""
        if self._heartbeat is None or self._heartbeat_problem is not None:
            return
        now = time.monotonic()
        if now < self._next_heartbeat:
            return
        self._next_heartbeat = now + self._heartbeat
        try:
            health.emit_heartbeat(self._catalog())
        except psycopg.Error as e:
            err = classify(e, "cannot write the heartbeat message")
            if isinstance(err, TransientError):
                # The next one reconnects; a missed heartbeat costs nothing. Counted from
                # now: one that hung on a dead server is not retried at once (the stream
                # would notice the dead server only after both).
                self._next_heartbeat = time.monotonic() + self._heartbeat
                return
            # Read-only server, a revoked function…: streaming still works, so keep going
            # and let health() tell the operator that the slot may hold WAL back.
            self._heartbeat_problem = f"heartbeat disabled: {err}"
        except TransientError:  # could not connect: as above
            self._next_heartbeat = time.monotonic() + self._heartbeat

    def checkpoint_problems(self, position: Position) -> list[str]:
        """Why streaming cannot resume after ``position`` (empty: it can): the slot is
        missing, invalidated, or past it. Checked before ``prepare``, which would recreate a
        missing slot."""
        try:
            self._check_slot(_as_lsn(position, "the checkpoint"))
        except PermanentError as e:
            return [str(e)]
        return []

    def _check_slot(self, resume: PgLsn | None) -> None:
        try:
            info = admin.slot_info(self._catalog(), self._slot)
        except psycopg.Error as e:
            raise classify(e, "cannot read the replication slot") from e
        if info is None and resume is not None:
            # Never recreated here: a new slot starts at the current WAL end, skipping
            # everything since the checkpoint.
            raise PermanentError(
                f"replication slot {self._slot!r} does not exist but the pipeline has a "
                f"checkpoint ({resume}); {health.resnapshot_hint()}"
            )
        if info is None:
            raise PermanentError(
                f"replication slot {self._slot!r} does not exist; fix: "
                f"SELECT pg_create_logical_replication_slot('{self._slot}', 'pgoutput');"
            )
        if info.wal_status == "lost":
            raise PermanentError(
                f"replication slot {self._slot!r} was invalidated (wal_status lost: it held "
                f"more WAL than max_slot_wal_keep_size); {health.resnapshot_hint()}"
            )
        if resume is not None and info.confirmed_flush is not None:
            confirmed = PgLsn.from_body(info.confirmed_flush)
            if confirmed > resume:
                # Only durable positions are acked, so this means the checkpoint is older
                # than the slot (target restored or reset): the changes between are gone.
                raise PermanentError(
                    f"replication slot {self._slot!r} has confirmed {confirmed}, past the "
                    f"checkpoint {resume} (was the slot dropped and created again?), so the "
                    f"changes in between are no longer available; {health.resnapshot_hint()}"
                )

    def ack(self, position: Position) -> None:
        lsn = _as_lsn(position, "the acknowledged position")
        if lsn is not None and self._stream is not None:
            self._stream.ack(lsn.value)

    def head(self) -> Position:
        try:
            row = self._catalog().execute("SELECT pg_current_wal_lsn()::text").fetchone()
        except psycopg.Error as e:
            raise classify(e, "cannot read the source's WAL position") from e
        assert row is not None
        return PgLsn.from_body(str(row[0]))

    def health(self) -> SourceHealth:
        try:
            out = health.read_health(self._catalog(), self._slot)
        except psycopg.Error as e:
            raise classify(e, "cannot read the replication slot's state") from e
        if self._heartbeat_problem is None:
            return out
        return dataclasses.replace(out, warnings=(*out.warnings, self._heartbeat_problem))

    def identity(self) -> str:
        try:
            return health.identity(self._catalog())
        except psycopg.Error as e:
            raise classify(e, "cannot read the source's system identifier") from e

    def instance(self) -> str:
        try:
            return health.instance(self._catalog())
        except psycopg.Error as e:
            raise classify(e, "cannot read the source's system identifier") from e

    def close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()

    def close(self) -> None:
        self.close_stream()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
