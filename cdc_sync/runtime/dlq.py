"""``cdc-sync dlq``: list, show, retry (from the source's current row) and discard dead letters."""

from __future__ import annotations

import getpass
import json
import socket
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from cdc_sync.audit.dead_letters import DISCARDED, RETRIED, DeadLetterStore
from cdc_sync.audit.keys import from_json
from cdc_sync.audit.writer import AuditWriter
from cdc_sync.config.models import Config
from cdc_sync.errors import CdcSyncError, ConfigError, PermanentError, RowLevelError
from cdc_sync.records import ChangeRecord, Op, Position, TableId, TableSchema, UnreadableRow
from cdc_sync.runtime.classify import classify
from cdc_sync.runtime.rules import PipelineRules
from cdc_sync.runtime.verify import _chosen as verify_tables  # one resolution for --table
from cdc_sync.runtime.wiring import build_source, table_map, target_engine
from cdc_sync.sinks.sql.sink import SqlSink
from cdc_sync.state.migrate import upgrade
from cdc_sync.transforms import RuleError, TableTransform


def who() -> str:
    """Recorded as ``resolved_by`` and in the audit: the OS user and host running the CLI."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@contextmanager
def _target(config: Config, pipeline: str) -> Iterator[tuple[sa.Connection, DeadLetterStore]]:
    schema = config.targets[config.pipelines[pipeline].target].state_schema
    engine = target_engine(config, pipeline)
    try:
        with engine.connect() as conn:
            upgrade(conn, schema=schema)  # a pipeline that never ran has no table yet
            conn.commit()
            yield conn, DeadLetterStore(schema)
    except CdcSyncError:
        raise
    except Exception as e:  # classified here: the CLI shows one clear line
        raise classify(e, f"pipeline {pipeline}: target") from e
    finally:
        engine.dispose()


def table_names(config: Config, pipeline: str, table: str) -> frozenset[str]:
    """``--table`` resolved as ``verify`` resolves it (schema optional, a source or a target
    name): the names a dead letter of that table carries. ConfigError when the pipeline has
    no such table, so a typo is not answered with "no dead letters"."""
    try:
        chosen = verify_tables(config, pipeline, table)
    except ValueError as e:  # TableId.parse: not a table name at all
        raise ConfigError([f"--table: {e}"]) from None
    return frozenset(str(t) for pair in chosen.items() for t in pair)


@dataclass(frozen=True, slots=True)
class Page:
    """The letters shown and how many match in all (``--limit`` may cut the list)."""

    rows: list[dict[str, Any]]
    total: int


def select(
    config: Config,
    pipeline: str,
    *,
    tables: frozenset[str] = frozenset(),
    ids: tuple[int, ...] = (),
    status: str | None,
) -> list[dict[str, Any]]:
    with _target(config, pipeline) as (conn, store):
        return store.select(conn, pipeline=pipeline, tables=tables, ids=ids, status=status)


def page(
    config: Config, pipeline: str, *, tables: frozenset[str], status: str | None, limit: int
) -> Page:
    """The oldest ``limit`` letters (0: all) and the number of all that match."""
    with _target(config, pipeline) as (conn, store):
        rows = store.select(conn, pipeline=pipeline, tables=tables, status=status, limit=limit)
        if not limit or len(rows) < limit:
            return Page(rows, len(rows))
        return Page(rows, store.count(conn, pipeline=pipeline, tables=tables, status=status))


def discard(config: Config, pipeline: str, ids: list[int], by: str) -> list[int]:
    """Close the letters as discarded; an audit row per letter records who and when."""
    level = config.pipelines[pipeline].audit
    schema = config.targets[config.pipelines[pipeline].target].state_schema
    done = []
    with _target(config, pipeline) as (conn, store):
        letters = {r["id"]: r for r in store.select(conn, pipeline=pipeline, ids=ids)}
        audit = AuditWriter(pipeline, level, schema=schema)
        for dl_id in ids:
            letter = letters.get(dl_id)
            if letter is None or not store.resolve(conn, dl_id, DISCARDED, by):
                continue
            done.append(dl_id)
            if level != "off":
                _audit_action(conn, audit, letter, "discarded", by)
        conn.commit()
    return done


def _audit_action(
    conn: sa.Connection, audit: AuditWriter, letter: dict[str, Any], outcome: str, by: str
) -> None:
    # Written directly (not through the row buffer): one row per operator action.
    conn.execute(
        sa.insert(audit.table),
        {
            "pipeline": letter["pipeline"],
            "source_table": letter["source_table"],
            "target_table": letter["target_table"],
            "op": "dlq",
            "outcome": outcome,
            "pk": letter["pk"],
            "source_position": letter["source_position"],
            "source_tx": letter["source_tx"],
            "committed_at": letter["committed_at"],
            "detail": {"dead_letter_id": letter["id"], "by": by},
        },
    )


@dataclass
class RetryReport:
    retried: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)  # id → today's reason
    skipped: dict[int, str] = field(default_factory=dict)  # id → why it cannot be retried


def retry(config: Config, pipeline: str, ids: list[int], by: str) -> RetryReport:
    """Re-read each letter's row as the source has it NOW, run today's rules, apply it.

    Never the stored (masked) copy: it is not the data. A row the source no longer has is
    deleted from the target (the stream applies that delete too; both are idempotent). All
    of it in one target transaction with the letters' status and the audit rows."""
    report = RetryReport()
    targets = table_map(config, pipeline)
    by_name = {str(t): t for t in targets}
    tc = config.targets[config.pipelines[pipeline].target]
    source = build_source(config, pipeline)
    try:
        with _target(config, pipeline) as (conn, store):
            groups: dict[TableId, list[dict[str, Any]]] = defaultdict(list)
            for letter in store.select(conn, pipeline=pipeline, ids=ids):
                table = by_name.get(letter["source_table"])
                if table is None:
                    report.skipped[letter["id"]] = "the table is no longer in the pipeline"
                elif letter["source_pk"] is None:
                    report.skipped[letter["id"]] = (
                        "its key columns are masked or hashed, so the source row cannot be "
                        "found; re-copy the table or discard the letter"
                    )
                else:
                    groups[table].append(letter)
            if not groups:
                return report
            schemas = source.table_schemas()
            rules = PipelineRules(config, pipeline)
            shaped = rules.compile_all({t: schemas[t] for t in groups})
            sink = SqlSink(create_tables=tc.create_tables)
            conn.commit()  # MySQL: DDL must not start inside a transaction
            for table, tt in shaped.items():
                sink.ensure_table(conn, tt.schema, targets[table])
            conn.commit()
            level = config.pipelines[pipeline].audit
            retrier = _Retrier(
                conn, store, sink, AuditWriter(pipeline, level, schema=tc.state_schema), report, by
            )
            for table, group in groups.items():
                rows = source.fetch_rows(
                    table, schemas[table], [retrier.key(schemas[table], g) for g in group]
                )
                retrier.table(shaped[table], targets[table], group, rows)
            retrier.audit.flush(conn)
            conn.commit()
    finally:
        source.close()
    return report


