"""Initial snapshot: copy existing rows in key-ordered chunks, then stream from that point."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from cdc_sync.checkpoint.snapshots import INITIAL, SnapshotStore, SnapshotTask
from cdc_sync.checkpoint.store import Checkpoint, CheckpointStore
from cdc_sync.errors import PermanentError
from cdc_sync.records import Position, TableId, TableSchema
from cdc_sync.runtime.events import EVENTS
from cdc_sync.runtime.pipeline import PipelineLoop
from cdc_sync.runtime.resnapshot import key_json, resume_key
from cdc_sync.sources.base import SnapshotSession, Source


@dataclass(frozen=True, slots=True)
class Progress:
    """One chunk's worth of progress, for logs and the CLI's progress bar."""

    table: TableId
    rows_done: int
    estimate: int | None
    rows_per_second: float
    eta_seconds: float | None
    done: bool


OnProgress = Callable[[Progress], None]


def plan(mode: str, cp: Checkpoint | None, active: list[SnapshotTask], ever_started: bool) -> str:
    """What this start must do: 'fresh' (copy, and fix the stream start at the copy),
    'resume' (finish an interrupted copy), 'again' (snapshot: always with a checkpoint),
    or 'none'."""
    if mode == "never":
        return "none"
    if cp is None:
        # No checkpoint: never ran, or its offsets were reset. Copy from scratch.
        return "fresh"
    if active:
        return "resume"
    if mode == "always":
        return "again"
    del ever_started  # initial with a checkpoint: copied before, or streamed before 0.5
    return "none"


def late_tables(
    *,
    mode: str,
    action: str,
    cp: Checkpoint | None,
    tables: Iterable[TableId],
    unstreamed: AbstractSet[TableId],
    copied: AbstractSet[TableId] | None,
) -> list[TableId]:
    """Tables a pipeline that streams already must copy before it goes on (``snapshot:
    initial`` only): those whose changes the stream did not carry (``unstreamed``: added to
    the publication just now) and, when its initial snapshot ran (``copied`` not None: the
    tables it copied), tables added to the config since. Without the copy their rows from
    before would never reach the target. Read from a view newer than the checkpoint, as a
    resumed copy is: the replayed changes converge on the source's rows."""
    if mode != "initial" or action != "none" or cp is None:
        return []
    late = [t for t in tables if t in unstreamed or (copied is not None and t not in copied)]
    return sorted(late, key=str)


def late_copy(
    *,
    mode: str,
    action: str,
    cp: Checkpoint | None,
    source: Source,
    snaps: SnapshotStore,
    conn: Connection,
    schemas: Mapping[TableId, TableSchema],
    ever_copied: bool,
    log: Any,
) -> list[TableId]:
    """Tables to copy before streaming on (see ``late_tables``), recorded as running copy
    tasks and committed at once, so that a start that fails after this (a target table the
    sink refuses, a crash) still copies them next time: the publication, once altered, no
    longer says which tables were new. With ``snapshot: never`` they are only warned about."""
    unstreamed = source.tables_unstreamed()
    copied = snaps.initial_tables(conn) if ever_copied else None
    late = late_tables(
        mode=mode, action=action, cp=cp, tables=schemas, unstreamed=unstreamed, copied=copied
    )
    if late:
        assert cp is not None
        snaps.begin(conn, INITIAL, [(t, None) for t in late], cp.position.to_text())
        conn.commit()
        log.warning(
            "tables_copied_before_streaming",
            tables=[str(t) for t in late],
            reason="newly configured, or dropped and created again at the source: their "
            "earlier rows are not in the stream",
        )
    elif mode == "never" and unstreamed:
        log.warning(
            "tables_not_copied",
            tables=sorted(str(t) for t in unstreamed),
            reason="newly published (configured, or dropped and created again): their rows "
            "from before this start are not in the stream and snapshot is never; copy them "
            "yourself or run `cdc-sync verify --repair`",
        )
    return late


