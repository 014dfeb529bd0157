"""The pipeline loop: source events → sink, one target transaction per batch, then ack."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from cdc_sync.audit.dead_letters import DeadLetter
from cdc_sync.audit.writer import Provenance
from cdc_sync.errors import PermanentError
from cdc_sync.records import (
    ChangeRecord,
    CopyText,
    Heartbeat,
    Idle,
    Op,
    Position,
    Row,
    RowProblem,
    TableId,
    TableSchema,
    TxBegin,
    TxCommit,
    UnreadableRow,
)
from cdc_sync.runtime import faults
from cdc_sync.runtime.backfills import read_now
from cdc_sync.runtime.events import EVENTS
from cdc_sync.runtime.link import NO_CHECK
from cdc_sync.runtime.loop_commit import Batch, CommitLoop
from cdc_sync.runtime.retyped import relaxed_columns, warn_renamed, warn_retyped
from cdc_sync.runtime.rules import masked_pk, rule_letter, source_letter
from cdc_sync.runtime.stop import STOP_GRACE_SECONDS
from cdc_sync.transforms import RuleError, TableTransform

# A source transaction still open when a stop is asked for gets this long to reach its commit;
# after that the open target transaction is rolled back (the source re-sends it on restart).


def log_schema(log: Any, table: TableId, schema: TableSchema, target: TableId) -> None:
    """DEBUG: a table's target-shaped columns (names and types, never values)."""
    cols = [f"{c.name} {c.type.source_name or c.type.kind.value}" for c in schema.columns]
    log.debug("table_schema", table=str(table), target=str(target), columns=cols, key=schema.key)


