"""The Source protocol every capture implementation follows."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from cdc_sync.records import (
    Backfill,
    Column,
    CopyText,
    Position,
    Row,
    SourceEvent,
    TableId,
    TableSchema,
)


@dataclass(frozen=True)
class SourceHealth:
    """How close the source is to losing changes we have not consumed yet.

    PostgreSQL fills the slot fields, MySQL / MariaDB the binlog fields; the others are None.
    ``warnings`` are the problems visible without knowing the lag (an invalidated or
    endangered slot); ``sources.health.retention_warnings`` adds the lag-dependent ones.
    """

    kind: Literal["postgres", "mysql"]
    slot_wal_status: str | None = None  # reserved / extended / unreserved / lost
    retained_bytes: int | None = None  # WAL the slot holds back (current LSN - restart_lsn)
    limit_bytes: int | None = None  # max_slot_wal_keep_size; None when unlimited
    safe_wal_size: int | None = None  # bytes that may still be written before invalidation
    binlog_oldest_file: str | None = None
    binlog_retention_seconds: float | None = None  # None: binlogs never expire
    oldest_binlog_age_seconds: float | None = None  # None when the server cannot tell
    warnings: tuple[str, ...] = field(default=())


class SnapshotSession(Protocol):
    """A consistent read view of the source for copying tables (initial snapshot).

    ``position`` is where streaming must start for the copy and the stream to meet exactly
    (the stream delivers every transaction that ends after it and none that the copy
    already saw), or None when the view is not tied to a stream position (a resumed copy:
    the stream start was fixed when the copy began, and replaying from there converges).
    """

    @property
    def position(self) -> Position | None: ...

    def read_chunk(
        self,
        table: TableId,
        schema: TableSchema,
        after: tuple[object, ...] | None,
        limit: int,
        where: str | None = None,
    ) -> list[Row]:
        """Up to ``limit`` rows with key > ``after`` (all rows when None) in the source's key
        order (keyset pagination), optionally restricted by the SQL condition ``where``;
        values aligned with ``schema.columns``, decoded exactly as ``stream`` decodes them."""
        ...

    def copy_text(
        self, table: TableId, schema: TableSchema, after: tuple[object, ...] | None, limit: int
    ) -> CopyText | None:
        """The chunk ``read_chunk`` would return, as PostgreSQL COPY text with the keys
        decoded; None when this source cannot (then ``read_chunk``)."""
        ...

    def estimate_rows(self, table: TableId) -> int:
        """The catalog's row estimate (cheap, no scan); 0 when unknown."""
        ...

    def close(self) -> None: ...


class Source(Protocol):
    """A change stream. Lifecycle: ``prepare`` → ``stream`` (iterate) / ``ack`` → ``close``.

    Invariant: ``ack`` is called only with the ``end_position`` of a transaction whose target
    commit is durable; a source must never tell its server more than that.
    """

    def problems(self) -> list[str]:
        """Prerequisites that are not met, each with the exact fix; empty when ready."""
        ...

    def prepare(self, create: bool) -> Mapping[TableId, TableSchema]:
        """Create what is missing (when ``create``), validate, and return the table schemas."""
        ...

    def tables_unstreamed(self) -> frozenset[TableId]:
        """Configured tables whose changes the stream did not carry until ``prepare`` (a
        PostgreSQL table it added to an existing publication: newly configured, or dropped
        and created again). Their rows must be copied, or the target misses them."""
        ...

    def table_schemas(self) -> Mapping[TableId, TableSchema]:
        """The configured tables' schemas read from the catalog, creating nothing (no slot,
        no publication). Raises like ``prepare`` on table problems (NoKeyError,
        UnsupportedTypeError…, PermanentError listing several)."""
        ...

    def backfill(self, table: TableId, column: Column) -> Backfill | None:
        """What the rows that existed before ``column`` was added to ``table`` hold in it,
        read from the catalog now; None when that cannot be known (an expression default,
        a table rewritten since)."""
        ...

    def fetch_rows(
        self, table: TableId, schema: TableSchema, keys: Sequence[tuple[object, ...]]
    ) -> list[Row | None]:
        """The current committed rows for these keys (canonical values in ``schema.key``
        order): one entry per key, in order, None where no row has that key. Values are
        aligned with ``schema.columns`` and equal, type for type, to what ``stream`` would
        decode for that row; one query per chunk of keys, never one per key."""
        ...

    def open_snapshot(self, fresh: bool) -> SnapshotSession:
        """A consistent read view for copying tables. ``fresh``: also fix the stream start
        at exactly that view (PostgreSQL: create the slot with an exported snapshot; MySQL:
        a consistent-snapshot transaction and the binlog position it matches) and report it
        as ``position``. Not fresh: a read view only (resuming an interrupted copy)."""
        ...

    def read_chunk(
        self,
        table: TableId,
        schema: TableSchema,
        after: tuple[object, ...] | None,
        limit: int,
        where: str | None = None,
    ) -> list[Row]:
        """As ``SnapshotSession.read_chunk``, on the current committed data (its own short
        read-only transaction): the chunk read between two watermarks (re-snapshot)."""
        ...

    def last_chunk_sees(self, xid: str) -> bool:
        """Whether the snapshot of the last ``read_chunk`` saw source transaction ``xid``
        (a change the chunk misses must win over the chunk's row, wherever it is in the
        stream relative to the low watermark)."""
        ...

    def write_signal(self, pipeline: str, value: str) -> None:
        """Write ``value`` as this pipeline's watermark into the signal table (committed at
        once), so that it appears in the stream as an UPDATE/INSERT of that table."""
        ...

    def stream(self, resume_after: Position | None) -> Iterator[SourceEvent]:
        """Events of transactions ending after ``resume_after``; never returns on its own."""
        ...

    def ack(self, position: Position) -> None: ...

    def head(self) -> Position:
        """The source's current end of log, for lag and ``--until-caught-up``."""
        ...

    def health(self) -> SourceHealth:
        """Retention state: WAL held by the slot and its limit, or binlog expiry; cheap
        (catalog queries only), meant to be polled every minute or so."""
        ...

    def identity(self) -> str:
        """A stable identifier of the source server (PostgreSQL: ``postgres:`` + the
        cluster's system identifier; MySQL: ``mysql:`` + @@server_uuid), stored with the
        checkpoint so that a resume against a different server is refused."""
        ...

    def instance(self) -> str:
        """The server (and, on PostgreSQL, the database) the tables are read from, as the
        same text a target connection yields for itself (``runtime.self_loop``)."""
        ...

    def close(self) -> None: ...
