"""The commit side of the pipeline loop: writer thread, flushes, commits, acknowledgements."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from cdc_sync.audit.dead_letters import DeadLetter, DeadLetterStore
from cdc_sync.audit.writer import AuditWriter
from cdc_sync.checkpoint.store import CheckpointStore
from cdc_sync.config.models import PipelineConfig
from cdc_sync.errors import RowLevelError, TransientError
from cdc_sync.records import (
    ChangeRecord,
    Position,
    TableId,
    TableSchema,
    TxCommit,
)
from cdc_sync.runtime import faults
from cdc_sync.runtime.events import EVENTS, Throttle
from cdc_sync.runtime.link import LinkApplier
from cdc_sync.runtime.link_stamp import Stamper
from cdc_sync.runtime.resnapshot import Resnapshot
from cdc_sync.runtime.rules import PipelineRules, target_letter
from cdc_sync.runtime.stop import StopFlag
from cdc_sync.runtime.writer import OrderedWriter
from cdc_sync.sinks.sql.backfill import BackfillOf
from cdc_sync.sinks.sql.origin import OriginTag
from cdc_sync.sinks.sql.sink import SqlSink, is_mysql
from cdc_sync.sources.base import Source
from cdc_sync.transforms import TableTransform

# How often an idle pipeline moves its checkpoint to the source's heartbeat position and
# renews its lease (well inside the lease, so a standby never sees a live daemon expire).
_IDLE_SECONDS = 5.0


@dataclass
class Batch:
    """What the open target transaction holds; only completed source transactions count."""

    # Monotonic time of the batch's first change, set at its first TxBegin by the loop
    # (cdc_sync_batch_duration_seconds, batch_ms, max_seconds); creation time until then.
    started: float = field(default_factory=time.monotonic)
    rows: int = 0
    transactions: int = 0
    last_commit: TxCommit | None = None


class _AppliedLog:
    """``batch_applied`` log lines, at most one a second, summing the batches in between: a
    quiet source commits every transaction (up to hundreds a second), and one line per
    commit would flood the log. The metrics and alert events still see every batch."""

    every = 1.0

    def __init__(self) -> None:
        self.next_at = 0.0
        self._reset()

    def _reset(self) -> None:
        self.batches = self.rows = self.transactions = 0
        self.lag = self.max_lag = self.batch_ms = 0.0
        self.position = ""

    def add(self, rows: int, transactions: int, lag: float, position: str, ms: float) -> None:
        self.batches += 1
        self.rows += rows
        self.transactions += transactions
        self.lag, self.max_lag = lag, max(self.max_lag, lag)
        self.position, self.batch_ms = position, ms

    def emit(self, log: Any, force: bool = False) -> None:
        now = time.monotonic()
        if not self.batches or (now < self.next_at and not force):
            return
        log.info(
            "batch_applied",
            rows=self.rows,
            transactions=self.transactions,
            batches=self.batches,
            position=self.position,
            lag_seconds=round(self.lag, 3),
            max_lag_seconds=round(self.max_lag, 3),
            batch_ms=round(self.batch_ms, 1),
        )
        self._reset()
        self.next_at = now + self.every


@dataclass(frozen=True)
class _Committing:
    done: Future[None]
    position: Position
    rows: int
    transactions: int
    commit_time: datetime
    started: float
    per_table: Counter[tuple[str, str]]


class CommitLoop:
    """The target side of a pipeline loop: the writer thread, flushes, commits, acks.

    Invariants enforced here: rows + audit + checkpoint go into ONE target transaction (all
    of them are jobs on the same writer, hence the same connection, in order), and the source
    is acknowledged only after the job that committed that transaction has finished.
    ``PipelineLoop`` adds the reading side (events, rules, snapshots).
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
        rules: PipelineRules,
        dead_letters: DeadLetterStore,
        token: int,
        stop: StopFlag,
        log: Any,
        until_caught_up: bool = False,
        on_batch: Callable[[int, float], None] | None = None,
        link: LinkApplier | None = None,
        tag: OriginTag | None = None,
    ) -> None:
        self.name, self.cfg, self.source, self.conn = name, config, source, conn
        self.sink, self.checkpoints, self.audit = sink, checkpoints, audit
        self.targets, self.token, self.stop = targets, token, stop
        self.rules, self.dead_letters = rules, dead_letters
        self._dlq = config.on_error == "dead_letter"
        # Per pending item when dead-lettering: the source record, its rules and its audit
        # row, to build the dead letter should the target refuse the item.
        self._origin: list[tuple[ChangeRecord, TableTransform, int]] = []
        self._letters: list[DeadLetter] = []
        self.log = log
        self.until_caught_up = until_caught_up
        self.on_batch = on_batch
        self._schemas: dict[TableId, TableSchema] = {}
        self._truncate = {TableId.parse(t): tc.apply_truncate for t, tc in config.tables.items()}
        self._pending: list[tuple[ChangeRecord, TableId]] = []
        self._writer = OrderedWriter()
        self._committing: deque[_Committing] = deque()
        self._batch = Batch()
        self._tx_changes = 0  # records of the open source transaction handed on so far
        # Audit operation of rows fed by a snapshot ('snapshot'); None: the record's own op.
        self._audit_op: str | None = None
        self.resnapshot: Resnapshot | None = None
        # (target table, op) → changes handed to the sink since the last commit (metrics)
        self._per_table: Counter[tuple[str, str]] = Counter()
        self._alive = Throttle(1.0)
        self._applied = _AppliedLog()
        self._next_keep_alive = time.monotonic() + _IDLE_SECONDS
        # Two-way links: every target transaction is tagged with our origin (the other
        # direction's capture drops it), and each change is checked for a conflict first.
        self.link, self.tag = link, tag
        self.stamper: Stamper | None = None  # a link's MySQL side: local commit times
        self._link_index: list[int] = []  # per pending item: its audit row (-1: none)

    def known_schemas(self, schemas: Mapping[TableId, TableSchema]) -> None:
        self._schemas.update(schemas)

    def in_open_transaction(self, job: Callable[[Connection], None]) -> None:
        """Run ``job`` in the open target transaction, after every row handed on so far
        (a re-snapshot's progress, committed with the chunk's rows)."""
        self._flush()
        conn = self.conn
        self._writer.submit(lambda: job(conn))

    def drain_writer(self) -> None:
        self._writer.drain()

    def close_writer(self) -> None:
        self._writer.close()

    def _idle_keep_alive(self, position: Position) -> None:
        """Idle published tables: every ``_IDLE_SECONDS`` move the checkpoint to the source's
        heartbeat position and acknowledge it, so the slot does not hold WAL back (and the
        binlog checkpoint does not age) while other tables are busy; it also renews the lease.
        Only when nothing is pending or committing: everything before ``position`` is then
        durable in the target."""
        if self._pending or self._batch.last_commit is not None or self._committing:
            return
        now = time.monotonic()
        if now < self._next_keep_alive:
            return
        self._next_keep_alive = now + _IDLE_SECONDS
        conn, checkpoints, token = self.conn, self.checkpoints, self.token

        tag = self.tag

        def job() -> None:
            checkpoints.keep_alive(conn, position, token)
            conn.commit()
            if tag is not None:
                tag.ended()

        done = self._writer.submit(job)
        # Acknowledged like a batch: only after that commit has finished.
        self._committing.append(
            _Committing(done, position, 0, 0, datetime.now(UTC), now, Counter())
        )

    def _widen(
        self,
        schema: TableSchema,
        target: TableId,
        fill: BackfillOf | None,
        relax: frozenset[str] = frozenset(),
    ) -> None:
        """PostgreSQL: DDL inside the open target transaction (it is transactional there).
        MySQL / MariaDB commit DDL implicitly, so it may only run where that commits nothing
        half-done: never in the middle of a source transaction (invariant 1)."""
        self._flush()
        sink, conn = self.sink, self.conn
        if not is_mysql(conn):
            self._writer.submit(lambda: sink.ensure_table(conn, schema, target, fill, relax=relax))
            return
        if self._tx_changes == 0:
            # Between source transactions (always so for a MySQL source, whose DDL commits on
            # its own): commit the completed ones with their checkpoint, then the DDL.
            if self._batch.last_commit is not None:
                self._commit(self._batch)

            tag = self.tag

            def clean_ddl() -> None:
                conn.commit()  # only reads can be open here
                if tag is not None:
                    tag.ended()
                sink.ensure_table(conn, schema, target, fill, relax=relax)

            self._writer.submit(clean_ddl)
            return

        def mid_transaction() -> None:
            # A PostgreSQL source's transactional DDL, rows already written: never split the
            # source transaction. Roll back, widen, and restart from the checkpoint; the
            # retry re-applies everything after it and finds the table already widened.
            if not sink.ddl_would_commit(conn, schema, target, relax=relax):
                return
            conn.rollback()
            sink.ensure_table(conn, schema, target, fill, relax=relax)
            raise TransientError(
                f"target table {target}: schema changed inside a source transaction; table "
                "widened, restarting from the checkpoint"
            )

        self._writer.submit(mid_transaction)

    def _flush(self) -> None:
        # Also reached every flush_rows rows inside one huge source transaction, where no
        # commit or heartbeat comes for minutes: the watchdog and /healthz must see progress.
        if self._alive.due():
            EVENTS.alive(self.name)
        items, self._pending = self._pending, []
        # Per row, so only when an observer (metrics) is there to read the counts.
        if items and EVENTS.active:
            self._per_table.update((str(t), r.op.value) for r, t in items)
        origin, self._origin = self._origin, []
        letters, self._letters = self._letters, []
        link_index, self._link_index = self._link_index, []
        rows = self.audit.take()
        if not items and not rows and not letters:
            return
        # Counts only (DEBUG): what each write into the open target transaction carries.
        self.log.debug(
            "batch_flushed", changes=len(items), audit_rows=len(rows), dead_letters=len(letters)
        )
        sink, audit, conn, log = self.sink, self.audit, self.conn, self.log
        store, pipeline, dlq = self.dead_letters, self.name, self._dlq
        link, tag = self.link, self.tag

        def refused(i: int, err: RowLevelError) -> None:
            rec, tt, index = origin[i]
            letter = target_letter(tt, rec, items[i][1], err)
            letters.append(letter)
            audit.refused(rec.xid, items[i][1], items[i][0].op)
            audit.mark(
                rows,
                index,
                "dead_letter",
                {"dead_letter": {"code": letter.error_code, "constraint": letter.constraint}},
            )
            EVENTS.dead_lettered(pipeline, str(rec.table), "target")
            log.warning(
                "row_dead_lettered",
                table=str(rec.table),
                stage="target",
                code=letter.error_code,
                constraint=letter.constraint,
                position=rec.position.to_text(),
            )

        def job() -> None:
            nonlocal items, origin
            if items and tag is not None:
                tag.tag(conn)  # first, so the marker row leads the transaction (MySQL)
            if items and link is not None:
                res = link.resolve(conn, items, link_index)
                for index, outcome, extra in res.marks:
                    audit.mark(rows, index, outcome, extra)
                letters.extend(res.letters)
                if dlq:
                    origin = [origin[i] for i in res.keep]
                items = res.items
                link.store.write(conn, res.conflicts)
            if items and dlq:
                sink.apply_or_reject(conn, items, refused)
            elif items:
                sink.apply(conn, items)
            if items:
                faults.point("mid_batch")
            store.write(conn, pipeline, letters)
            if letters:
                faults.point("dead_letter_write")
            audit.write(conn, rows)

        self._writer.submit(job)

    def _commit(self, batch: Batch) -> Batch:
        last = batch.last_commit
        assert last is not None
        self._flush()
        conn, checkpoints, token, tag = self.conn, self.checkpoints, self.token, self.tag

        def commit() -> None:
            # Checkpoint in the same transaction as the rows and audit; fenced by our token.
            checkpoints.save(conn, last.end_position, last.xid, last.commit_time, token)
            faults.point("checkpoint_write")
            conn.commit()
            faults.point("after_commit")  # durable, not yet acknowledged to the source
            if tag is not None:
                tag.ended()

        done = self._writer.submit(commit)
        self.log.debug(
            "batch_committing",
            position=last.end_position.to_text(),
            source_tx=last.xid,
            transactions=batch.transactions,
            rows=batch.rows,
        )
        per_table, self._per_table = self._per_table, Counter()
        self._committing.append(
            _Committing(
                done,
                last.end_position,
                batch.rows,
                batch.transactions,
                last.commit_time,
                batch.started,
                per_table,
            )
        )
        self._batch = Batch()
        return self._batch

    def _ack_finished(self) -> None:
        """Acknowledge every batch whose commit has finished: only now is it durable."""
        self._writer.check()
        if self._alive.due():
            EVENTS.alive(self.name)
        while self._committing and self._committing[0].done.done():
            c = self._committing.popleft()
            c.done.result()  # a failed commit raises here and is never acked
            self.source.ack(c.position)
            if not c.transactions:
                continue  # an idle keep-alive: nothing was applied
            lag = max(0.0, (datetime.now(UTC) - c.commit_time).total_seconds())
            seconds = time.monotonic() - c.started
            self._applied.add(c.rows, c.transactions, lag, c.position.to_text(), seconds * 1000)
            if self.on_batch:
                self.on_batch(c.rows, lag)
            EVENTS.batch_applied(
                self.name,
                rows=c.rows,
                transactions=c.transactions,
                lag_seconds=lag,
                seconds=seconds,
                position=c.position.to_text(),
                per_table=c.per_table,
            )
        self._applied.emit(self.log)

    def _rollback_open(self) -> None:
        self._pending, self._origin, self._letters = [], [], []
        self._link_index = []
        self.audit.discard()
        conn, tag = self.conn, self.tag

        def rollback() -> None:
            conn.rollback()
            if tag is not None:
                tag.ended()

        self._writer.submit(rollback)