class PipelineLoop(CommitLoop):
    """Runs one pipeline until stopped, caught up (when asked) or failed.

    The loop alone decides target commit boundaries (``CommitLoop`` keeps the invariants of
    what one target transaction holds and when the source is acknowledged).
    """

    def run(self, resume_after: Position | None) -> str:
        """Returns why it stopped: 'stopped' or 'caught_up'. Raises on failure."""
        try:
            result = self._run(resume_after)
            self._writer.drain()
            self._ack_finished()
            return result
        finally:
            self._applied.emit(self.log, force=True)  # batches committed since the last line
            self._writer.close()

    def _run(self, resume_after: Position | None) -> str:
        head = self.source.head() if self.until_caught_up else None
        if head is not None and resume_after is not None and resume_after >= head:
            return "caught_up"
        self._batch = Batch()
        in_tx: TxBegin | None = None
        seen = 0
        for ev in self.source.stream(resume_after):
            if isinstance(ev, ChangeRecord):
                self._change(ev)
                seen += 1
                # A big source transaction sends no Idle for minutes: the stop grace is
                # checked here too (every 64 changes: a cheap test, a prompt stop).
                if not seen & 63 and self.stop.is_set and self._stop_grace_over():
                    return self._stop_open()
                continue
            if isinstance(ev, TxBegin):
                in_tx = ev
                self._tx_changes = 0
                if self._batch.last_commit is None:
                    # The batch's first transaction: its duration (and max_seconds) count
                    # from here, not from the previous commit (idle time is no batch time).
                    self._batch.started = time.monotonic()
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
                if self.stamper is not None:
                    self.stamper.commit(ev.end_position)
                if head is not None and ev.end_position >= head:
                    self._commit(self._batch)
                    return "caught_up"
                if self.stop.is_set or self._due(self._batch):
                    self._commit(self._batch)
                    if self.stop.is_set:
                        return "stopped"
                self._ack_finished()
                if self.resnapshot is not None:
                    self.resnapshot.tick()
                continue
            # Idle or Heartbeat: between messages; flush what is due, ack what is durable
            self._ack_finished()
            if in_tx is None and isinstance(ev, Heartbeat):
                self._idle_keep_alive(ev.position)
                if self.stamper is not None:
                    self.stamper.heartbeat(ev.position)
            if in_tx is None:
                if self.resnapshot is not None and not self.stop.is_set:
                    self.resnapshot.tick()
                if self._batch.last_commit is not None and (
                    self.stop.is_set or self._due(self._batch) or self._quiet(ev)
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
                return self._stop_open()
        return "stopped"

    def _stop_open(self) -> str:
        """Stop inside a source transaction past the grace: its target transaction is rolled
        back (the checkpoint stays before it, so the source sends it again on restart)."""
        self.log.warning("stop_rolled_back_open_transaction")
        self._rollback_open()
        return "stopped"

    # -- snapshot rows: the same rules, dead letters, audit and sink as streamed changes -----

    def feed_copied(  # noqa: PLR0917  (the Emit callback shape)
        self,
        table: TableId,
        schema: TableSchema,
        rows: Sequence[Row],
        position: Position,
        xid: str,
        commit_time: datetime,
    ) -> None:
        """Copied source rows as upserts (INSERT records: COPY when the keys are new, else
        INSERT … ON CONFLICT), audited with op 'snapshot'."""
        self._audit_op = "snapshot"
        change = self._change
        try:
            for row in rows:
                # A value the source could not decode: dead letter or stop, as in the stream.
                problem = row.problem if type(row) is UnreadableRow else None
                change(ChangeRecord(Op.INSERT, table, schema, None, row, position, xid,
                                    commit_time, problem=problem))  # fmt: skip
        finally:
            self._audit_op = None

    def takes_copy_text(
        self, table: TableId, schema: TableSchema, after: tuple[object, ...] | None
    ) -> bool:
        """Whether chunks of ``table`` after key ``after`` may go as the source's COPY text
        (:meth:`feed_copy_text`): the table has no rules (the rows need no typed values),
        the pipeline is not one side of a link (those tag and check every row), and the
        target can load them (see ``SqlSink.takes_copy_text``). Waits for the writer."""
        if self.link is not None or self.tag is not None or self.stamper is not None:
            return False
        tt = self.rules.for_schema(schema)
        if not tt.identity:
            return False
        target = self.targets[table]
        self._learn(table, tt, target)
        sink, conn = self.sink, self.conn
        answer: list[bool] = []
        self._writer.submit(
            lambda: answer.append(sink.takes_copy_text(conn, target, schema, after))
        ).result()
        return answer[0]

    def feed_copy_text(
        self, table: TableId, chunk: CopyText, position: Position, xid: str, commit_time: datetime
    ) -> None:
        """A chunk's rows loaded as they are (:meth:`takes_copy_text` said yes), audited
        like :meth:`feed_copied` rows; committed by :meth:`commit_copied`."""
        target = self.targets[table]
        sink, conn = self.sink, self.conn
        self._writer.submit(lambda: sink.load_copy_text(conn, target, chunk))
        self.audit.add_copied(table, target, chunk.schema, chunk.keys, position, xid, commit_time)
        self._tx_changes += chunk.rows
        if EVENTS.active:
            self._per_table[(str(target), "insert")] += chunk.rows

    def commit_copied(
        self,
        position: Position,
        xid: str,
        commit_time: datetime,
        then: Callable[[Connection], None],
    ) -> Future[None]:
        """Commit what was fed, with ``then`` (the snapshot's progress) and the checkpoint,
        in one target transaction: a crash resumes at the last committed chunk."""
        self.audit.end_transaction(xid, commit_time, position)
        self._flush()
        conn, checkpoints, token, tag = self.conn, self.checkpoints, self.token, self.tag

        def commit() -> None:
            then(conn)
            # Same position again (idempotent), but fenced: a stale daemon cannot commit.
            checkpoints.save(conn, position, None, None, token)
            conn.commit()
            if tag is not None:
                tag.ended()

        return self._writer.submit(commit)

    def _stop_grace_over(self) -> bool:
        at = self.stop.requested_at
        return at is not None and time.monotonic() - at > STOP_GRACE_SECONDS

    @staticmethod
    def _quiet(ev: Heartbeat | Idle) -> bool:
        """The source has nothing more for now: commit at once. The commit queues behind
        one still in flight, and what arrives meanwhile makes the next batch (natural
        batching: low lag at low rates, big batches under load). Not only when the writer
        is free: a batch left waiting then would wait for max_seconds."""
        return isinstance(ev, Idle) and ev.drained

    def _due(self, batch: Batch) -> bool:
        b = self.cfg.batch
        return batch.rows >= b.max_rows or time.monotonic() - batch.started >= b.max_seconds

    def _change(self, rec: ChangeRecord) -> None:
        faults.point("after_decode")
        target = self.targets.get(rec.table)
        if target is None:
            # The signal table's watermarks (re-snapshot) are read, never applied; anything
            # else is a stray table the source should have filtered: not ours to apply.
            if self.resnapshot is not None and rec.table == self.resnapshot.signal_table:
                self.resnapshot.on_signal(rec)
            return
        if self.resnapshot is not None and self.resnapshot.watching:
            self.resnapshot.saw(rec)
        if self.stamper is not None:
            self.stamper.saw(rec)
        # Compiled once per source schema; a schema change recompiles (a rule naming a
        # dropped column stops here with its key path).
        tt = self.rules.for_schema(rec.schema)
        schema = tt.schema  # target-shaped: renamed, dropped, added, re-typed columns
        if self._schemas.get(rec.table) is not schema:
            self._learn(rec.table, tt, target)
        # Counted before the skips below too: they still write an audit row.
        self._tx_changes += 1
        if rec.problem is not None:
            self._source_refused(rec, tt, target, rec.problem)
            return
        if rec.op is Op.TRUNCATE and not self._truncate.get(rec.table, True):
            self.audit.add(rec, target, outcome="skipped", op=self._audit_op)
            return
        rules: Provenance = ()
        if tt.identity:
            out = rec
        else:
            # Masking happens here, before the record reaches the audit, the sink or a log
            # line (invariant 5); the source record itself is never persisted.
            try:
                applied = tt.apply(rec)
            except RuleError as e:
                self._rule_refused(rec, tt, target, e)
                return
            if applied is None:
                self.audit.add(
                    rec, target, outcome="filtered", pk=masked_pk(tt, rec), op=self._audit_op
                )
                return
            out, rules = applied
        index = self.audit.add(out, target, rules=rules, op=self._audit_op)
        self._pending.append((out, target))
        if self._dlq:
            self._origin.append((rec, tt, index))
        if self.link is not None:
            # Copied rows (a link's seed) are not checked for conflicts: the seed side wins.
            self._link_index.append(NO_CHECK if self._audit_op == "snapshot" else index)
        if len(self._pending) >= self.cfg.batch.flush_rows:
            # A big source transaction streams into the open target transaction in chunks
            # instead of being held in memory; it is committed only at its TxCommit.
            self._flush()

    def _learn(self, table: TableId, tt: TableTransform, target: TableId) -> None:
        known, schema = self._schemas.get(table), tt.schema
        if known is None or known != schema:
            # Schema announced mid-stream (e.g. ADD COLUMN): widen the target before any
            # row that needs the new column is written.
            log_schema(self.log, table, schema, target)
            if known is not None:
                warn_retyped(self.log, table, known, schema)
                warn_renamed(self.log, table, target, known, schema)
            relax = relaxed_columns(known, schema) if known is not None else frozenset()
            self._widen(schema, target, read_now(self.source, table, tt, known), relax)
        self._schemas[table] = schema

    def _source_refused(
        self, rec: ChangeRecord, tt: TableTransform, target: TableId, problem: RowProblem
    ) -> None:
        """A row the source could not decode exactly: never applied with a made-up value."""
        if not self._dlq:
            raise PermanentError(
                f"{problem.reason} (at {rec.position.to_text()}; on_error is stop; with "
                "on_error: dead_letter the row is kept in cdc_sync_dead_letters)"
            )
        self._park(rec, tt, target, source_letter(tt, rec, target, problem))

    def _rule_refused(
        self, rec: ChangeRecord, tt: TableTransform, target: TableId, err: RuleError
    ) -> None:
        if not self._dlq:
            raise PermanentError(
                f"table {rec.table} at {rec.position.to_text()}: {err} (on_error is stop; "
                "with on_error: dead_letter the row is kept in cdc_sync_dead_letters)"
            )
        self._park(rec, tt, target, rule_letter(tt, rec, target, err))

    def _park(
        self, rec: ChangeRecord, tt: TableTransform, target: TableId, letter: DeadLetter
    ) -> None:
        """A refused row into the dead letters of this batch, with its audit row."""
        self._letters.append(letter)
        why = {"rule": letter.rule} if letter.stage == "rule" else {"stage": letter.stage}
        index = self.audit.add(
            rec,
            target,
            outcome="dead_letter",
            pk=letter.pk,
            extra={"dead_letter": {**why, "column": letter.column}},
            op=self._audit_op,
        )
        EVENTS.dead_lettered(self.name, str(rec.table), letter.stage)
        self.log.warning(
            "row_dead_lettered",
            table=str(rec.table),
            stage=letter.stage,
            rule=letter.rule,
            column=letter.column,
            position=rec.position.to_text(),
        )
        if rec.key_changed():
            self._drop_old_key(rec, tt, target, index)

    def _drop_old_key(
        self, rec: ChangeRecord, tt: TableTransform, target: TableId, index: int
    ) -> None:
        """A key change whose new row is refused: the old key is gone at the source, so it
        goes from the target too. Kept, it would be the same source row twice once the
        letter is retried (and block the retry on a unique column it holds), its values
        lingering after the source deleted the row."""
        gone = rec.old_row_gone()
        if not tt.identity:
            try:
                applied = tt.apply(gone)
            except RuleError:
                return  # the old key itself cannot be shaped: the letter names the row
            if applied is None:
                return
            gone = applied.record
        self._pending.append((gone, target))
        self._origin.append((rec, tt, index))
        if self.link is not None:
            self._link_index.append(NO_CHECK)
