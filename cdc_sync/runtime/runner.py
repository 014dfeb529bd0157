"""Run pipelines: set up state, resume from the checkpoint, retry transient failures."""

from __future__ import annotations

import gc
import sys
import threading
from dataclasses import dataclass
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_never,
    wait_random_exponential,
)

from cdc_sync import logs
from cdc_sync.audit.dead_letters import DeadLetterStore
from cdc_sync.audit.writer import AuditWriter
from cdc_sync.checkpoint.snapshots import INITIAL, SnapshotStore
from cdc_sync.checkpoint.store import CheckpointStore
from cdc_sync.config.models import Config
from cdc_sync.errors import (
    CdcSyncError,
    FencedError,
    PermanentError,
    ShutdownRequested,
    TransientError,
)
from cdc_sync.runtime.backfills import backfiller
from cdc_sync.runtime.classify import classify
from cdc_sync.runtime.cycle_check import refused
from cdc_sync.runtime.events import EVENTS
from cdc_sync.runtime.lease import (
    KeptLease,
    LeaseKeeper,
    end_stalled_writers,
    evict_stale_reader,
    release_lease,
    wait_for_lease,
)
from cdc_sync.runtime.link import LinkApplier
from cdc_sync.runtime.link_stamp import Stamper
from cdc_sync.runtime.pipeline import PipelineLoop, log_schema
from cdc_sync.runtime.rules import PipelineRules
from cdc_sync.runtime.run_setup import (
    initial_checkpoint,
    link_parts,
    link_stamper,
    resnapshot,
    same_source,
)
from cdc_sync.runtime.self_loop import check_not_itself
from cdc_sync.runtime.snapshot import InitialSnapshot, OnProgress, late_copy
from cdc_sync.runtime.snapshot import plan as snapshot_plan
from cdc_sync.runtime.stop import STOP_GRACE_SECONDS, StopFlag
from cdc_sync.runtime.target_watch import TargetWatch
from cdc_sync.runtime.wiring import build_source, may_create, table_map, target_engine
from cdc_sync.sinks.sql.sink import SqlSink
from cdc_sync.state.migrate import upgrade

_SWITCH_INTERVAL_S = 0.0005
_GC_THRESHOLDS = (50_000, 20, 100)


@dataclass
class Outcome:
    pipeline: str
    result: str  # caught_up | stopped | failed
    error: CdcSyncError | None = None


