"""Run pipelines: set up state, resume from the checkpoint, retry transient failures."""

from __future__ import annotations

import gc
import os
import socket
import sys
import threading
from dataclasses import dataclass

from sqlalchemy import Connection
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_never,
    wait_random_exponential,
)

from cdc_sync import logs
from cdc_sync.audit.writer import AuditWriter
from cdc_sync.checkpoint.store import Checkpoint, CheckpointStore
from cdc_sync.config.models import Config
from cdc_sync.errors import CdcSyncError, PermanentError, ShutdownRequested, TransientError
from cdc_sync.runtime.classify import classify
from cdc_sync.runtime.pipeline import PipelineLoop
from cdc_sync.runtime.stop import StopFlag
from cdc_sync.runtime.wiring import build_source, may_create, table_map, target_engine
from cdc_sync.sinks.sql.sink import SqlSink
from cdc_sync.sources.base import Source
from cdc_sync.state.migrate import upgrade

_SWITCH_INTERVAL_S = 0.0005
_GC_THRESHOLDS = (50_000, 20, 100)

LEASE_SECONDS = 60


@dataclass
class Outcome:
    pipeline: str
    result: str  # caught_up | stopped | failed
    error: CdcSyncError | None = None


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_once(config: Config, name: str, stop: StopFlag, until_caught_up: bool) -> str:
    """One attempt: connect, prepare, stream until stopped/caught up; raises classified errors."""
    log = logs.get().bind(pipeline=name)
    pc = config.pipelines[name]
    targets = table_map(config, name)
    tc = config.targets[pc.target]
    engine = target_engine(config, name)
    source = build_source(config, name)
    try:
        with engine.connect() as conn:
            upgrade(conn, schema=tc.state_schema)
            conn.commit()
            checkpoints = CheckpointStore(name, schema=tc.state_schema)
            token = checkpoints.acquire(conn, owner_id(), LEASE_SECONDS)
            conn.commit()
            cp = checkpoints.load(conn)
            schemas = source.prepare(create=may_create(config, name))
            if cp is None:
                cp = _initial_checkpoint(conn, checkpoints, source, token)
            sink = SqlSink(create_tables=tc.create_tables)
            # Only reads since the last commit; on MySQL the DDL of ensure_table must start
            # outside a transaction, or it would commit that transaction implicitly.
            conn.commit()
            for table, schema in schemas.items():
                sink.ensure_table(conn, schema, targets[table])
            conn.commit()
            log.info(
                "pipeline_started",
                resume_after=cp.position.to_text() if cp else None,
                tables=len(schemas),
            )
            loop = PipelineLoop(
                name=name,
                config=pc,
                source=source,
                conn=conn,
                sink=sink,
                checkpoints=checkpoints,
                audit=AuditWriter(name, pc.audit, schema=tc.state_schema),
                targets=targets,
                token=token,
                stop=stop,
                log=log,
                until_caught_up=until_caught_up,
            )
            loop.known_schemas(schemas)
            return loop.run(cp.position if cp else None)
    except ShutdownRequested:
        return "stopped"
    except Exception as e:  # classified right here; nothing is swallowed
        raise classify(e, f"pipeline {name}") from e
    finally:
        source.close()
        engine.dispose()


def _initial_checkpoint(
    conn: Connection, checkpoints: CheckpointStore, source: Source, token: int
) -> Checkpoint | None:
    """A new pipeline on a source without a server-side slot (MySQL / MariaDB) starts at the
    source's current head. That start is stored before streaming: otherwise a crash before
    the first commit would restart at a later head and lose what was written in between.
    A PostgreSQL slot keeps its start point itself (``start_position`` is absent there)."""
    start = getattr(source, "start_position", None)
    if start is None:
        return None
    position = start()
    checkpoints.save(conn, position, None, None, token)
    conn.commit()
    return checkpoints.load(conn)


def run_pipeline(config: Config, name: str, stop: StopFlag, until_caught_up: bool) -> Outcome:
    """Retry transient failures with jittered exponential backoff, resuming at the checkpoint."""
    log = logs.get().bind(pipeline=name)
    rc = config.pipelines[name].retry

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "transient_error_retrying",
            attempt=state.attempt_number,
            error=str(exc),
            sleep_seconds=round(state.upcoming_sleep, 2),
        )

    def sleep(seconds: float) -> None:
        if stop.wait(seconds):
            raise ShutdownRequested("stop requested during backoff")

    retrying = Retrying(
        retry=retry_if_exception_type(TransientError),
        wait=wait_random_exponential(multiplier=rc.initial_seconds, max=rc.max_seconds),
        stop=stop_after_attempt(rc.max_attempts) if rc.max_attempts else stop_never,
        before_sleep=before_sleep,
        sleep=sleep,
        reraise=True,
    )
    try:
        result = retrying(run_once, config, name, stop, until_caught_up)
    except ShutdownRequested:
        result = "stopped"
    except CdcSyncError as e:
        log.error("pipeline_failed", error_class=type(e).__name__, error=str(e))
        return Outcome(name, "failed", e)
    log.info("pipeline_finished", result=result)
    return Outcome(name, result)


def run_all(
    config: Config, names: list[str], stop: StopFlag, until_caught_up: bool
) -> list[Outcome]:
    """Each pipeline in its own thread with its own connections; one failing stops only itself."""
    # The writer thread waits on the target many times per batch (COPY chunks, statements).
    # With the default 5 ms switch interval it then waits up to 5 ms more for the GIL held by
    # the decoding thread, each time: measured as the main bottleneck of a backlog drain.
    sys.setswitchinterval(_SWITCH_INTERVAL_S)
    # Every row change allocates a few tuples that reference counting frees; the cyclic
    # collector's default young-generation pass every 700 allocations, and its older-generation
    # passes over everything imported at start, cost up to a quarter of the decode and audit
    # time (measured). Start-up objects are frozen out of collection; passes are rarer.
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)
    if len(names) == 1:
        return [run_pipeline(config, names[0], stop, until_caught_up)]
    results: dict[str, Outcome] = {}

    def work(n: str) -> None:
        results[n] = run_pipeline(config, n, stop, until_caught_up)

    threads = [threading.Thread(target=work, args=(n,), name=f"pipeline-{n}") for n in names]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.2)  # keep the main thread responsive to signals
    return [results.get(n, Outcome(n, "failed", PermanentError("thread died"))) for n in names]
