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


def warn_renamed(
    log: Any, table: TableId, target: TableId, old: TableSchema, new: TableSchema
) -> None:
    """WARNING when one column left the source's schema and one of the same kind came in
    the same change: a RENAME COLUMN (or a drop and an add). The daemon renames nothing in
    the target, so the old column keeps its values and the new one is NULL in every row the
    source has not changed since; without this nothing said so."""
    gone = [c for c in old.columns if c.name not in new.names]
    came = [c for c in new.columns if c.name not in old.names]
    if len(gone) != 1 or len(came) != 1 or gone[0].type.kind is not came[0].type.kind:
        return
    a, b = gone[0].name, came[0].name
    log.warning(
        "source_column_renamed",
        table=str(table),
        target_table=str(target),
        column=a,
        new_column=b,
        why=f"column {a!r} left the source table and {b!r} of the same type came in the same "
        f"change (RENAME COLUMN, or a drop and an add): the target keeps {a!r} with its values "
        f"and has {b!r} NULL in the rows the source has not changed since",
        fix=f"if it was renamed: copy the values in the target (UPDATE … SET {b} = {a}) or run "
        f"cdc-sync verify -c <config> -p <pipeline> --table {table} --repair",
    )


def relaxed_columns(old: TableSchema, new: TableSchema) -> frozenset[str]:
    """Columns whose NOT NULL the source dropped while streaming: the target's NOT NULL goes
    too, or every row with NULL there would be a dead letter. Only a change seen happen: a
    target NOT NULL met at start may be the DBA's own constraint, which stays."""
    was = {c.name: c.nullable for c in old.columns}
    return frozenset(c.name for c in new.columns if c.nullable and was.get(c.name) is False)
