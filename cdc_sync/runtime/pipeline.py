"""The pipeline loop: source events → sink, one target transaction per batch, then ack."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from cdc_sync.audit.writer import AuditWriter
from cdc_sync.checkpoint.store import CheckpointStore
from cdc_sync.config.models import PipelineConfig
from cdc_sync.errors import TransientError
from cdc_sync.records import (
    ChangeRecord,
    Heartbeat,
    Op,
    Position,
    TableId,
    TableSchema,
    TxBegin,
    TxCommit,
)
from cdc_sync.runtime.stop import StopFlag
from cdc_sync.runtime.writer import OrderedWriter
from cdc_sync.sinks.sql.sink import SqlSink, is_mysql
from cdc_sync.sources.base import Source

# A source transaction still open when a stop is asked for gets this long to reach its commit;
# after that the open target transaction is rolled back (the source re-sends it on restart).
_STOP_GRACE_SECONDS = 5.0


@dataclass
class _Batch:
    """What the open target transaction holds; only completed source transactions count."""

    started: float = field(default_factory=time.monotonic)
    rows: int = 0
    transactions: int = 0
    last_commit: TxCommit | None = None


@dataclass(frozen=True)
class _Committing:
    done: Future[None]
    position: Position
    rows: int
    transactions: int
    commit_time: datetime
    started: float


class PipelineLoop:
    """Runs one pipeline until stopped, caught up (when asked) or failed.

    The loop alone decides target commit boundaries, so the invariants live here:
    rows + audit + checkpoint go into ONE target transaction (all of them are jobs on the
    same writer, hence the same connection, in order), and the source is acknowledged only
    after the job that committed that transaction has finished successfully.
    """

    def __init__(
        self,
        *,
        name: str,
        config: PipelineConfig,
        source: Source,
        conn: Connection,
        sink: SqlSink,
        checkpoints: CheckpointStore,
        audit: AuditWriter,
        targets: Mapping[TableId, TableId],
        token: int,
        stop: StopFlag,
        log: Any,
        until_caught_up: bool = False,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.name, self.cfg, self.source, self.conn = name, config, source, conn
        self.sink, self.checkpoints, self.audit = sink, checkpoints, audit
        self.targets, self.token, self.stop = targets, token, stop
        self.log = log
        self.until_caught_up = until_caught_up
        self.on_batch = on_batch
        self._schemas: dict[TableId, TableSchema] = {}
        self._truncate = {TableId.parse(t): tc.apply_truncate for t, tc in config.tables.items()}
        self._pending: list[tuple[ChangeRecord, TableId]] = []
        self._writer = OrderedWriter()
        self._committing: deque[_Committing] = deque()
        self._batch = _Batch()
        self._tx_changes = 0  # records of the open source transaction handed on so far

    def known_schemas(self, schemas: Mapping[TableId, TableSchema]) -> None:
        self._schemas.update(schemas)

    def run(self, resume_after: Position | None) -> str:
        """Returns why it stopped: 'stopped' or 'caught_up'. Raises on failure."""
        try:
            result = self._run(resume_after)
            self._writer.drain()
            self._ack_finished()
            return result
        finally:
            self._writer.close()

    def _run(self, resume_after: Position | None) -> str:
        head = self.source.head() if self.until_caught_up else None
        if head is not None and resume_after is not None and resume_after >= head:
            return "caught_up"
        self._batch = _Batch()
        in_tx: TxBegin | None = None
        for ev in self.source.stream(resume_after):
            if isinstance(ev, ChangeRecord):
                self._change(ev)
                continue
            if isinstance(ev, TxBegin):
                in_tx = ev
                self._tx_changes = 0
                if self.stop.is_set and self._batch.last_commit is not None:
                    self._commit(self._batch)
                    return "stopped"
                continue
            if isinstance(ev, TxCommit):
                in_tx = None
                self._batch.rows += ev.row_count
                self._batch.transactions += 1
                self._batch.last_commit = ev
                self.audit.end_transaction(ev.xid, ev.commit_time, ev.end_position)
                if head is not None and ev.end_position >= head:
                    self._commit(self._batch)
                    return "caught_up"
                if self.stop.is_set or self._due(self._batch):
                    self._commit(self._batch)
                    if self.stop.is_set:
                        return "stopped"
                self._ack_finished()
                continue
            # Idle or Heartbeat: between messages; flush what is due, ack what is durable
            self._ack_finished()
            if in_tx is None:
                if self._batch.last_commit is not None and (
                    self.stop.is_set or self._due(self._batch)
                ):
                    self._commit(self._batch)
                if self.stop.is_set:
                    self._rollback_open()
                    return "stopped"
                if isinstance(ev, Heartbeat) and head is not None and ev.position >= head:
                    if self._batch.last_commit is not None:
                        self._commit(self._batch)
                    return "caught_up"
            elif self.stop.is_set and self._stop_grace_over():
                self.log.warning("stop_rolled_back_open_transaction")
                self._rollback_open()
                return "stopped"
        return "stopped"

    def _stop_grace_over(self) -> bool:
        at = self.stop.requested_at
        return at is not None and time.monotonic() - at > _STOP_GRACE_SECONDS

    def _due(self, batch: _Batch) -> bool:
        b = self.cfg.batch
        return batch.rows >= b.max_rows or time.monotonic() - batch.started >= b.max_seconds

    def _change(self, rec: ChangeRecord) -> None:
        target = self.targets.get(rec.table)
        if target is None:
            return  # the source filters by publication; a stray table is not ours to apply
        known = self._schemas.get(rec.table)
        if known is not rec.schema:
            if known is None or known != rec.schema:
                # Schema announced mid-stream (e.g. ADD COLUMN): widen the target before any
                # row that needs the new column is written.
                self._widen(rec.schema, target)
            self._schemas[rec.table] = rec.schema
        # Counted before the skip below too: a skipped TRUNCATE still writes an audit row.
        self._tx_changes += 1
        if rec.op is Op.TRUNCATE and not self._truncate.get(rec.table, True):
            self.audit.add(rec, target, outcome="skipped")
            return
        self._pending.append((rec, target))
        self.audit.add(rec, target)
        if len(self._pending) >= self.cfg.batch.flush_rows:
            # A big source transaction streams into the open target transaction in chunks
            # instead of being held in memory; it is committed only at its TxCommit.
            self._flush()

    def _widen(self, schema: TableSchema, target: TableId) -> None:
        """PostgreSQL: DDL inside the open target transaction (it is transactional there).
        MySQL / MariaDB commit DDL implicitly, so it may only run where that commits nothing
        half-done: never in the middle of a source transaction (invariant 1)."""
        self._flush()
        sink, conn = self.sink, self.conn
        if not is_mysql(conn):
            self._writer.submit(lambda: sink.ensure_table(conn, schema, target))
            return
        if self._tx_changes == 0:
            # Between source transactions (always so for a MySQL source, whose DDL commits on
            # its own): commit the completed ones with their checkpoint, then the DDL.
            if self._batch.last_commit is not None:
                self._commit(self._batch)

            def clean_ddl() -> None:
                conn.commit()  # only reads can be open here
                sink.ensure_table(conn, schema, target)

            self._writer.submit(clean_ddl)
            return

        def mid_transaction() -> None:
            # A PostgreSQL source's transactional DDL, rows already written: never split the
            # source transaction. Roll back, widen, and restart from the checkpoint; the
            # retry re-applies everything after it and finds the table already widened.
            if not sink.ddl_would_commit(conn, schema, target):
                return
            conn.rollback()
            sink.ensure_table(conn, schema, target)
            raise TransientError(
                f"target table {target}: schema changed inside a source transaction; table "
                "widened, restarting from the checkpoint"
            )

        self._writer.submit(mid_transaction)

    def _flush(self) -> None:
        items, self._pending = self._pending, []
        rows = self.audit.take()
        if not items and not rows:
            return
        sink, audit, conn = self.sink, self.audit, self.conn

        def job() -> None:
            if items:
                sink.apply(conn, items)
            audit.write(conn, rows)

        self._writer.submit(job)

    def _commit(self, batch: _Batch) -> _Batch:
        last = batch.last_commit
        assert last is not None
        self._flush()
        conn, checkpoints, token = self.conn, self.checkpoints, self.token

        def commit() -> None:
            # Checkpoint in the same transaction as the rows and audit; fenced by our token.
            checkpoints.save(conn, last.end_position, last.xid, last.commit_time, token)
            conn.commit()

        done = self._writer.submit(commit)
        self._committing.append(
            _Committing(
                done,
                last.end_position,
                batch.rows,
                batch.transactions,
                last.commit_time,
                batch.started,
            )
        )
        self._batch = _Batch()
        return self._batch

    def _ack_finished(self) -> None:
        """Acknowledge every batch whose commit has finished: only now is it durable."""
        self._writer.check()
        while self._committing and self._committing[0].done.done():
            c = self._committing.popleft()
            c.done.result()  # a failed commit raises here and is never acked
            self.source.ack(c.position)
            lag = max(0.0, (datetime.now(UTC) - c.commit_time).total_seconds())
            self.log.info(
                "batch_applied",
                rows=c.rows,
                transactions=c.transactions,
                position=c.position.to_text(),
                lag_seconds=round(lag, 3),
                batch_ms=round((time.monotonic() - c.started) * 1000, 1),
            )
            if self.on_batch:
                self.on_batch(c.rows, lag)

    def _rollback_open(self) -> None:
        self._pending = []
        self.audit.discard()
        conn = self.conn
        self._writer.submit(conn.rollback)
