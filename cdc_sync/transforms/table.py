"""A table's compiled rules: source-shaped change records in, target-shaped records out."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from cdc_sync.config.rules import TableRules
from cdc_sync.errors import ConfigError, PermanentError
from cdc_sync.records import UNCHANGED, ChangeRecord, Op, TableId, TableSchema
from cdc_sync.transforms.columns import (
    ColumnPlan,
    compile_column,
    describe,
    masked_value,
    run_steps,
)
from cdc_sync.transforms.custom import CustomChain, load_custom
from cdc_sync.transforms.errors import Problem, RuleError
from cdc_sync.transforms.values import json_safe

if TYPE_CHECKING:
    from cdc_sync.transforms.filter import Pred

Row = tuple[object, ...]
_HotStep = tuple[Callable[[object], object], int, bool]  # (fn, provenance bit, sees NULL)
_FILTERED: tuple[tuple[str, str], ...] = (("", "filter"),)


class Applied(NamedTuple):
    record: ChangeRecord  # target-shaped: schema = TableTransform.schema, values transformed
    # (target column, rule) for each rule that changed a value in this row, in column then
    # rule order; ("", "filter") when an UPDATE left the filter and became a DELETE. The same
    # tuple object for the same combination, so callers may cache by it cheaply.
    rules: tuple[tuple[str, str], ...]


def compile_table(
    table: TableId, rules: TableRules, schema: TableSchema, path: str
) -> TableTransform:
    """Compile a table's rules against the source schema. ConfigError lists every problem, one
    line each, starting with its key path (``path`` is the table's: ``pipelines.p.tables.t``)."""
    if not rules.has_rules:
        return TableTransform(table, schema, None, None, None)
    problems: list[str] = []
    customs = []
    for i, ref in enumerate(rules.custom):
        try:
            customs.append((ref, load_custom(ref)))
        except Problem as e:
            problems.append(f"{path}.custom[{i}]: {e}")
    names = schema.names
    configs = rules.columns
    included = set(names)
    if rules.include is not None:
        included = set()
        for i, name in enumerate(rules.include):
            if name not in names:
                problems.append(f"{path}.include[{i}]: unknown column {name!r}")
            included.add(name)
        problems.extend(
            f"{path}.include: key column {k!r} must be included"
            for k in schema.key
            if k not in included
        )
    plans: list[ColumnPlan] = []
    for i, col in enumerate(schema.columns):
        cfg = configs.get(col.name)
        is_key = col.name in schema.key
        if cfg is not None and cfg.drop:
            if is_key:
                problems.append(
                    f"{path}.columns.{col.name}.drop: key column {col.name!r} cannot be dropped"
                )
            continue
        if col.name not in included:
            if cfg is not None:
                problems.append(f"{path}.columns.{col.name}: column {col.name!r} is not in include")
            continue
        plan = compile_column(
            col.name, cfg, src=col, src_index=i, is_key=is_key, path=path, problems=problems
        )
        if plan is not None:
            plans.append(plan)
    for name, cfg in configs.items():
        if name in names:
            continue
        if (cfg.has_value or cfg.has_default) and cfg.map is None and not cfg.drop:
            plan = compile_column(
                name, cfg, src=None, src_index=None, is_key=False, path=path, problems=problems
            )
            if plan is not None:
                plans.append(plan)
            continue
        given = [
            k
            for k in ("drop", "map", "on_unmapped", "cast", "transforms", "target")
            if k in cfg.model_fields_set
        ]
        where = f".{given[0]}" if given else ""
        problems.append(
            f"{path}.columns.{name}{where}: column {name!r} does not exist in source table {table}"
        )
    seen: dict[str, str] = {}
    for p in plans:
        first = seen.setdefault(p.column.name, p.name)
        if first != p.name:
            problems.append(
                f"{path}.columns.{p.name}.target: target column {p.column.name!r} is also the "
                f"target of column {first!r}"
            )
    pred = None
    if rules.filter:
        # Imported here: the parser (lark, ~45 ms) loads only for pipelines with a filter.
        from cdc_sync.transforms.filter import compile_filter  # noqa: PLC0415

        try:
            pred, _ = compile_filter(rules.filter, schema)
        except Problem as e:
            problems.extend(f"{path}.filter: {line}" for line in str(e).splitlines())
    if problems:
        raise ConfigError(problems)
    chain = CustomChain(tuple(customs), str(table), names) if customs else None
    return TableTransform(table, schema, tuple(plans), pred, chain)


class TableTransform:
    """A table's compiled rules. Pure: no I/O; ``apply`` is on the hot path."""

    source: TableSchema  # the source schema compiled against
    schema: TableSchema  # the output schema (target names, types, key); same table id
    identity: bool  # no rules: apply returns the record itself
    sensitive_key: bool  # a key column carries mask / hash / redact
    sensitive: frozenset[str]  # target columns carrying mask / hash / redact

    def __init__(
        self,
        table: TableId,
        source: TableSchema,
        plans: tuple[ColumnPlan, ...] | None,
        pred: Pred | None,
        custom: CustomChain | None,
    ) -> None:
        self.table = table
        self.source = source
        self.identity = plans is None
        # Old rows in full (their rules applied) instead of their key only: a two-way link
        # compares them with the target's row to find conflicts.
        self.full_before = False
        self._plans = plans or ()
        self._pred = pred
        self._custom = custom
        self._seen = source  # last record schema found equal to ``source``
        if plans is None:
            self.schema = source
            self.sensitive_key, self.sensitive = False, frozenset()
            return
        by_source = {p.name: p.column.name for p in plans if p.src is not None}
        self.schema = TableSchema(
            source.table, tuple(p.column for p in plans), tuple(by_source[k] for k in source.key)
        )
        self.sensitive = frozenset(p.column.name for p in plans if p.sensitive)
        self.sensitive_key = any(p.key and p.sensitive for p in plans)
        self._targets = by_source
        self._changed: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._none_row: list[object] = [None] * len(plans)
        # Provenance bits in column then rule order: a custom function first (it runs first).
        tags: list[tuple[str, str]] = []
        hot: list[tuple[int, tuple[_HotStep, ...] | None, object, int]] = []
        custom_bits = []
        for p in plans:
            name = p.column.name
            if custom is not None and p.src is not None:
                custom_bits.append((p.src, 1 << len(tags)))
                tags.append((name, "custom"))
            if p.is_constant:
                hot.append((p.src if p.src is not None else -1, None, p.constant, 1 << len(tags)))
                tags.append((name, "value"))
                continue
            assert p.src is not None
            steps = []
            for s in p.steps:
                steps.append((s.fn, 1 << len(tags), s.on_null))
                tags.append((name, s.rule))
            hot.append((p.src, tuple(steps), None, 0))
        self._hot = tuple(hot)
        self._custom_bits = tuple(custom_bits)
        self._tags = tuple(tags)
        self._combos: dict[int, tuple[tuple[str, str], ...]] = {0: ()}
        self._keys = tuple(i for i, p in enumerate(plans) if p.key)

    # -- the hot path ---------------------------------------------------------------------

    def apply(self, rec: ChangeRecord) -> Applied | None:
        """The target-shaped record, or None when the row is filtered out / skipped."""
        if self.identity:
            return Applied(rec, ())
        op = rec.op
        if rec.schema is not self._seen:
            self._check_schema(rec.schema)
        if op is Op.TRUNCATE:
            return Applied(rec._replace(schema=self.schema, changed=()), ())
        if op is Op.DELETE:
            if rec.before is None:
                return Applied(rec._replace(schema=self.schema, changed=()), ())
            old, bits, whole = self._old(rec)
            out = rec._replace(
                schema=self.schema, before=old, before_is_key_only=not whole, changed=()
            )
            return Applied(out, self._rules(bits))
        row = rec.after
        assert row is not None
        bits = 0
        if self._custom is not None:
            src = row
            new = self._custom.run(op.value, row)
            if new is None:
                return None
            row = new
            for i, bit in self._custom_bits:
                if row[i] is not src[i] and row[i] != src[i]:
                    bits |= bit
        if self._pred is not None and self._pred(row) is not True:
            if op is Op.INSERT:
                return None
            # The row left the replicated set: it must not linger in the target.
            key, _ = self._key_row(rec.before if rec.before is not None else row)
            gone = ChangeRecord(
                Op.DELETE,
                rec.table,
                self.schema,
                key,
                None,
                rec.position,
                rec.xid,
                rec.commit_time,
                True,
                (),
            )
            return Applied(gone, _FILTERED)
        try:
            after, bits = self._row(row, bits)
        except RuleError:
            raise
        except Exception as e:  # noqa: BLE001 - a value of an unexpected type: find the step
            self._locate(row)
            raise RuleError("rules", None, f"unexpected {type(e).__name__}") from None
        before: Row | None = None
        whole = False
        if rec.before is not None:
            before, _, whole = self._old(rec)
        changed = rec.changed
        if changed:
            mapped = self._changed.get(changed)
            changed = self._map_changed(changed) if mapped is None else mapped
        out = ChangeRecord(
            op,
            rec.table,
            self.schema,
            before,
            after,
            rec.position,
            rec.xid,
            rec.commit_time,
            before is not None and not whole,
            changed,
        )
        return Applied(out, self._rules(bits))

    def _row(self, row: Row, bits: int) -> tuple[Row, int]:
        out: list[object] = []
        append = out.append
        for idx, steps, const, vbit in self._hot:
            if steps is None:  # a constant
                if idx >= 0 and row[idx] != const:
                    bits |= vbit
                append(const)
                continue
            v = row[idx]
            if steps and v is not UNCHANGED:
                for fn, bit, on_null in steps:
                    if v is None and not on_null:
                        continue
                    nv = fn(v)
                    # `type` too: a map 1 → True changes the value although 1 == True.
                    if nv is not v and (nv != v or type(nv) is not type(v)):
                        bits |= bit
                    v = nv
            append(v)
        return tuple(out), bits

    def _old(self, rec: ChangeRecord) -> tuple[Row, int, bool]:
        """The old row as sent on (its rules' bits, and whether it is whole). Whole for a
        link (conflict checks), and for a key change that came with its full old row:
        under a DEFERRABLE source key the sink tells swapped rows apart by it. Not for a
        plain delete: running every rule on every deleted row (MySQL sends full images
        always) would be paid by all for a rare case. Not with custom functions (they never
        see old rows, so the same row would look different), and key-only when a rule
        refuses an old value: the change needs only its key, and the audit names the key's
        rules as before."""
        before = rec.before
        assert before is not None
        if rec.before_is_key_only:
            key, bits = self._key_row(before)
            return key, bits, False
        if self.full_before:
            row, bits = self._row(before, 0)
            return row, bits, True
        key, bits = self._key_row(before)
        if self._custom is None and rec.op is not Op.DELETE and self._moves(rec):
            try:
                old, _ = self._row(before, 0)
            except Exception:  # noqa: BLE001 - an old value a rule refuses: the key will do
                return key, bits, False
            return old, bits, True
        return key, bits, False

    def _moves(self, rec: ChangeRecord) -> bool:
        before, after = rec.before, rec.after
        assert before is not None and after is not None
        return any(before[i] != after[i] for i in self.source.key_indexes)

    def _key_row(self, src: Row) -> tuple[Row, int]:
        """A key-only row in output order: the key columns transformed, other positions None."""
        out = self._none_row.copy()
        bits = 0
        for pos in self._keys:
            idx, steps, _, _ = self._hot[pos]
            assert steps is not None and idx is not None
            v = src[idx]
            if v is not UNCHANGED:
                for fn, bit, on_null in steps:
                    if v is None and not on_null:
                        continue
                    nv = fn(v)
                    if nv is not v and (nv != v or type(nv) is not type(v)):
                        bits |= bit
                    v = nv
            out[pos] = v
        return tuple(out), bits

    def _rules(self, bits: int) -> tuple[tuple[str, str], ...]:
        got = self._combos.get(bits)
        if got is None:
            tags = self._tags
            got = tuple(tags[i] for i in range(bits.bit_length()) if bits >> i & 1)
            self._combos[bits] = got
        return got

    def _map_changed(self, changed: tuple[str, ...]) -> tuple[str, ...]:
        out = tuple(self._targets[c] for c in changed if c in self._targets)
        if len(self._changed) < 4096:  # bounded: the combinations seen are few in practice
            self._changed[changed] = out
        return out

    def _locate(self, row: Row) -> None:
        """Re-run the steps one by one to name the rule and column a TypeError came from."""
        for p in self._plans:
            if p.src is None or p.is_constant:
                continue
            v = row[p.src]
            if v is UNCHANGED:
                continue
            for s in p.steps:
                if v is None and not s.on_null:
                    continue
                try:
                    v = s.fn(v)
                except RuleError:
                    raise
                except Exception:  # noqa: BLE001 - whatever it is, the row fails this rule
                    kind = type(v).__name__
                    raise RuleError(s.rule, p.name, f"cannot apply to a {kind} value") from None

    def _check_schema(self, schema: TableSchema) -> None:
        if schema != self.source:
            raise PermanentError(
                f"table {self.table}: the record's schema differs from the one its rules were "
                "compiled against; the rules must be recompiled after a schema change"
            )
        self._seen = schema

    # -- dead letters and re-reads (never on the hot path) -----------------------------------

    def masked_row(self, rec: ChangeRecord) -> dict[str, object]:
        """The row as a dead letter may keep it: {target column: JSON-safe value}. Key columns
        as the source sent them (masked / hashed when the key is sensitive), masked / hashed
        columns as their rules make them, every other value described by kind and length only.
        Never raises."""
        try:
            row = rec.before if rec.op is Op.DELETE else rec.after
            if row is None:
                return {}
            if self.identity:
                key = self.source.key
                return {
                    c.name: json_safe(v) if c.name in key else describe(v, c.type.kind.value)
                    for c, v in zip(self.source.columns, row, strict=True)
                }
            skey = self.sensitive_key
            return {p.column.name: masked_value(p, row, self.source, skey) for p in self._plans}
        except Exception:  # noqa: BLE001 - the dead-letter path must not fail on a bad row
            return {}

    def source_key(self, rec: ChangeRecord) -> dict[str, object] | None:
        """{source key column: JSON-safe value}, to re-read the source row; None when the key
        is sensitive (it must not be stored in the clear) or the record has no row."""
        if self.sensitive_key:
            return None
        row = rec.before if rec.op is Op.DELETE else rec.after
        if row is None:
            return None
        src = self.source
        return {k: json_safe(row[i]) for k, i in zip(src.key, src.key_indexes, strict=True)}

    def target_key_text(self, rec: ChangeRecord) -> str | None:
        """The row's key in the target (transformed) as compact JSON, ``{"id":42}``; None when
        the record has no row or a key rule fails on it."""
        row = rec.before if rec.op is Op.DELETE else rec.after
        if row is None:
            return None
        if self.identity:
            key: dict[str, object] = {
                k: json_safe(row[i])
                for k, i in zip(self.source.key, self.source.key_indexes, strict=True)
            }
        else:
            try:
                key = {
                    p.column.name: json_safe(run_steps(p.steps, row[p.src]))
                    for p in (self._plans[i] for i in self._keys)
                    if p.src is not None
                }
            except Exception:  # noqa: BLE001 - no key text rather than a failure
                return None
        return json.dumps(key, ensure_ascii=False, separators=(",", ":"))