@dataclass
class _Retrier:
    conn: sa.Connection
    store: DeadLetterStore
    sink: SqlSink
    audit: AuditWriter
    report: RetryReport
    by: str
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    @staticmethod
    def key(schema: TableSchema, letter: dict[str, Any]) -> tuple[object, ...]:
        """The stored JSON key back to canonical values, through the column's type."""
        stored = json.loads(letter["source_pk"])
        try:
            return tuple(from_json(schema.column(c).type, stored[c]) for c in schema.key)
        except KeyError as e:
            raise PermanentError(
                f"table {schema.table}: dead letter {letter['id']} has no key column {e}; the "
                "table's key changed since, so it cannot be retried (discard it)"
            ) from None

    def table(
        self,
        tt: TableTransform,
        target: TableId,
        letters: list[dict[str, Any]],
        rows: list[tuple[object, ...] | None],
    ) -> None:
        for letter, row in zip(letters, rows, strict=True):
            if type(row) is UnreadableRow:
                # Still not decodable at the source (a zero date not fixed yet): never
                # applied with a made-up value; the letter stays open with today's reason.
                p = row.problem
                self.store.failed_again(self.conn, letter["id"], p.reason, None, p.column)
                self.report.failed[letter["id"]] = p.reason
                continue
            rec = _record(tt.source, self.key(tt.source, letter), row, letter, self.now)
            self._one(tt, target, letter, rec)

    def _one(
        self, tt: TableTransform, target: TableId, letter: dict[str, Any], rec: ChangeRecord
    ) -> None:
        dl_id = letter["id"]
        try:
            applied = tt.apply(rec)
        except RuleError as e:
            self.store.failed_again(self.conn, dl_id, e.reason, e.rule, e.column)
            self.report.failed[dl_id] = str(e)
            return
        if applied is not None:
            out, provenance = applied
            refused: list[RowLevelError] = []
            self.sink.apply_or_reject(self.conn, [(out, target)], lambda _i, e: refused.append(e))
            if refused:
                reason = getattr(refused[0], "reason", str(refused[0]))
                self.store.failed_again(self.conn, dl_id, reason, None, None)
                self.report.failed[dl_id] = str(refused[0])
                return
            extra: dict[str, object] = {"dead_letter_id": dl_id, "by": self.by}
            self.audit.add(out, target, outcome="retried", rules=provenance, extra=extra)
        # else: today's filter excludes the row; nothing to apply
        self.store.resolve(self.conn, dl_id, RETRIED, self.by)
        self.report.retried.append(dl_id)


def _record(
    schema: TableSchema,
    key: tuple[object, ...],
    row: tuple[object, ...] | None,
    letter: dict[str, Any],
    now: datetime,
) -> ChangeRecord:
    position = Position.parse(letter["source_position"])
    xid = f"dlq-retry:{letter['id']}"
    if row is None:
        before: list[object] = [None] * len(schema.columns)
        for i, v in zip(schema.key_indexes, key, strict=True):
            before[i] = v
        return ChangeRecord(
            Op.DELETE, schema.table, schema, tuple(before), None, position, xid, now, True
        )
    # UPDATE without an old image: an upsert (never the COPY path, which assumes new keys).
    return ChangeRecord(Op.UPDATE, schema.table, schema, None, row, position, xid, now)
