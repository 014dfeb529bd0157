"""``cdc-sync snapshot``: run the initial copy, request re-snapshots, report their progress."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import sqlalchemy as sa

from cdc_sync.checkpoint.snapshots import ACTIVE, SnapshotStore, SnapshotTask
from cdc_sync.config.models import Config
from cdc_sync.errors import CdcSyncError, PermanentError, ShutdownRequested
from cdc_sync.records import TableId
from cdc_sync.runtime.classify import classify
from cdc_sync.runtime.runner import retrying, run_once
from cdc_sync.runtime.snapshot import OnProgress
from cdc_sync.runtime.stop import StopFlag
from cdc_sync.runtime.wiring import target_engine
from cdc_sync.state.migrate import upgrade

SIGNAL_DDL = (
    "CREATE TABLE {t} (pipeline varchar(100) PRIMARY KEY, value varchar(200) NOT NULL, "
    "updated_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP)"
)


def initial(config: Config, name: str, stop: StopFlag, on_progress: OnProgress) -> str:
    """Copy what the pipeline's snapshot mode asks for at a start, then return (no stream).
    Transient failures are retried as the daemon retries them (each attempt resumes after
    the last committed chunk): a network blip does not end a long copy."""
    attempts = retrying(config, name, stop)
    try:
        return attempts(
            run_once, config, name, stop, False, snapshot_only=True, on_progress=on_progress
        )
    except ShutdownRequested:
        return "stopped"


def _store(config: Config, name: str) -> tuple[SnapshotStore, str | None]:
    schema = config.targets[config.pipelines[name].target].state_schema
    return SnapshotStore(name, schema=schema), schema


@contextlib.contextmanager
def _state(config: Config, name: str, what: str) -> Iterator[sa.Connection]:
    """A target connection with the state tables migrated; driver errors classified."""
    _, schema = _store(config, name)
    engine = target_engine(config, name)
    try:
        with engine.connect() as conn:
            upgrade(conn, schema=schema)
            yield conn
    except CdcSyncError:
        raise
    except Exception as e:
        raise classify(e, f"pipeline {name}: {what}") from e
    finally:
        engine.dispose()


def request(config: Config, name: str, table: str, where: str | None) -> int:
    """Queue a re-snapshot of ``table`` (optionally a slice) for the running daemon."""
    pc = config.pipelines[name]
    tid = TableId.parse(table)
    if str(tid) not in pc.tables and table not in pc.tables:
        raise PermanentError(
            f"--table {table}: not a table of pipeline {name} ({', '.join(pc.tables)})"
        )
    if pc.signal_table is None:
        raise PermanentError(
            f"pipeline {name} has no signal_table: a re-snapshot while streaming needs one for "
            "its watermarks; fix: set pipelines." + name + ".signal_table: public.cdc_sync_signal "
            "(the daemon creates it when it may, or run "
            + SIGNAL_DDL.format(t="public.cdc_sync_signal")
            + " on the source and grant the daemon's user INSERT, UPDATE on it)"
        )
    store, _ = _store(config, name)
    with _state(config, name, "cannot queue the re-snapshot") as conn:
        task_id = store.request(conn, tid, where)
        conn.commit()
        return task_id


def tasks(config: Config, name: str, active_only: bool = False) -> list[SnapshotTask]:
    store, _ = _store(config, name)
    with _state(config, name, "cannot read snapshot progress") as conn:
        found = store.tasks(conn, active_only=active_only)
        conn.commit()
        return found


def wait(
    config: Config,
    name: str,
    task_id: int,
    stop: StopFlag,
    on_change: Callable[[SnapshotTask], None],
    *,
    poll_seconds: float = 1.0,
) -> SnapshotTask:
    """Poll one task until it ends (or a stop is asked for); reports each change."""
    last: SnapshotTask | None = None
    while True:
        found = [t for t in tasks(config, name) if t.id == task_id]
        if not found:
            raise PermanentError(f"snapshot task {task_id} of pipeline {name} does not exist")
        task = found[0]
        if last is None or task.rows_done != last.rows_done or task.status != last.status:
            on_change(task)
        last = task
        if task.status not in ACTIVE or stop.wait(poll_seconds):
            return task


def describe(task: SnapshotTask) -> str:
    """One line per task for humans: table, status, rows, rate and age."""
    est = f"/{task.rows_estimate:,}" if task.rows_estimate else ""
    since = task.started_at or task.requested_at
    end = task.finished_at
    secs = (end - since).total_seconds() if end and since else None
    rate = f", {task.rows_done / secs:,.0f} rows/s" if secs and secs > 0 else ""
    where = f" where {task.where}" if task.where else ""
    detail = f" ({task.detail})" if task.detail else ""
    return (
        f"#{task.id} {task.kind} {task.table}{where}: {task.status}, "
        f"{task.rows_done:,}{est} rows{rate}{detail}"
    )
