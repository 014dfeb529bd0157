"""PostgresSource: the Source protocol over pgoutput logical replication."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import psycopg

from cdc_sync.errors import PermanentError
from cdc_sync.records import (
    Heartbeat,
    Idle,
    PgLsn,
    Position,
    SourceEvent,
    TableId,
    TableSchema,
)
from cdc_sync.sources.postgres import admin
from cdc_sync.sources.postgres.catalog import lookup_type, read_schemas
from cdc_sync.sources.postgres.decoder import PgOutputDecoder
from cdc_sync.sources.postgres.stream import KEEPALIVE, XLOG, ReplicationStream, classify
from cdc_sync.sources.postgres.types import PgType, TypeResolver

_IDLE = Idle()


def _as_lsn(position: Position | None, what: str) -> PgLsn | None:
    if position is None or isinstance(position, PgLsn):
        return position
    raise PermanentError(f"{what} is a {type(position).__name__}, a PostgreSQL source needs pg:")


class PostgresSource:
    """Capture from one PostgreSQL database through a pgoutput slot and publication.

    ``may_create`` only affects ``problems()``: whether a missing slot / publication counts
    as a problem (``prepare(create=...)`` decides for itself).
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
    ) -> None:
        self._dsn, self._slot, self._publication = dsn, slot, publication
        self._tables = list(dict.fromkeys(tables))
        if not self._tables:
            raise PermanentError("a PostgreSQL source needs at least one table")
        self._poll, self._status_interval = poll_interval, status_interval
        self._may_create = may_create
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._stream: ReplicationStream | None = None
        self._resolver = TypeResolver(self._lookup_type)
        self._schemas: dict[TableId, TableSchema] = {}

    # -- the normal (catalog) connection ---------------------------------------------------

    def _catalog(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(
                    self._dsn, autocommit=True, connect_timeout=10, application_name="cdc-sync"
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

    # -- Source protocol -------------------------------------------------------------------

    def problems(self) -> list[str]:
        try:
            conn = self._catalog()
            out = admin.problems(
                conn, self._slot, self._publication, self._tables, self._may_create
            )
            out += self._encoding_problem(conn)
            _, table_errors = read_schemas(conn, self._tables, self._resolver)
        except psycopg.Error as e:
            raise classify(e, "cannot check the source database") from e
        return out + [str(e) for e in table_errors]

    def prepare(self, create: bool) -> Mapping[TableId, TableSchema]:
        try:
            conn = self._catalog()
            schemas, table_errors = read_schemas(conn, self._tables, self._resolver)
            problems = [str(e) for e in table_errors]
            problems += admin.problems(conn, self._slot, self._publication, self._tables, create)
            problems += self._encoding_problem(conn)
            if not problems and create:
                # Publication before slot: see admin.ensure_slot.
                admin.ensure_publication(conn, self._publication, self._tables)
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
        return dict(schemas)

    def stream(self, resume_after: Position | None) -> Iterator[SourceEvent]:
        resume = _as_lsn(resume_after, "the checkpoint")
        if not self._schemas:
            self.prepare(create=False)
        start = resume.value if resume else 0
        self._check_slot(resume)
        decoder = PgOutputDecoder(self._resolver, self._tables, self._schemas, start)
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
                        yield Heartbeat(PgLsn(lsn))
                else:
                    yield _IDLE
        finally:
            # An abandoned or failed iteration must not leave a walsender holding the slot.
            if self._stream is stream:
                self._stream = None
            stream.close()

    def _check_slot(self, resume: PgLsn | None) -> None:
        try:
            info = admin.slot_info(self._catalog(), self._slot)
        except psycopg.Error as e:
            raise classify(e, "cannot read the replication slot") from e
        if info is None:
            raise PermanentError(
                f"replication slot {self._slot!r} does not exist; fix: "
                f"SELECT pg_create_logical_replication_slot('{self._slot}', 'pgoutput');"
            )
        if resume is not None and info.confirmed_flush is not None:
            confirmed = PgLsn.from_body(info.confirmed_flush)
            if confirmed > resume:
                # Only durable positions are acked, so this means the checkpoint is older
                # than the slot (target restored or reset): the changes between are gone.
                raise PermanentError(
                    f"replication slot {self._slot!r} has confirmed {confirmed} but the "
                    f"checkpoint is {resume}: changes in between are no longer available; "
                    "re-initialise the target (drop the slot and checkpoint, resync)"
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

    def close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()

    def close(self) -> None:
        self.close_stream()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
