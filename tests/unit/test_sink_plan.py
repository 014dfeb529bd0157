"""Planning records into set-based statement groups: order, merging, last-row-wins."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cdc_sync.errors import PermanentError
from cdc_sync.records import (
    UNCHANGED,
    ChangeRecord,
    Column,
    ColumnType,
    Kind,
    Op,
    PgLsn,
    TableId,
    TableSchema,
)
from cdc_sync.sinks.sql.plan import Kind as G
from cdc_sync.sinks.sql.plan import plan

A, B = TableId("public", "a"), TableId("public", "b")
S = TableSchema(
    A, (Column("id", ColumnType(Kind.INTEGER)), Column("v", ColumnType(Kind.TEXT))), ("id",)
)


def r(op: Op, id_: int, v: object = "x", old: int | None = None) -> ChangeRecord:
    after = None if op in (Op.DELETE, Op.TRUNCATE) else (id_, v)
    before = (id_, None) if op is Op.DELETE else ((old, None) if old is not None else None)
    if op is Op.TRUNCATE:
        before = None
    return ChangeRecord(op, A, S, before, after, PgLsn(1), "1", datetime(2026, 1, 1, tzinfo=UTC))


def shape(items: list[tuple[ChangeRecord, TableId]]) -> list[tuple[str, str, list[object]]]:
    return [(g.kind.value, g.target.name, list(g.rows)) for g in plan(items)]


def test_consecutive_same_kind_merge_and_last_row_wins() -> None:
    groups = plan([(r(Op.INSERT, 1, "a"), A), (r(Op.UPDATE, 2), A), (r(Op.UPDATE, 1, "b"), A)])
    assert len(groups) == 1 and groups[0].kind is G.UPSERT
    assert groups[0].rows == {(2,): (2, "x"), (1,): (1, "b")}


def test_only_consecutive_runs_merge() -> None:
    items = [
        (r(Op.INSERT, 1), A),
        (r(Op.DELETE, 1), A),
        (r(Op.INSERT, 1), A),
        (r(Op.INSERT, 2), B),
        (r(Op.INSERT, 3), A),
    ]
    assert shape(items) == [
        ("upsert", "a", [(1,)]),
        ("delete", "a", [(1,)]),
        ("upsert", "a", [(1,)]),
        ("upsert", "b", [(2,)]),
        ("upsert", "a", [(3,)]),
    ]


def test_key_change_is_delete_then_upsert_unless_values_unchanged() -> None:
    assert shape([(r(Op.UPDATE, 2, old=1), A)]) == [
        ("delete", "a", [(1,)]),
        ("upsert", "a", [(2,)]),
    ]
    (g,) = plan([(r(Op.UPDATE, 2, UNCHANGED, old=1), A)])
    assert g.kind is G.REKEY and g.old_key == (1,) and g.unchanged == (1,)


def test_unchanged_sets_split_groups() -> None:
    items = [(r(Op.UPDATE, 1, UNCHANGED), A), (r(Op.UPDATE, 2, UNCHANGED), A), (r(Op.UPDATE, 3), A)]
    assert [(g.kind, g.unchanged, len(g.rows)) for g in plan(items)] == [
        (G.UPDATE, (1,), 2),
        (G.UPSERT, (), 1),
    ]


def test_truncate_never_merges() -> None:
    assert [g.kind for g in plan([(r(Op.TRUNCATE, 0), A), (r(Op.TRUNCATE, 0), A)])] == [
        G.TRUNCATE,
        G.TRUNCATE,
    ]


def test_malformed_record_is_permanent() -> None:
    bad = ChangeRecord(Op.DELETE, A, S, None, None, PgLsn(1), "1", datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(PermanentError, match=r"public\.a"):
        plan([(bad, A)])
