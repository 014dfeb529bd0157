"""WARNING for a source column whose type changed while streaming, naming both types."""

from __future__ import annotations

import dataclasses
from typing import Any

from cdc_sync.records import ColumnType, Kind, TableId, TableSchema


def spelled(t: ColumnType, detail: bool = False) -> str:
    """The type as the source spells it; with ``detail`` its parameters too (the source's
    own spelling may lack them: PostgreSQL's ``numeric``), and enum / set labels, which are
    schema, not row data."""
    text = t.source_name or t.kind.value
    if not detail:
        return text
    if t.enum_labels:
        return f"{text} ({', '.join(t.enum_labels)})"
    if t.kind is Kind.NUMERIC and t.precision is not None:
        return f"{text}({t.precision},{t.scale or 0})"
    if t.length is not None:
        return f"{text}({t.length})"
    if t.precision is not None:
        return f"{text}({t.precision})"
    return text


def _labels_added(old: ColumnType, new: ColumnType) -> bool:
    """Enum / set labels added, nothing else: no stored value changes (ADD VALUE)."""
    return (
        bool(old.enum_labels)
        and set(old.enum_labels) <= set(new.enum_labels)
        and dataclasses.replace(old, enum_labels=new.enum_labels) == new
    )


def warn_retyped(log: Any, table: TableId, old: TableSchema, new: TableSchema) -> None:
    """WARNING per column whose type changed while streaming: the ALTER may have rewritten
    every row's value (PostgreSQL ``USING``, a MySQL ``MODIFY`` that rounds or truncates)
    without sending one change, and the target keeps what it had for those rows."""
    was = {c.name: c.type for c in old.columns}
    for c in new.columns:
        before = was.get(c.name)
        if before is None or before == c.type or _labels_added(before, c.type):
            continue
        a, b = spelled(before), spelled(c.type)
        if a == b:  # numeric → numeric: the parameters or labels changed
            a, b = spelled(before, detail=True), spelled(c.type, detail=True)
        log.warning(
            "source_column_type_changed",
            table=str(table),
            column=c.name,
            from_type=a,
            to_type=b,
            why="an ALTER that changes a column's type may rewrite the values of rows it does "
            "not send as changes (a USING expression, rounding, truncation); the target keeps "
            "the old values of those rows",
            fix=f"cdc-sync verify -c <config> -p <pipeline> --table {table} --repair",
        )
