"""Compiling one column's rules into a tuple of step callables and its output column."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from cdc_sync.config.rules import (
    Cast,
    ColumnConfig,
    Hash,
    Lower,
    Mask,
    Phone,
    Redact,
    Regex,
    Transform,
    Trim,
    Upper,
    Validate,
    ValueMap,
)
from cdc_sync.records import UNCHANGED, Column, ColumnType, TableSchema
from cdc_sync.transforms.cast import compile_cast
from cdc_sync.transforms.errors import Problem, RuleError
from cdc_sync.transforms.privacy import hash_fn, mask_fn, redact
from cdc_sync.transforms.text import case_fn, email_fn, phone_fn, regex_fn
from cdc_sync.transforms.valuemap import compile_map
from cdc_sync.transforms.values import (
    canonical_constant,
    coerce_constant,
    constant_type,
    json_safe,
    type_text,
)

Fn = Callable[[object], object]
SENSITIVE_RULES = frozenset({"mask", "hash", "redact"})


@dataclass(frozen=True, slots=True)
class Step:
    rule: str  # provenance name: map / cast / lower / phone / ...
    fn: Fn
    on_null: bool = False  # also called with NULL (default, a map with a NULL key)


@dataclass(frozen=True, slots=True)
class ColumnPlan:
    """One output column: where its value comes from and the steps that make it."""

    name: str  # the config / source name, used in errors
    column: Column  # the output column (target name, type, nullability)
    src: int | None  # source position; None for a target-only column
    steps: tuple[Step, ...]
    constant: object = None
    is_constant: bool = False  # ``value`` (or a target-only ``default``): steps already applied
    key: bool = False

    @property
    def sensitive(self) -> bool:
        return any(s.rule in SENSITIVE_RULES for s in self.steps)


def run_steps(steps: tuple[Step, ...], v: object) -> object:
    """The steps on one value, with the passthrough rules of the hot loop (NULL / UNCHANGED)."""
    if v is UNCHANGED:
        return v
    for s in steps:
        if v is not None or s.on_null:
            v = s.fn(v)
    return v


def compile_column(
    name: str,
    cfg: ColumnConfig | None,
    *,
    src: Column | None,
    src_index: int | None,
    is_key: bool,
    path: str,
    problems: list[str],
) -> ColumnPlan | None:
    """The column's plan; None with lines appended to ``problems`` when it does not compile."""
    cfg = cfg or ColumnConfig()
    target = cfg.target or name
    at = f"{path}.columns.{name}"
    constant = cfg.has_value or (src is None and cfg.has_default)
    if constant:
        if is_key:
            problems.append(f"{at}.value: key column {name!r} cannot be a constant")
            return None
        raw = cfg.value if cfg.has_value else cfg.default
        t, nullable = constant_type(raw), raw is None
        value: object = canonical_constant(raw)
        steps: list[Step] = []
    else:
        assert src is not None
        t, nullable, value, steps = src.type, src.nullable, None, []
        if cfg.has_default and cfg.map is None and cfg.default is not None:
            try:
                fill = coerce_constant(cfg.default, t)
            except ValueError as e:
                problems.append(
                    f"{at}.default: {cfg.default!r} does not fit {type_text(t)} column "
                    f"{name!r} ({e})"
                )
                return None
            steps.append(Step("default", _fill(fill), on_null=True))
            nullable = False
    ok = True
    for sub, tr in _located(cfg):
        try:
            step, t, nullable = compile_step(tr, name, t, nullable, is_key)
        except Problem as e:
            problems.append(f"{at}{sub}: {e}")
            ok = False
            continue
        if constant and (value is not None or step.on_null):
            try:
                value = step.fn(value)
            except RuleError as e:
                problems.append(f"{at}{sub}: the constant fails the rule: {e.reason}")
                ok = False
        steps.append(step)
    if not ok:
        return None
    col = Column(target, t, nullable if not constant else value is None)
    return ColumnPlan(name, col, src_index, tuple(steps), value, constant, is_key)


def _fill(default: object) -> Fn:
    def default_(v: object) -> object:
        return default if v is None else v

    return default_


def _located(cfg: ColumnConfig) -> list[tuple[str, Transform]]:
    """The column's steps in application order with their key-path suffixes."""
    out: list[tuple[str, Transform]] = []
    steps = cfg.steps()
    i = 0
    if cfg.map is not None:
        out.append((".map", steps[0]))
        i = 1
    if isinstance(cfg.cast, Cast):
        out.append((".cast", steps[i]))
    out.extend((f".transforms[{j}]", tr) for j, tr in enumerate(cfg.transforms))
    return out


def compile_step(
    tr: Transform, col: str, t: ColumnType, nullable: bool, is_key: bool
) -> tuple[Step, ColumnType, bool]:
    """(step, output type, output nullability); Problem when the rule cannot apply."""
    if isinstance(tr, Lower | Upper | Trim):
        fn, t = case_fn(tr.kind, col, t)
    elif isinstance(tr, Regex):
        fn, t = regex_fn(tr, col, t)
    elif isinstance(tr, Validate):
        fn, t = email_fn(tr, col, t)
    elif isinstance(tr, Phone):
        fn, t = phone_fn(tr, col, t)
    elif isinstance(tr, Mask):
        fn, t = mask_fn(tr, col, t)
    elif isinstance(tr, Hash):
        fn, t = hash_fn(tr, col, t)
    elif isinstance(tr, Cast):
        fn, t = compile_cast(tr, col, t)
    elif isinstance(tr, ValueMap):
        m = compile_map(tr, col, t, nullable)
        return Step("map", m.fn, m.on_null), m.type, m.nullable
    else:
        assert isinstance(tr, Redact)
        if is_key:
            raise Problem(f"key column {col!r} cannot be redacted (use hash or mask)")
        return Step("redact", redact), t, True
    return Step(tr.kind, fn), t, nullable


def masked_value(
    p: ColumnPlan, row: tuple[object, ...], source: TableSchema, sensitive_key: bool
) -> object:
    """The column as a dead letter keeps it (see ``TableTransform.masked_row``); never raises."""
    sensitive = p.sensitive
    if p.is_constant:
        v = p.constant
        return json_safe(v) if sensitive else describe(v, p.column.type.kind.value)
    assert p.src is not None
    v = row[p.src]
    if v is UNCHANGED:
        return "<unchanged>"
    if p.key and not sensitive_key:
        return json_safe(v)
    if p.key or sensitive:
        # The whole chain first, then (not for keys) the privacy steps alone: one of them
        # failing must not fail the dead-letter path; nothing of the value is kept then.
        with contextlib.suppress(Exception):
            return json_safe(run_steps(p.steps, v))
        if sensitive and not p.key:
            only = tuple(s for s in p.steps if s.rule in SENSITIVE_RULES)
            with contextlib.suppress(Exception):
                return json_safe(run_steps(only, v))
        return "<masked>"
    return describe(v, source.columns[p.src].type.kind.value)


def describe(v: object, kind: str) -> object:
    """A value described without revealing it: kind, and length for text / bytes."""
    if v is None:
        return None
    if v is UNCHANGED:
        return "<unchanged>"
    if isinstance(v, str | bytes):
        return f"<{kind} len={len(v)}>"
    return f"<{kind}>"