def run_once(
    config: Config,
    name: str,
    stop: StopFlag,
    until_caught_up: bool,
    *,
    snapshot_only: bool = False,
    on_progress: OnProgress | None = None,
    kept: KeptLease | None = None,
) -> str:
    """One attempt: connect, prepare, copy what the snapshot mode asks for, stream until
    stopped / caught up (``snapshot_only``: return after the copy); raises classified
    errors. The lease is released on the way out unless a retry may follow (a transient
    error): then it is kept, its token in ``kept`` for the caller to release should no
    retry come after all."""
    log = logs.get().bind(pipeline=name)
    pc = config.pipelines[name]
    targets = table_map(config, name)
    tc = config.targets[pc.target]
    engine = target_engine(config, name, daemon=True)
    source = build_source(config, name)
    checkpoints = CheckpointStore(name, schema=tc.state_schema)
    token: int | None = None
    keeper: LeaseKeeper | None = None
    stamper: Stamper | None = None
    link: LinkApplier | None = None
    watch: TargetWatch | None = None
    retry_may_follow = False
    try:
        try:
            connection = engine.connect()
        except Exception as e:  # classified here to name the side
            raise classify(e, "cannot connect to the target database") from e
        with connection as conn:
            watch = TargetWatch(engine, conn, stop, STOP_GRACE_SECONDS, log)
            check_not_itself(source.instance(), conn, targets)  # before anything is made there
            upgrade(conn, schema=tc.state_schema)
            conn.commit()
            # Invariant 6: a standby waits here while another daemon holds the pipeline;
            # one-shot runs (`--until-caught-up`, a snapshot copy) fail instead, naming it.
            one_shot = until_caught_up or snapshot_only
            token = wait_for_lease(conn, checkpoints, stop, log, wait=not one_shot)
            evict_stale_reader(config, name, stop, log)
            end_stalled_writers(conn, log)
            keeper = LeaseKeeper(engine, checkpoints, token, log)
            cp = checkpoints.load(conn)
            same_source(conn, checkpoints, source, cp)
            schemas = source.prepare(create=may_create(config, name))
            snaps = SnapshotStore(name, schema=tc.state_schema)
            ever = snaps.initial_started(conn)
            action = snapshot_plan(
                pc.snapshot, cp, snaps.tasks(conn, INITIAL, active_only=True), ever
            )
            # Right after prepare, before anything below can fail: the copy is recorded (and
            # then resumed like an interrupted one) even if this start goes no further.
            if late_copy(
                mode=pc.snapshot, action=action, cp=cp, source=source, snaps=snaps,
                conn=conn, schemas=schemas, ever_copied=ever, log=log,
            ):  # fmt: skip
                action = "resume"
            rules = PipelineRules(config, name)
            # Target-shaped schemas (renames, drops, constants, casts): what the sink creates.
            compiled = rules.compile_all(schemas)
            shaped = {t: tt.schema for t, tt in compiled.items()}
            if cp is None and action == "none":
                cp = initial_checkpoint(conn, checkpoints, source, token)
            link, tag = link_parts(config, name, conn, log)
            sink = SqlSink(create_tables=tc.create_tables)
            # Only reads since the last commit; on MySQL the DDL of ensure_table must start
            # outside a transaction, or it would commit that transaction implicitly.
            conn.commit()
            for table, schema in shaped.items():
                log_schema(log, table, schema, targets[table])
                fill = backfiller(source, table, compiled[table])
                sink.ensure_table(conn, schema, targets[table], fill)
            conn.commit()
            EVENTS.pipeline_started(name)
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
                rules=rules,
                dead_letters=DeadLetterStore(tc.state_schema),
                token=token,
                stop=stop,
                log=log,
                until_caught_up=until_caught_up,
                link=link,
                tag=tag,
            )
            loop.stamper = stamper = link_stamper(config, name)
            loop.known_schemas(shaped)
            try:
                resume = InitialSnapshot(
                    name=name,
                    source=source,
                    loop=loop,
                    conn=conn,
                    checkpoints=checkpoints,
                    store=snaps,
                    schemas=schemas,
                    chunk_rows=pc.snapshot_chunk_rows,
                    token=token,
                    log=log,
                    on_progress=on_progress,
                ).run(action, cp, fresh_allowed=may_create(config, name))
            except BaseException:
                loop.close_writer()
                raise
            if snapshot_only:
                loop.close_writer()
                return "snapshot_done" if action != "none" else "nothing_to_copy"
            if pc.signal_table:
                loop.resnapshot = resnapshot(
                    engine=engine,
                    source=source,
                    store=snaps,
                    schemas=schemas,
                    loop=loop,
                    log=log,
                    config=config,
                    name=name,
                )
            return loop.run(resume)
    except ShutdownRequested:
        return "stopped"
    except Exception as e:  # classified right here; nothing is swallowed
        if watch is not None and watch.cancelled and stop.is_set:
            # The statement a stop cancelled: its transaction rolled back, nothing to report.
            log.warning("stopped_after_cancel", error_class=type(e).__name__)
            return "stopped"
        err = classify(e, f"pipeline {name}")
        retry_may_follow = isinstance(err, TransientError)
        raise err from e
    finally:
        if watch is not None:
            watch.close()
        if stamper is not None:
            stamper.close()
        source.close()
        # Nothing of this attempt commits any more (the writer is closed). A retry takes a
        # kept lease back at once (same owner); any other end releases it now: a standby
        # or an `offsets reset` need not wait for it to expire. A crash leaves it to expire.
        if keeper is not None:
            keeper.close(release=not retry_may_follow)
        elif token is not None and not retry_may_follow:
            release_lease(engine, checkpoints, token, log)  # ended before the keeper began
        if kept is not None and token is not None:
            kept.token = token if retry_may_follow else None
        engine.dispose()


