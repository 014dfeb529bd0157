"""The ``map`` rule: source value → target value, matched by value then by text."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from cdc_sync.config.rules import ValueMap
from cdc_sync.records import ColumnType
from cdc_sync.transforms.errors import Problem, RuleError
from cdc_sync.transforms.values import (
    TEXT,
    canonical_constant,
    canonical_text,
    coerce_constant,
    constant_type,
    type_text,
)

Fn = Callable[[object], object]


class Compiled(NamedTuple):
    fn: Fn
    type: ColumnType
    nullable: bool
    on_null: bool  # the map has a NULL key: NULL values go through it


class _Missing:
    __slots__ = ()


_MISSING = _Missing()
_BOOL = object()  # tags bool keys: True == 1 and hash alike, but a bool key must not match 1


def _by_value_key(v: object) -> object:
    return (_BOOL, v) if type(v) is bool else v


def compile_map(cfg: ValueMap, col: str, t: ColumnType, nullable: bool) -> Compiled:
    if t.array_dims:
        raise Problem(f"map applies to scalar columns, {col!r} is {type_text(t)}")
    keep = cfg.on_unmapped == "keep"
    use_default = cfg.on_unmapped == "default"
    outs = list(cfg.values.values()) + ([cfg.default] if use_default else [])
    convert, out_t, as_text = _output(outs, t if keep else None)

    by_value: dict[object, object] = {}
    by_text: dict[str, object] = {}
    for k, out in cfg.values.items():
        if k is not None:
            by_value[_by_value_key(k)] = convert(out)
            if type(k) is not str:
                by_text.setdefault(canonical_text(k), convert(out))
    for k, out in cfg.values.items():
        if type(k) is str:  # an exact text key wins over another key's text form
            by_text[k] = convert(out)
    on_null = None in cfg.values
    null_out = convert(cfg.values.get(None))
    default = convert(cfg.default)
    unmapped = cfg.on_unmapped
    reason = "value not in the map (on_unmapped: dead_letter)"

    def map_(v: object) -> object:
        if v is None:
            return null_out
        if type(v) is str:
            # A str equals only str keys, which by_text holds as they are: one lookup.
            out = by_text.get(v, _MISSING)
        else:
            try:
                out = by_value.get(_by_value_key(v), _MISSING)
            except TypeError:  # unhashable (a custom function's list, say)
                out = _MISSING
            if out is _MISSING:
                out = by_text.get(canonical_text(v), _MISSING)
        if out is _MISSING:
            if unmapped == "default":
                return default
            if unmapped == "dead_letter":
                raise RuleError("map", col, reason)
            return canonical_text(v) if as_text else v
        return out

    out_nullable = any(o is None for o in outs) or (nullable and not on_null)
    return Compiled(map_, out_t, out_nullable, on_null)


def _output(
    outs: Sequence[object], keep_type: ColumnType | None
) -> tuple[Callable[[object], object], ColumnType, bool]:
    """(converter for map outputs, output type, kept source values turned to text)."""
    given = [o for o in outs if o is not None]

    def text(o: object) -> object:
        return None if o is None else canonical_text(canonical_constant(o))

    if keep_type is not None:
        # Kept values stay as they are: the outputs must fit the source type, else all is text.
        try:
            for o in given:
                coerce_constant(o, keep_type)
        except ValueError:
            return text, TEXT, True
        kt = keep_type

        def fit(o: object) -> object:
            return coerce_constant(o, kt)

        return fit, keep_type, False
    types = {constant_type(o) for o in given}
    if len(types) == 1:
        return canonical_constant, types.pop(), False
    return text, TEXT, False  # none given (all NULL) or mixed kinds
