"""``cdc-sync snapshot``: run the initial copy, request re-snapshots, report their progress."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import sqlalchemy as sa

from cdc_sync.checkpoint.snapshots import ACTIVE, SnapshotStore, SnapshotTask
from cdc_sync.checkpoint.store import CheckpointStore
from cdc_sync.config.models import Config
from cdc_sync.errors import CdcSyncError, PermanentError, ShutdownRequested
from cdc_sync.records import TableId
from cdc_sync.runtime.classify import classify
from cdc_sync.runtime.lease import TTL_SECONDS, holder_gone
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


# How long --wait goes on without a daemon on the pipeline before it gives up: one whose
# process is provably gone (this host) gets a service manager's restart's worth; one on
# another host may be between retries (no lease while backing off) for retry.max_seconds.
_GONE_SECONDS = 15.0
_BACKOFF_MARGIN = 5.0
# A running daemon picks a request up within a second, between source transactions.
_UNPICKED_SECONDS = 30.0
_UNPICKED = (
    "re-snapshot #{id} is still requested after {secs:.0f}s while a daemon runs the pipeline: "
    "it starts between source transactions (a long one delays it); a daemon started before "
    "signal_table was set never takes it: restart that daemon"
)


@dataclass(frozen=True)
class _Daemon:
    """The pipeline's lease as stored: a live holder, or the last one and whether it ran here."""

    live: bool
    owner: str | None


def _daemon(config: Config, name: str) -> _Daemon:
    store = CheckpointStore(name, schema=_store(config, name)[1])
    t = store.table
    with _state(config, name, "cannot read the pipeline's lease") as conn:
        live = store.lease_holder(conn)
        owner = conn.execute(sa.select(t.c.owner).where(t.c.pipeline == name)).scalar()
        conn.commit()
    return _Daemon(live is not None, live or (str(owner) if owner else None))


def _running(daemon: _Daemon) -> bool:
    """A live lease, or its holder's process still runs on this host (between two attempts
    after a transient error it holds no live lease, but it is still the pipeline's daemon)."""
    if daemon.live:
        return True
    owner = daemon.owner
    if owner is None or owner.rpartition(":")[0] != socket.gethostname():
        return False
    return not holder_gone(owner)


def _no_daemon(name: str, task: SnapshotTask, daemon: _Daemon, seconds: float) -> PermanentError:
    last = f" (last held by {daemon.owner})" if daemon.owner else ""
    return PermanentError(
        f"pipeline {name}: no daemon has been running it for {seconds:.0f}s{last}, so "
        f"re-snapshot #{task.id} of {task.table} is not progressing (still {task.status}); "
        "it continues when the daemon starts again: see the daemon's log for why it stopped "
        "(cdc-sync check -c <config> may name the cause), then start it"
    )


def wait(
    config: Config,
    name: str,
    task_id: int,
    stop: StopFlag,
    on_change: Callable[[SnapshotTask], None],
    *,
    poll_seconds: float = 1.0,
    on_note: Callable[[str], None] | None = None,
) -> SnapshotTask:
    """Poll one task until it ends (or a stop is asked for); reports each change, and once
    to ``on_note`` a request no running daemon has taken after a while.

    The daemon does the copy: when none runs the pipeline (it stopped, maybe on an error
    that left the task as it was) for longer than a restart or a retry takes, waiting is
    pointless: PermanentError, naming it."""
    last: SnapshotTask | None = None
    backoff = config.pipelines[name].retry.max_seconds + TTL_SECONDS + _BACKOFF_MARGIN
    absent_since: float | None = None
    began, noted = time.monotonic(), on_note is None
    while True:
        found = [t for t in tasks(config, name) if t.id == task_id]
        if not found:
            raise PermanentError(f"snapshot task {task_id} of pipeline {name} does not exist")
        task = found[0]
        if last is None or task.rows_done != last.rows_done or task.status != last.status:
            on_change(task)
        last = task
        if task.status not in ACTIVE:
            return task
        daemon = _daemon(config, name)
        now = time.monotonic()
        if _running(daemon):
            absent_since = None
            if not noted and task.status == "requested" and now - began >= _UNPICKED_SECONDS:
                assert on_note is not None
                on_note(_UNPICKED.format(id=task.id, secs=now - began))
                noted = True
        else:
            absent_since = now if absent_since is None else absent_since
            gone = daemon.owner is None or holder_gone(daemon.owner)
            if now - absent_since >= (_GONE_SECONDS if gone else backoff):
                raise _no_daemon(name, task, daemon, now - absent_since)
        if stop.wait(poll_seconds):
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