def retrying(config: Config, name: str, stop: StopFlag) -> Retrying:
    """Retries of transient failures with jittered exponential backoff (the pipeline's
    ``retry`` settings); each attempt resumes at the checkpoint."""
    log = logs.get().bind(pipeline=name)
    rc = config.pipelines[name].retry

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        EVENTS.retrying(
            name,
            attempt=state.attempt_number,
            error_class=type(exc).__name__,
            error=str(exc),
            sleep=state.upcoming_sleep,
        )
        log.warning(
            "transient_error_retrying",
            attempt=state.attempt_number,
            error=str(exc),
            sleep_seconds=round(state.upcoming_sleep, 2),
        )

    def sleep(seconds: float) -> None:
        if stop.wait(seconds):
            raise ShutdownRequested("stop requested during backoff")

    return Retrying(
        retry=retry_if_exception_type(TransientError),
        wait=wait_random_exponential(multiplier=rc.initial_seconds, max=rc.max_seconds),
        stop=stop_after_attempt(rc.max_attempts) if rc.max_attempts else stop_never,
        before_sleep=before_sleep,
        sleep=sleep,
        reraise=True,
    )


def run_pipeline(config: Config, name: str, stop: StopFlag, until_caught_up: bool) -> Outcome:
    """Retry transient failures with jittered exponential backoff, resuming at the checkpoint."""
    log = logs.get().bind(pipeline=name)
    attempts = retrying(config, name, stop)
    if not until_caught_up:
        # In the daemon only: verify (never repair) every `verify.every`, on connections of
        # its own; a failed run is recorded and logged, the stream goes on. Imported here:
        # a drain (--until-caught-up) does not pay for the verify modules at start-up.
        from cdc_sync.runtime.verify import start_scheduled_verify  # noqa: PLC0415

        start_scheduled_verify(config, name, stop)
    kept = KeptLease()
    try:
        while True:
            try:
                result = attempts(run_once, config, name, stop, until_caught_up, kept=kept)
            except ShutdownRequested:
                result = "stopped"
            except FencedError as e:
                if until_caught_up:
                    return _failed(name, e, log)
                # Another daemon took the pipeline over (this one was paused or cut off past
                # its lease): nothing was committed with the stale token. Stand by again.
                log.warning("lease_lost_standing_by", error=str(e))
                continue
            except CdcSyncError as e:
                return _failed(name, e, log)
            break
    finally:
        # Whatever ended the run (retries used up, a stop during the backoff), no retry
        # takes back the lease the last failed attempt kept: released now.
        kept.release(config, name, log)
    log.info("pipeline_finished", result=result)
    EVENTS.finished(name, result)
    return Outcome(name, result)


def _failed(name: str, e: CdcSyncError, log: Any) -> Outcome:
    log.error("pipeline_failed", error_class=type(e).__name__, error=str(e))
    EVENTS.failed(name, error_class=type(e).__name__, error=str(e))
    EVENTS.finished(name, "failed")
    return Outcome(name, "failed", e)


def run_all(
    config: Config, names: list[str], stop: StopFlag, until_caught_up: bool
) -> list[Outcome]:
    """Each pipeline in its own thread with its own connections; one failing stops only itself."""
    # Before anything is made anywhere: pipelines of this config that feed each other in a
    # cycle (looked at over all of them: `-p` cannot dodge it) fail; the others run.
    results = {
        n: _failed(n, e, logs.get().bind(pipeline=n)) for n, e in refused(config, names).items()
    }
    todo = [n for n in names if n not in results]
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
    if len(todo) == 1:  # in the main thread
        results[todo[0]] = run_pipeline(config, todo[0], stop, until_caught_up)
        todo = []

    def work(n: str) -> None:
        results[n] = run_pipeline(config, n, stop, until_caught_up)

    threads = [threading.Thread(target=work, args=(n,), name=f"pipeline-{n}") for n in todo]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.2)  # keep the main thread responsive to signals
    return [results.get(n, Outcome(n, "failed", PermanentError("thread died"))) for n in names]
