"""A pipeline's compiled table rules, per source schema, and the dead letters they produce."""

from __future__ import annotations

from collections.abc import Mapping

from cdc_sync.audit.dead_letters import DeadLetter, key_json
from cdc_sync.config.models import Config
from cdc_sync.errors import ConfigError, RowLevelError
from cdc_sync.records import ChangeRecord, RowProblem, TableId, TableSchema
from cdc_sync.sinks.sql.errors import TargetRowError
from cdc_sync.transforms import RuleError, TableTransform, compile_table


class PipelineRules:
    """Compiles each table's rules against the schema the source reports, once per schema.

    A schema change (ALTER TABLE) recompiles; a rule that names a column the source no longer
    has is then a ConfigError (the pipeline stops with the key path), never a silent skip."""

    def __init__(self, config: Config, pipeline: str) -> None:
        self.pipeline = pipeline
        pc = config.pipelines[pipeline]
        self._tables = {TableId.parse(name): (name, tc) for name, tc in pc.tables.items()}
        self._compiled: dict[TableId, TableTransform] = {}
        # A two-way link compares old rows with the target's: it needs them in full.
        self._full_before = config.link_role(pipeline) is not None

    def _path(self, name: str) -> str:
        return f"pipelines.{self.pipeline}.tables.{name}"

    def for_schema(self, schema: TableSchema) -> TableTransform:
        """The compiled rules for records of ``schema`` (cached while the schema stays)."""
        tt = self._compiled.get(schema.table)
        # Identity first: called once per row, and sources reuse one schema object per table.
        if tt is not None and (tt.source is schema or tt.source == schema):
            return tt
        name, tc = self._tables[schema.table]
        tt = self._compiled[schema.table] = compile_table(
            schema.table, tc, schema, self._path(name)
        )
        tt.full_before = self._full_before
        return tt

    def compile_all(self, schemas: Mapping[TableId, TableSchema]) -> dict[TableId, TableTransform]:
        """Every table at once, so that ``check`` and start-up report all problems together."""
        problems: list[str] = []
        out: dict[TableId, TableTransform] = {}
        for table, schema in schemas.items():
            if table not in self._tables:
                continue
            try:
                out[table] = self.for_schema(schema)
            except ConfigError as e:
                problems += e.problems
        if problems:
            raise ConfigError(problems)
        return out


def rule_letter(
    tt: TableTransform, rec: ChangeRecord, target: TableId, err: RuleError
) -> DeadLetter:
    """A dead letter for a row a rule refused: masked row, masked target key, source key."""
    return _letter(tt, rec, target, "rule", err.reason, rule=err.rule, column=err.column)


def source_letter(
    tt: TableTransform, rec: ChangeRecord, target: TableId, problem: RowProblem
) -> DeadLetter:
    """A dead letter for a row the source could not decode exactly (a MySQL zero date)."""
    return _letter(tt, rec, target, "source", problem.reason, column=problem.column)


def target_letter(
    tt: TableTransform, rec: ChangeRecord, target: TableId, err: RowLevelError
) -> DeadLetter:
    """A dead letter for a row the target refused (constraint, value too long, …)."""
    if isinstance(err, TargetRowError):
        return _letter(
            tt,
            rec,
            target,
            "target",
            err.reason,
            column=err.column,
            code=err.code,
            constraint=err.constraint,
        )
    return _letter(tt, rec, target, "target", str(err))


def masked_pk(tt: TableTransform, rec: ChangeRecord) -> str | None:
    """The row's key as the audit and dead letters show it (masked where a rule masks it)."""
    row = tt.masked_row(rec)
    return key_json({c: row.get(c) for c in tt.schema.key})


def _letter(
    tt: TableTransform,
    rec: ChangeRecord,
    target: TableId,
    stage: str,
    reason: str,
    *,
    rule: str | None = None,
    column: str | None = None,
    code: str | None = None,
    constraint: str | None = None,
) -> DeadLetter:
    row = tt.masked_row(rec)
    return DeadLetter(
        source_table=str(rec.table),
        target_table=str(target),
        op=rec.op.value,
        pk=key_json({c: row.get(c) for c in tt.schema.key}),
        source_pk=key_json(tt.source_key(rec)),
        position=rec.position.to_text(),
        xid=rec.xid,
        commit_time=rec.commit_time,
        stage=stage,
        reason=reason,
        rule=rule,
        column=column,
        error_code=code,
        constraint=constraint,
        row=row,
    )
