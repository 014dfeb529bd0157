"""``cdc-sync verify``: compare source and target table by table, re-check, repair, record."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from cdc_sync import logs
from cdc_sync.audit.dead_letters import DeadLetterStore
from cdc_sync.audit.writer import AuditWriter
from cdc_sync.checkpoint.store import CheckpointStore
from cdc_sync.config.models import Config
from cdc_sync.errors import CdcSyncError, ConfigError
from cdc_sync.records import Position, TableId
from cdc_sync.runtime.classify import classify
from cdc_sync.runtime.events import EVENTS
from cdc_sync.runtime.rules import PipelineRules
from cdc_sync.runtime.stop import StopFlag
from cdc_sync.runtime.verify_fix import Settle, recheck, repair, rescan_hashed_extras
from cdc_sync.runtime.verify_refused import Refusal, Refusals
from cdc_sync.runtime.verify_scan import Shaper, scan_table
from cdc_sync.runtime.wiring import build_source, table_map, target_engine
from cdc_sync.sinks.sql.read import TargetReader
from cdc_sync.sinks.sql.sink import SqlSink
from cdc_sync.sources.base import Source
from cdc_sync.state.migrate import upgrade
from cdc_sync.state.tables import state_tables


@dataclass
class TableReport:
    table: str
    target: str
    mode: str  # ordered (merge in key order) | lookup (keys looked up; seen-key set)
    rows_checked: int = 0
    target_rows: int = 0
    missing: int = 0
    extra: int = 0
    different: int = 0
    refused: int = 0  # differing keys whose source row a rule refuses (dead letters)
    rechecked: int = 0  # keys that differed during the scan and were looked at again
    unchecked: int = 0  # differing keys beyond the kept maximum: counted, not re-checked
    repaired: int = 0
    # --repair: keys the target refused to take (a CHECK or unique constraint, a NOT NULL):
    # left as they were, dead-lettered like the stream does; the first SHOWN are listed.
    repair_refused: int = 0
    refusals: list[Refusal] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def differences(self) -> int:
        return self.missing + self.extra + self.different + self.unchecked


@dataclass
class VerifyReport:
    pipeline: str
    status: str = "error"  # equal | differences | error
    position: str | None = None  # source head when the run started
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    settled: bool = True  # every re-check ran after the daemon had caught up
    repair: bool = False
    tables: list[TableReport] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["started_at"] = self.started_at.isoformat()
        out["finished_at"] = self.finished_at.isoformat() if self.finished_at else None
        return out

    def totals(self) -> dict[str, int]:
        keys = ("rows_checked", "missing", "extra", "different", "repaired")
        return {k: sum(getattr(t, k) for t in self.tables) for k in keys}


_LAST: dict[str, VerifyReport] = {}
_LAST_LOCK = threading.Lock()


def last_result(pipeline: str) -> VerifyReport | None:
    """The latest finished run of this process (scheduled or not), for health and metrics."""
    with _LAST_LOCK:
        return _LAST.get(pipeline)


def _chosen(config: Config, pipeline: str, table: str | None) -> dict[TableId, TableId]:
    targets = table_map(config, pipeline)
    if table is None:
        return targets
    wanted = TableId.parse(table)
    out = {s: t for s, t in targets.items() if wanted in (s, t)}
    if not out:
        raise ConfigError([f"--table: {table} is not a table of pipeline {pipeline}"])
    return out


def verify(
    config: Config,
    pipeline: str,
    *,
    table: str | None = None,
    fix: bool = False,
    settle: float = 30.0,
) -> VerifyReport:
    """One run over the pipeline's tables (or ``table``); recorded in cdc_sync_verify_runs.
    Raises classified errors (the run is recorded with status 'error' when possible)."""
    log = logs.get().bind(pipeline=pipeline)
    pc = config.pipelines[pipeline]
    tc = config.targets[pc.target]
    report = VerifyReport(pipeline, repair=fix)
    chosen = _chosen(config, pipeline, table)
    engine = target_engine(config, pipeline)
    source = build_source(config, pipeline)
    try:
        with engine.connect() as conn:
            upgrade(conn, schema=tc.state_schema)
            conn.commit()
            try:
                _run(config, pipeline, conn, source, chosen=chosen, report=report, settle=settle)
            except Exception as e:
                err = classify(e, "verify")
                report.status, report.error = "error", str(err)
                report.finished_at = datetime.now(UTC)
                conn.rollback()
                _record(conn, tc.state_schema, report)
                raise err from e
            report.finished_at = datetime.now(UTC)
            bad = any(t.differences for t in report.tables)
            report.status = "differences" if bad else "equal"
            _record(conn, tc.state_schema, report)
    except CdcSyncError:
        raise
    except Exception as e:
        raise classify(e, "verify") from e
    finally:
        source.close()
        engine.dispose()
    with _LAST_LOCK:
        _LAST[pipeline] = report
    log.info("verify_finished", status=report.status, settled=report.settled, **report.totals())
    end = report.finished_at or datetime.now(UTC)
    EVENTS.verify_finished(
        pipeline,
        status=report.status,
        counts=report.totals(),
        seconds=(end - report.started_at).total_seconds(),
    )
    return report


def _run(
    config: Config,
    pipeline: str,
    conn: sa.Connection,
    source: Source,
    *,
    chosen: dict[TableId, TableId],
    report: VerifyReport,
    settle: float,
) -> None:
    pc = config.pipelines[pipeline]
    tc = config.targets[pc.target]
    schemas = source.table_schemas()
    compiled = PipelineRules(config, pipeline).compile_all({t: schemas[t] for t in chosen})
    head: Position = source.head()
    report.position = head.to_text()
    store = CheckpointStore(pipeline, schema=tc.state_schema)
    waiter = Settle(conn, store, budget=settle, quiet=max(2.0, 3 * pc.batch.max_seconds))
    if pc.signal_table:
        waiter.watermark = lambda: source.write_signal(pipeline, f"verify:{uuid.uuid4().hex}")
    sink = SqlSink(create_tables=tc.create_tables)
    audit = AuditWriter(pipeline, pc.audit, schema=tc.state_schema)
    # on_error: stop keeps no dead letters: a refused repair is then only reported.
    letters = DeadLetterStore(tc.state_schema) if pc.on_error == "dead_letter" else None
    chunk = pc.verify.chunk_rows
    for src, tt in compiled.items():
        started = time.monotonic()
        reader = TargetReader(conn, chosen[src], tt.schema)
        shaper = Shaper(tt, head)
        res = scan_table(source, reader, shaper, chunk, conn.rollback)
        conn.rollback()
        if res.suspects.extra and not shaper.passthrough:
            rescan_hashed_extras(source, shaper, res.suspects.extra, chunk)
        verdict = recheck(source, reader, shaper, res.suspects, waiter)
        tr = TableReport(
            str(src),
            str(chosen[src]),
            res.mode,
            rows_checked=res.rows_checked,
            target_rows=res.target_rows,
            missing=len(verdict.missing),
            extra=len(verdict.extra),
            different=len(verdict.different),
            refused=len(verdict.refused),
            unchecked=res.overflow,
            rechecked=len(res.suspects.all()),
        )
        if report.repair and tr.differences:
            conn.commit()  # MySQL: DDL must not start inside a transaction
            sink.ensure_table(conn, tt.schema, chosen[src])
            conn.commit()
            refusals = Refusals(pipeline, shaper, chosen[src], letters)
            tr.repaired = repair(
                conn,
                source,
                reader,
                shaper,
                verdict,
                sink=sink,
                audit=audit,
                store=store,
                position=head,
                refusals=refusals,
            )
            tr.repair_refused, tr.refusals = refusals.count, refusals.shown
        tr.seconds = round(time.monotonic() - started, 3)
        report.tables.append(tr)
    report.settled = waiter.reached


def _record(conn: sa.Connection, schema: str | None, report: VerifyReport) -> None:
    """One row per run: counts per table, never a key or a value (they may be PII)."""
    totals = report.totals()
    skip = ("table", "refusals")  # refusals name keys
    detail: dict[str, Any] = {
        "settled": report.settled,
        "tables": {
            t.table: {k: v for k, v in asdict(t).items() if k not in skip} for t in report.tables
        },
    }
    if report.error:
        detail["error"] = report.error
    try:
        conn.execute(
            sa.insert(state_tables(schema).verify_runs),
            {
                "pipeline": report.pipeline,
                "started_at": report.started_at,
                "finished_at": report.finished_at,
                "position": report.position,
                "status": report.status,
                **totals,
                "detail": detail,
            },
        )
        conn.commit()
    except sa.exc.SQLAlchemyError:
        conn.rollback()
        if report.status != "error":
            raise


def start_scheduled_verify(
    config: Config, name: str, stop: StopFlag, settle: float = 30.0
) -> threading.Thread | None:
    """Verify (never repair) every ``verify.every`` inside the daemon; None when not set."""
    every = config.pipelines[name].verify.every_seconds
    if every is None:
        return None
    log = logs.get().bind(pipeline=name)

    def loop() -> None:
        while not stop.wait(every):
            try:
                verify(config, name, settle=settle)
            except CdcSyncError as e:  # recorded as an error run; the daemon goes on
                log.error("verify_failed", error_class=type(e).__name__, error=str(e))

    thread = threading.Thread(target=loop, name=f"verify-{name}", daemon=True)
    thread.start()
    return thread
