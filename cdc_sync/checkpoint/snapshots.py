"""Snapshot progress in the target: which table copies are pending, and where each one is."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from cdc_sync.records import TableId
from cdc_sync.state.tables import state_tables

INITIAL, RESNAPSHOT = "initial", "resnapshot"
REQUESTED, RUNNING, DONE, FAILED, CANCELLED = "requested", "running", "done", "failed", "cancelled"
ACTIVE = (REQUESTED, RUNNING)


@dataclass(frozen=True, slots=True)
class SnapshotTask:
    """One table copy. ``last_key`` is the JSON list of the source key copied last."""

    id: int
    table: TableId
    kind: str
    status: str
    where: str | None
    last_key: str | None
    rows_done: int
    rows_estimate: int | None
    position: str | None
    requested_at: datetime | None = None
    started_at: datetime | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    detail: str | None = None


def _now() -> datetime:
    return datetime.now(UTC)


class SnapshotStore:
    """Rows of ``cdc_sync_snapshots`` for one pipeline; every write joins the caller's
    transaction, so a chunk's rows and its progress commit together (or not at all)."""

    def __init__(self, pipeline: str, schema: str | None = None) -> None:
        self.pipeline = pipeline
        self.table = state_tables(schema).snapshots

    def _task(self, row: sa.Row[tuple[object, ...]]) -> SnapshotTask:
        m = row._mapping
        return SnapshotTask(
            id=int(str(m["id"])),
            table=TableId.parse(str(m["source_table"])),
            kind=str(m["kind"]),
            status=str(m["status"]),
            where=None if m["where_sql"] is None else str(m["where_sql"]),
            last_key=None if m["last_key"] is None else str(m["last_key"]),
            rows_done=int(str(m["rows_done"])),
            rows_estimate=None if m["rows_estimate"] is None else int(str(m["rows_estimate"])),
            position=None if m["position"] is None else str(m["position"]),
            requested_at=m["requested_at"],
            started_at=m["started_at"],
            updated_at=m["updated_at"],
            finished_at=m["finished_at"],
            detail=None if m["detail"] is None else str(m["detail"]),
        )

    def tasks(
        self, conn: sa.Connection, kind: str | None = None, active_only: bool = False
    ) -> list[SnapshotTask]:
        t = self.table
        q = sa.select(t).where(t.c.pipeline == self.pipeline).order_by(t.c.id)
        if kind is not None:
            q = q.where(t.c.kind == kind)
        if active_only:
            q = q.where(t.c.status.in_(ACTIVE))
        return [self._task(r) for r in conn.execute(q)]

    def initial_started(self, conn: sa.Connection) -> bool:
        """Whether an initial snapshot was ever begun for this pipeline (finished or not)."""
        t = self.table
        q = sa.select(sa.func.count()).where(t.c.pipeline == self.pipeline, t.c.kind == INITIAL)
        return bool(conn.execute(q).scalar())

    def initial_tables(self, conn: sa.Connection) -> set[TableId]:
        """Tables an initial snapshot of this pipeline ever began to copy."""
        t = self.table
        q = sa.select(t.c.source_table).where(t.c.pipeline == self.pipeline, t.c.kind == INITIAL)
        return {TableId.parse(str(r[0])) for r in conn.execute(q.distinct())}

    def begin(
        self,
        conn: sa.Connection,
        kind: str,
        tables: Sequence[tuple[TableId, int | None]],
        position: str | None,
    ) -> None:
        """One running task per table (initial snapshot), in the caller's transaction."""
        if not tables:
            return
        now = _now()
        conn.execute(
            sa.insert(self.table),
            [
                {
                    "pipeline": self.pipeline,
                    "source_table": str(table),
                    "kind": kind,
                    "status": RUNNING,
                    "rows_done": 0,
                    "rows_estimate": estimate,
                    "position": position,
                    "requested_at": now,
                    "started_at": now,
                    "updated_at": now,
                }
                for table, estimate in tables
            ],
        )

    def request(self, conn: sa.Connection, table: TableId, where: str | None) -> int:
        """A re-snapshot request for the running daemon to pick up; returns its id."""
        now = _now()
        res = conn.execute(
            sa.insert(self.table).values(
                pipeline=self.pipeline,
                source_table=str(table),
                kind=RESNAPSHOT,
                status=REQUESTED,
                where_sql=where,
                rows_done=0,
                requested_at=now,
            )
        )
        pk = res.inserted_primary_key
        return int(str(pk[0])) if pk else 0

    def started(self, conn: sa.Connection, task_id: int, estimate: int | None) -> None:
        t = self.table
        now = _now()
        conn.execute(
            sa.update(t)
            .where(t.c.id == task_id)
            .values(status=RUNNING, started_at=now, updated_at=now, rows_estimate=estimate)
        )

    def progress(
        self, conn: sa.Connection, task_id: int, last_key: list[object], rows: int, done: bool
    ) -> None:
        """After a chunk: its last key and the rows added; ``done`` when the scan ended."""
        t = self.table
        now = _now()
        values: dict[str, object] = {
            "last_key": json.dumps(last_key, ensure_ascii=False, separators=(",", ":")),
            "rows_done": t.c.rows_done + rows,
            "updated_at": now,
        }
        if done:
            values.update(status=DONE, finished_at=now)
        conn.execute(sa.update(t).where(t.c.id == task_id).values(**values))

    def finish(
        self, conn: sa.Connection, task_id: int, status: str = DONE, detail: str | None = None
    ) -> None:
        t = self.table
        now = _now()
        conn.execute(
            sa.update(t)
            .where(t.c.id == task_id)
            .values(status=status, finished_at=now, updated_at=now, detail=detail)
        )

    def cancel_active(self, conn: sa.Connection, kind: str) -> int:
        """Mark unfinished tasks of ``kind`` cancelled (snapshot: always, restarting)."""
        t = self.table
        res = conn.execute(
            sa.update(t)
            .where(t.c.pipeline == self.pipeline, t.c.kind == kind, t.c.status.in_(ACTIVE))
            .values(status=CANCELLED, finished_at=_now())
        )
        return int(res.rowcount or 0)
