"""Re-snapshot while streaming: DBLog's watermark method, driven from the pipeline loop."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from cdc_sync.audit.keys import from_json, json_safe
from cdc_sync.checkpoint.snapshots import SnapshotStore, SnapshotTask
from cdc_sync.errors import PermanentError
from cdc_sync.records import ChangeRecord, Op, Position, Row, TableId, TableSchema
from cdc_sync.runtime.signal_check import fix_text
from cdc_sync.sources.base import Source

Emit = Callable[[TableId, TableSchema, list[Row], Position, str, datetime], None]
InTx = Callable[[Callable[[Connection], None]], None]
Poll = Callable[[], list[SnapshotTask]]

_POLL_SECONDS = 1.0


def _hashable(key: tuple[object, ...]) -> object:
    # Array key columns decode to lists; their repr is exact for equal decoded values.
    try:
        hash(key)
    except TypeError:
        return repr(key)
    return key


def resume_key(schema: TableSchema, last_key: str | None) -> tuple[object, ...] | None:
    """The stored JSON key back to canonical values (None: start from the first row)."""
    if last_key is None:
        return None
    values = json.loads(last_key)
    return tuple(
        from_json(schema.column(name).type, v) for name, v in zip(schema.key, values, strict=True)
    )


def key_json(key: tuple[object, ...]) -> list[object]:
    return [json_safe(v) for v in key]


class Resnapshot:
    """Copies requested tables chunk by chunk while the stream goes on, never letting a
    copied row overwrite a newer streamed change.

    Per chunk (between source transactions): write a low watermark into the signal table,
    read the chunk (keys after the last copied one), write a high watermark. In the stream,
    every change of that table between the two watermarks removes its key from the chunk:
    the stream carries a state at least as new. At the high watermark the rest of the chunk
    is applied, inside that source transaction, with the task's progress (one target
    transaction). A crash loses only the chunk in memory; watermarks replayed after a
    restart carry another id and are ignored, and the chunk is read again.
    """

    def __init__(
        self,
        *,
        pipeline: str,
        source: Source,
        signal_table: TableId,
        schemas: Mapping[TableId, TableSchema],
        store: SnapshotStore,
        poll: Poll,
        chunk_rows: int,
        emit: Emit,
        in_tx: InTx,
        log: Any,
    ) -> None:
        self.pipeline, self.source, self.signal_table = pipeline, source, signal_table
        self.schemas, self.store, self.poll = dict(schemas), store, poll
        self.chunk_rows, self.emit, self.in_tx, self.log = chunk_rows, emit, in_tx, log
        self.window_open = False
        self._task: SnapshotTask | None = None
        self._after: tuple[object, ...] | None = None
        self._chunk: dict[object, Row] | None = None
        self._full = False  # the chunk came back with chunk_rows rows: more may follow
        self._marks: tuple[str, str] | None = None
        self._next_poll = 0.0
        self._started = 0.0
        self._done_rows = 0
        self._finished: set[int] = set()

    # -- called by the loop between source transactions ------------------------------------

    def tick(self) -> None:
        """Start the next chunk when none is in flight (polling for requests when idle)."""
        if self._chunk is not None:
            return
        if self._task is None:
            now = time.monotonic()
            if now < self._next_poll:
                return
            self._next_poll = now + _POLL_SECONDS
            # A finished task's 'done' commits with the batch that holds its last chunk; until
            # then the poll still sees it running and must not start it over.
            tasks = [t for t in self.poll() if t.id not in self._finished]
            if not tasks:
                return
            self._begin(tasks[0])
            if self._task is None:
                return
        self._read_chunk()

    def _begin(self, task: SnapshotTask) -> None:
        schema = self.schemas.get(task.table)
        if schema is None:
            self.in_tx(
                lambda c: self.store.finish(
                    c, task.id, "failed", f"table {task.table} is not in the pipeline"
                )
            )
            self.log.error("resnapshot_failed", table=str(task.table), reason="not in pipeline")
            self._finished.add(task.id)
            return
        self._task, self._after = task, resume_key(schema, task.last_key)
        self._started, self._done_rows = time.monotonic(), task.rows_done
        if task.status != "running":
            self.in_tx(lambda c: self.store.started(c, task.id, None))
        self.log.info(
            "resnapshot_started",
            table=str(task.table),
            task=task.id,
            where=task.where is not None,
            resume=task.last_key is not None,
        )

    def _read_chunk(self) -> None:
        task = self._task
        assert task is not None
        schema = self.schemas[task.table]
        tag = f"{task.id}:{uuid.uuid4().hex}"
        low, high = f"{tag}:low", f"{tag}:high"
        if not self._signal(task, low):
            return
        try:
            rows = self.source.read_chunk(
                task.table, schema, self._after, self.chunk_rows, task.where
            )
        except PermanentError as e:
            # A bad --where or a vanished table ends this request, not the pipeline.
            self._fail(task, str(e))
            return
        if not self._signal(task, high):
            return
        idx = schema.key_indexes
        self._chunk = {_hashable(tuple(r[i] for i in idx)): r for r in rows}
        if rows:
            self._after = tuple(rows[-1][i] for i in idx)
        self._full = len(rows) >= self.chunk_rows
        self._marks = (low, high)

    def _signal(self, task: SnapshotTask, value: str) -> bool:
        """Write a watermark; False when it cannot be, for good (the task has failed then).

        A signal table of another shape, missing, or not writable by the daemon's user ends
        the re-snapshot with the fix in its reason (what ``snapshot --wait`` prints), not
        the pipeline: streaming needs no signal table. Transient errors go to the loop."""
        try:
            self.source.write_signal(self.pipeline, value)
        except PermanentError as e:
            from cdc_sync.sources.mysql.source import MysqlCapture  # noqa: PLC0415  (rare)

            mysql = isinstance(self.source, MysqlCapture)
            self._fail(task, f"{e}. Fix: {fix_text(mysql, self.signal_table)}")
            return False
        return True

    def _fail(self, task: SnapshotTask, reason: str) -> None:
        """End ``task`` as failed with ``reason`` (stored and logged: no row values in it)."""
        self.in_tx(lambda c: self.store.finish(c, task.id, "failed", reason))
        self.log.error("resnapshot_failed", table=str(task.table), task=task.id, error=reason)
        self._task, self._chunk, self._marks = None, None, None
        self._finished.add(task.id)

    # -- called by the loop for stream records ---------------------------------------------

    def on_signal(self, rec: ChangeRecord) -> None:
        if self._marks is None or rec.after is None or rec.op is Op.DELETE:
            return
        value = rec.after[rec.schema.names.index("value")]
        if value == self._marks[0]:
            self.window_open = True
        elif value == self._marks[1]:
            self._close_window(rec)

    @property
    def watching(self) -> bool:
        """A chunk is waiting for its high watermark: stream changes may supersede rows."""
        return self._chunk is not None

    def saw(self, rec: ChangeRecord) -> None:
        """A streamed change the chunk may not reflect: inside the window, or before it from
        a transaction the chunk's snapshot did not see. Its key's chunk row is stale: drop
        it (the stream carries a state at least as new)."""
        task, chunk = self._task, self._chunk
        if task is None or chunk is None or rec.table != task.table:
            return
        if not self.window_open and self.source.last_chunk_sees(rec.xid):
            return  # before the low watermark and in the chunk's snapshot: already in it
        if rec.op is Op.TRUNCATE:
            chunk.clear()
            return
        chunk.pop(_hashable(rec.key()), None)
        old = rec.old_key()
        if old is not None:
            chunk.pop(_hashable(old), None)

    def _close_window(self, rec: ChangeRecord) -> None:
        task, chunk = self._task, self._chunk
        assert task is not None and chunk is not None
        self.window_open, self._marks, self._chunk = False, None, None
        schema = self.schemas[task.table]
        rows = list(chunk.values())
        self.emit(task.table, schema, rows, rec.position, rec.xid, rec.commit_time)
        done = not self._full
        after = self._after
        copied = len(rows)
        self._done_rows += copied

        def progress(conn: Connection) -> None:
            if after is None:
                self.store.finish(conn, task.id)
            else:
                self.store.progress(conn, task.id, key_json(after), copied, done)

        self.in_tx(progress)
        if done:
            secs = max(time.monotonic() - self._started, 1e-6)
            self.log.info(
                "resnapshot_finished",
                table=str(task.table),
                task=task.id,
                rows=self._done_rows,
                rows_per_second=round(self._done_rows / secs),
            )
            self._task = None
            self._finished.add(task.id)
            self._next_poll = 0.0
