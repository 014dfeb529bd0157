"""``cdc-sync replay``: re-apply a range of source changes through the rules and sink, audited,
leaving the pipeline's checkpoint untouched."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import sqlalchemy as sa

from cdc_sync.audit.writer import AuditWriter, Provenance
from cdc_sync.checkpoint.store import CheckpointStore
from cdc_sync.config.models import Config, MysqlSource, PostgresSource
from cdc_sync.errors import PermanentError
from cdc_sync.records import (
    BinlogPosition,
    ChangeRecord,
    Heartbeat,
    Op,
    PgLsn,
    Position,
    SourceEvent,
    TableId,
    TableSchema,
    TxBegin,
    TxCommit,
)
from cdc_sync.runtime.offset_targets import capture
from cdc_sync.runtime.offsets import refuse_if_held, target_connection
from cdc_sync.runtime.rules import PipelineRules
from cdc_sync.runtime.wiring import build_source, table_map
from cdc_sync.sinks.sql.sink import SqlSink
from cdc_sync.sources.postgres import peek
from cdc_sync.state.migrate import upgrade
from cdc_sync.transforms import RuleError


@dataclass
class ReplayReport:
    pipeline: str
    start: str
    end: str
    checkpoint: str | None
    transactions: int = 0
    rows: int = 0
    filtered: int = 0  # excluded by a filter rule, as in the live stream
    refused: int = 0  # refused by a rule (the live run dead-lettered or stopped on them)
    batches: int = 0
    tables: dict[str, int] = field(default_factory=dict)  # target table -> rows re-applied

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


def parse_position(config: Config, name: str, text: str, option: str) -> Position:
    """``--from`` / ``--to``: a position of the pipeline's source kind, prefix optional."""
    sc = config.sources[config.pipelines[name].source]
    kind: type[PgLsn] | type[BinlogPosition] = (
        PgLsn if isinstance(sc, PostgresSource) else BinlogPosition
    )
    text = text.strip()
    try:
        return Position.parse(text) if text.startswith(f"{kind.kind}:") else kind.from_body(text)
    except ValueError:
        want = "an LSN such as 0/16B3748" if kind is PgLsn else "a binlog file:pos"
        raise PermanentError(f"{option} {text!r}: expected {want}") from None


def replay(  # noqa: PLR0917  (the CLI's options)
    config: Config,
    name: str,
    start: Position,
    end: Position | None,
    table: str | None,
    by: str,
) -> ReplayReport:
    """Re-apply the source transactions ending after ``start`` and at or before ``end``
    (default: the checkpoint, i.e. changes already applied) to the target.

    Refused while a daemon holds the lease: replayed (older) values written between the
    daemon's batches could overwrite newer ones. Rows changed again after ``end`` keep the
    replayed value until their next change, unless ``end`` reaches the checkpoint; changes
    past the checkpoint are applied early and again by the daemon (idempotent upserts)."""
    with target_connection(config, name) as (conn, schema):
        upgrade(conn, schema=schema)
        conn.commit()
        store = CheckpointStore(name, schema=schema)
        refuse_if_held(
            store,
            conn,
            lock=False,
            risk="a replay between the daemon's batches could "
            "overwrite newer values with older ones",
        )
        cp = store.load(conn)
        conn.commit()
        stop = end if end is not None else (cp.position if cp is not None else None)
        if stop is None:
            raise PermanentError(f"pipeline {name} has no checkpoint yet: give --to")
        if type(stop) is not type(start):
            raise PermanentError(f"--from {start} and --to {stop} are of different kinds")
        if stop <= start:
            raise PermanentError(f"nothing to replay: --to {stop} is not after --from {start}")
        at = cp.position.to_text() if cp is not None else None
        report = ReplayReport(name, start.to_text(), stop.to_text(), at)
        _Replayer(config, name, conn, schema, report, by, table).run(start, stop)
    return report