class InitialSnapshot:
    """Copies the pipeline's tables through the loop (rules, dead letters, audit, sink)."""

    def __init__(
        self,
        *,
        name: str,
        source: Source,
        loop: PipelineLoop,
        conn: Connection,
        checkpoints: CheckpointStore,
        store: SnapshotStore,
        schemas: Mapping[TableId, TableSchema],
        chunk_rows: int,
        token: int,
        log: Any,
        on_progress: OnProgress | None = None,
    ) -> None:
        self.name, self.source, self.loop, self.conn = name, source, loop, conn
        self.checkpoints, self.store, self.schemas = checkpoints, store, schemas
        self.chunk_rows, self.token, self.log = chunk_rows, token, log
        self.on_progress = on_progress

    def run(self, action: str, cp: Checkpoint | None, fresh_allowed: bool) -> Position | None:
        """Do ``action`` (see :func:`plan`); returns the position streaming resumes after."""
        if action == "none":
            return cp.position if cp else None
        if action == "fresh" and not fresh_allowed:
            raise PermanentError(
                f"pipeline {self.name}: snapshot: initial needs to create the replication slot "
                "with an exported snapshot, but create_slot is false; fix: set create_slot: "
                "true on the source, or snapshot: never and copy the tables yourself"
            )
        session = self.source.open_snapshot(fresh=action == "fresh")
        try:
            position = self._begin(action, cp, session)
            if position is None:
                raise PermanentError(
                    f"pipeline {self.name}: the source gave no stream position for the snapshot"
                )
            tasks = self.store.tasks(self.conn, INITIAL, active_only=True)
            self.conn.commit()  # end the read; the writer thread owns the connection now
            started = time.monotonic()
            total = 0
            for task in tasks:
                total += self._copy(task, session, position)
            self.loop.drain_writer()
        finally:
            session.close()
        secs = max(time.monotonic() - started, 1e-6)
        self.log.info(
            "snapshot_finished",
            tables=len(tasks),
            rows=total,
            seconds=round(secs, 1),
            rows_per_second=round(total / secs),
        )
        return position

    def _begin(
        self, action: str, cp: Checkpoint | None, session: SnapshotSession
    ) -> Position | None:
        """Record the tasks (and, for a fresh copy, the stream start) in one transaction."""
        conn = self.conn
        if action == "resume":
            assert cp is not None
            self.log.info("snapshot_resuming", position=cp.position.to_text())
            return cp.position
        self.store.cancel_active(conn, INITIAL)
        position = cp.position if cp is not None else session.position
        if cp is None and position is not None:
            # The stream starts exactly where the copy's read view is: no gap, no overlap.
            self.checkpoints.save(conn, position, None, None, self.token)
        tables = [(t, session.estimate_rows(t)) for t in self.schemas]
        self.store.begin(conn, INITIAL, tables, position.to_text() if position else None)
        conn.commit()
        self.log.info(
            "snapshot_started",
            tables=len(tables),
            position=position.to_text() if position else None,
            rows_estimate=sum(e or 0 for _, e in tables),
        )
        return position

    def _copy(self, task: SnapshotTask, session: SnapshotSession, at: Position) -> int:
        schema = self.schemas[task.table]
        after = resume_key(schema, task.last_key)
        idx = schema.key_indexes
        xid = f"snapshot:{task.id}"
        started, copied, done_before = time.monotonic(), 0, task.rows_done
        # Rows as the source printed them, straight into the target, where both allow it:
        # ~5x the rate of typed rows (measured in bench --mode snapshot).
        as_text = self.loop.takes_copy_text(task.table, schema, after)
        size = self.chunk_rows
        while True:
            text = session.copy_text(task.table, schema, after, size) if as_text else None
            now = datetime.now(UTC)
            if text is not None:
                n = text.rows
                after = text.last_key or after
                if n:
                    self.loop.feed_copy_text(task.table, text, at, xid, now)
            else:
                rows = session.read_chunk(task.table, schema, after, size)
                n = len(rows)
                if rows:
                    after = tuple(rows[-1][i] for i in idx)
                    self.loop.feed_copied(task.table, schema, rows, at, xid, now)
            done = n < size
            copied += n
            last, task_id = key_json(after) if after is not None else None, task.id

            def progress(
                conn: Connection,
                last: list[object] | None = last,
                n: int = n,
                done: bool = done,
                task_id: int = task_id,
            ) -> None:
                if last is None:
                    self.store.finish(conn, task_id)
                else:
                    self.store.progress(conn, task_id, last, n, done)

            self.loop.commit_copied(at, xid, now, progress)
            self._report(task, done_before + copied, copied, started, done, text is not None)
            if done:
                return copied

    def _report(  # noqa: PLR0917
        self,
        task: SnapshotTask,
        rows_done: int,
        copied: int,
        started: float,
        done: bool,
        as_text: bool,
    ) -> None:
        secs = max(time.monotonic() - started, 1e-6)
        rate = copied / secs
        est = task.rows_estimate
        eta = None if not est or rate <= 0 else max(0.0, (est - rows_done) / rate)
        self.log.info(
            "snapshot_progress",
            table=str(task.table),
            rows_done=rows_done,
            rows_estimate=est,
            rows_per_second=round(rate),
            eta_seconds=None if eta is None else round(eta, 1),
            done=done,
            # copy_text: rows loaded as the source printed them; rows: typed rows (rules)
            path="copy_text" if as_text else "rows",
        )
        EVENTS.snapshot_progress(
            self.name, table=str(task.table), rows_done=rows_done, estimate=est, done=done
        )
        if self.on_progress is not None:
            self.on_progress(Progress(task.table, rows_done, est, rate, eta, done))
