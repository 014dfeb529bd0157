"""Custom row functions (``custom: package.module:function``): the Change they see and return."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cdc_sync.transforms.errors import Problem, RuleError


@dataclass(frozen=True)
class Change:
    """One row as a custom function sees it, before every column rule.

    ``op``: "insert" / "update" / "delete"; ``table``: "schema.name"; ``values``: source column
    name → canonical value of the new row (for a delete, the key-only old row).
    """

    op: str
    table: str
    values: Mapping[str, object]

    def replace(self, **values: object) -> Change:
        """A copy with those column values changed."""
        return Change(self.op, self.table, {**self.values, **values})


CustomFn = Callable[[Change], "Change | None"]


def load_custom(ref: str) -> CustomFn:
    """Import ``package.module:function``; Problem (one line, no traceback) when it fails."""
    module_name, _, attr = ref.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except Exception as e:  # noqa: BLE001 - any import failure is a config problem, reported
        raise Problem(f"cannot import {ref!r}: {type(e).__name__}") from None
    if not callable(fn):
        raise Problem(f"{ref!r} is not callable")
    return fn  # type: ignore[no-any-return]


class CustomChain:
    """The table's custom functions in config order, run on a source row."""

    def __init__(self, fns: tuple[tuple[str, CustomFn], ...], table: str, names: tuple[str, ...]):
        self.fns = fns
        self.table = table
        self.names = names
        self._known = frozenset(names)

    def run(self, op: str, row: tuple[object, ...]) -> tuple[object, ...] | None:
        """The row after every function, in order; None when one skips it."""
        names = self.names
        change = Change(op, self.table, dict(zip(names, row, strict=True)))
        for ref, fn in self.fns:
            try:
                out = fn(change)
            except Exception as e:  # noqa: BLE001 - user code: any failure dead-letters the row
                # Never the exception text: it may quote row values.
                raise RuleError("custom", None, f"{ref} raised {type(e).__name__}") from None
            if out is None:
                return None
            if not isinstance(out, Change):
                kind = type(out).__name__
                raise RuleError("custom", None, f"{ref} returned {kind}, not a Change or None")
            change = out
        values = change.values
        for k in values:
            if k not in self._known:
                raise RuleError("custom", str(k), "returned an unknown column")
        # A column the function left out keeps its source value.
        return tuple(values.get(n, v) for n, v in zip(names, row, strict=True))