class _Replayer:
    def __init__(  # noqa: PLR0917
        self,
        config: Config,
        name: str,
        conn: sa.Connection,
        schema: str | None,
        report: ReplayReport,
        by: str,
        table: str | None,
    ) -> None:
        self.config, self.name, self.conn, self.report, self.by = config, name, conn, report, by
        pc = config.pipelines[name]
        tc = config.targets[pc.target]
        self.targets = table_map(config, name)
        if table is not None:
            chosen = {s: t for s, t in self.targets.items() if table in (str(s), str(t))}
            if not chosen:
                raise PermanentError(f"--table {table}: not a table of pipeline {name}")
            self.only: set[TableId] | None = set(chosen)
        else:
            self.only = None
        self.rules = PipelineRules(config, name)
        self.sink = SqlSink(create_tables=tc.create_tables)
        self.audit = AuditWriter(name, pc.audit, schema=schema)
        self.max_rows = pc.batch.max_rows
        self.truncate = {TableId.parse(t): c.apply_truncate for t, c in pc.tables.items()}
        self.shaped: dict[TableId, TableSchema] = {}

    def run(self, start: Position, stop: Position) -> None:
        events, close = self._events(start, stop)
        try:
            self._apply(events, stop)
        finally:
            close()
        # One row for the operator action, whatever the audit level (row level also has
        # one 'replay' row per re-applied change).
        r = self.report
        detail = {"from": r.start, "to": r.end, "by": self.by, "rows": r.rows}
        self.conn.execute(
            sa.insert(self.audit.table),
            {"pipeline": self.name, "op": "replay", "outcome": "replay",
             "source_position": r.end, "detail": detail},
        )  # fmt: skip
        self.conn.commit()

    def _events(
        self, start: Position, stop: Position
    ) -> tuple[Iterator[SourceEvent], Callable[[], None]]:
        sc = self.config.sources[self.config.pipelines[self.name].source]
        if isinstance(sc, PostgresSource):
            assert isinstance(start, PgLsn) and isinstance(stop, PgLsn)
            src = build_source(self.config, self.name)
            try:
                schemas = src.table_schemas()
            finally:
                src.close()
            self._prepare(schemas)
            return self._pg_events(sc, schemas, start, stop), lambda: None
        assert isinstance(sc, MysqlSource) and isinstance(start, BinlogPosition)
        cap = capture(self.config, self.name)
        problems = cap.checkpoint_problems(start)
        if problems:
            cap.close()
            raise PermanentError(
                f"cannot replay from {start}: the binlog there is no longer retained "
                f"({'; '.join(problems)})"
            )
        inside = cap.boundary_problem(start)
        if inside is not None:
            cap.close()
            raise PermanentError(f"--from {inside}")
        self._prepare(cap.prepare(create=False))
        return cap.stream(start), cap.close

    def _pg_events(
        self,
        sc: PostgresSource,
        schemas: Mapping[TableId, TableSchema],
        start: PgLsn,
        stop: PgLsn,
    ) -> Iterator[SourceEvent]:
        slot = self.config.slot_for(self.name)
        conn = peek.connect(sc.dsn.get_secret_value())
        try:
            info = peek.slot(conn, slot)
        finally:
            conn.close()
        confirmed = peek.confirmed(info, slot)
        if start < confirmed:
            raise PermanentError(
                f"cannot replay from {start}: replication slot {slot!r} has confirmed "
                f"{confirmed} and a logical slot cannot rewind; only changes after "
                f"{confirmed.body()} can be replayed on PostgreSQL"
            )
        if info.active_pid is not None:
            raise PermanentError(f"replication slot {slot!r} is in use (pid {info.active_pid})")
        publication = self.config.publication_for(self.name)
        return peek.peek(
            sc.dsn.get_secret_value(), slot, publication, schemas, after=start, upto=stop
        )

    def _prepare(self, schemas: Mapping[TableId, TableSchema]) -> None:
        shaped = self.rules.compile_all({t: s for t, s in schemas.items() if t in self.targets})
        self.conn.commit()  # MySQL: DDL must not start inside a transaction
        for table, tt in shaped.items():
            self.sink.ensure_table(self.conn, tt.schema, self.targets[table])
            self.shaped[table] = tt.schema
        self.conn.commit()

    def _apply(self, events: Iterator[SourceEvent], stop: Position) -> None:
        pending: list[tuple[ChangeRecord, TableId]] = []
        tx: list[tuple[ChangeRecord, TableId, Provenance]] = []
        commit: Position | None = None
        for ev in events:
            if isinstance(ev, ChangeRecord):
                item = self._shape(ev)
                if item is not None:
                    tx.append(item)
            elif isinstance(ev, TxBegin):
                tx, commit = [], ev.final_position
            elif isinstance(ev, TxCommit):
                past = ev.end_position > stop
                if past and not _holds(commit, stop):
                    break  # past --to: dropped whole, never half applied
                self.report.transactions += 1
                for out, target, provenance in tx:
                    self.audit.add(out, target, outcome="replay", rules=provenance)
                    pending.append((out, target))
                tx = []
                if len(pending) >= self.max_rows:
                    self._commit(pending)
                    pending = []
                if past or ev.end_position == stop:
                    break
            elif isinstance(ev, Heartbeat) and ev.position >= stop:
                break
        self._commit(pending)

    def _shape(self, rec: ChangeRecord) -> tuple[ChangeRecord, TableId, Provenance] | None:
        target = self.targets.get(rec.table)
        if target is None or (self.only is not None and rec.table not in self.only):
            return None
        if rec.op is Op.TRUNCATE and not self.truncate.get(rec.table, True):
            return None
        tt = self.rules.for_schema(rec.schema)
        if self.shaped.get(rec.table) != tt.schema:
            # A schema change inside the range: widen between batches, as the daemon does.
            self.conn.commit()
            self.sink.ensure_table(self.conn, tt.schema, target)
            self.conn.commit()
            self.shaped[rec.table] = tt.schema
        try:
            applied = tt.apply(rec)
        except RuleError:
            self.report.refused += 1
            return None
        if applied is None:
            self.report.filtered += 1
            return None
        out, provenance = applied
        return out, target, provenance

    def _commit(self, items: list[tuple[ChangeRecord, TableId]]) -> None:
        """One target transaction per batch: rows and their audit rows, no checkpoint."""
        if items:
            self.sink.apply(self.conn, items)
            for _, target in items:
                key = str(target)
                self.report.tables[key] = self.report.tables.get(key, 0) + 1
            self.report.rows += len(items)
            self.report.batches += 1
        self.audit.flush(self.conn)
        self.conn.commit()


def _holds(commit: Position | None, stop: Position) -> bool:
    """Whether ``stop`` lies inside the binlog transaction whose commit event is at
    ``commit``: its audit rows' source_position, which names that transaction (binlog
    transactions are contiguous, so it names no other). PostgreSQL transactions interleave in
    the WAL: there ``--to`` counts by commit end only."""
    return isinstance(stop, BinlogPosition) and commit is not None and commit <= stop
