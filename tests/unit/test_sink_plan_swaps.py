"""Key changes under a DEFERRABLE source key: swaps and rotations in one statement keep
every row; ordinary chains of key changes still delete what they moved away."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cdc_sync.records import (
    UNCHANGED,
    ChangeRecord,
    Column,
    ColumnType,
    Kind,
    Op,
    PgLsn,
    Row,
    TableId,
    TableSchema,
)
from cdc_sync.sinks.sql.plan import Group, differs, plan
from cdc_sync.sinks.sql.plan import Kind as G

A = TableId("public", "swap")
S = TableSchema(
    A, (Column("id", ColumnType(Kind.INTEGER)), Column("v", ColumnType(Kind.TEXT))), ("id",)
)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ins(id_: int, v: str) -> ChangeRecord:
    return ChangeRecord(Op.INSERT, A, S, None, (id_, v), PgLsn(1), "1", T0)


def upd(old: Row, new: Row, key_only: bool = False) -> ChangeRecord:
    before = (old[0], None) if key_only else old
    return ChangeRecord(Op.UPDATE, A, S, before, new, PgLsn(1), "1", T0, key_only)


def dele(old: Row) -> ChangeRecord:
    return ChangeRecord(Op.DELETE, A, S, old, None, PgLsn(1), "1", T0)


def apply(target: dict[object, Row], groups: list[Group]) -> dict[object, Row]:
    """What a target with a (non-deferrable) key on ``id`` holds after the groups."""
    out = dict(target)
    for g in groups:
        if g.kind in (G.UPSERT, G.UPDATE):
            for key, row in g.rows.items():
                out[key] = row if g.kind is G.UPSERT else _merge(out[key], row)
        elif g.kind is G.DELETE:
            for key in g.rows:
                out.pop(key, None)
        elif g.kind is G.REKEY:
            assert g.old_key is not None
            (row,) = g.rows.values()
            moved = out.pop(g.old_key)
            out[(row[0],)] = _merge(moved, row)
        else:
            out.clear()
    return out


def _merge(old: Row, new: Row) -> Row:
    return tuple(o if n is UNCHANGED else n for o, n in zip(old, new, strict=True))


def table(*rows: Row) -> dict[object, Row]:
    return {(r[0],): r for r in rows}


def run(start: dict[object, Row], records: list[ChangeRecord]) -> dict[object, Row]:
    return apply(start, plan([(r, A) for r in records]))


SIX = table(*((i, f"v{i}") for i in range(1, 7)))


@pytest.mark.parametrize("order", ["forward", "backward"])
def test_swap_in_one_statement_keeps_both_rows(order: str) -> None:
    recs = [upd((1, "v1"), (2, "v1")), upd((2, "v2"), (1, "v2"))]
    if order == "backward":
        recs = [upd((2, "v2"), (1, "v2")), upd((1, "v1"), (2, "v1"))]
    assert run(SIX, recs) == {**SIX, **table((1, "v2"), (2, "v1"))}


@pytest.mark.parametrize("order", [[3, 4, 5, 6], [6, 5, 4, 3], [5, 3, 6, 4]])
def test_rotation_in_one_statement_keeps_every_row(order: list[int]) -> None:
    # 3→4→5→6→3 in whatever order the source's executor visited the rows
    nxt = {3: 4, 4: 5, 5: 6, 6: 3}
    recs = [upd((i, f"v{i}"), (nxt[i], f"v{i}")) for i in order]
    expected = {**SIX, **table((4, "v3"), (5, "v4"), (6, "v5"), (3, "v6"))}
    assert run(SIX, recs) == expected


def test_chain_in_several_statements_still_deletes_moved_rows() -> None:
    recs = [
        upd((1, "v1"), (100, "v1")),
        upd((2, "v2"), (1, "v2")),
        upd((100, "v1"), (2, "v1")),
        ins(100, "new100"),
        dele((3, "v3")),
        ins(3, "again3"),
        upd((3, "again3"), (7, "again3")),
    ]
    expected = {**SIX, **table((1, "v2"), (2, "v1"), (100, "new100"), (7, "again3"))}
    del expected[(3,)]
    assert run(SIX, recs) == expected


def test_move_there_and_back_deletes_the_row_moved_away() -> None:
    # key 9 is new: 1→9 then 9→1 (two statements); the row at 9 is the moved one
    recs = [upd((1, "v1"), (9, "v1")), upd((9, "v1"), (1, "v1"))]
    assert run(SIX, recs) == SIX


def test_key_only_old_rows_keep_the_plain_delete() -> None:
    # Without the full old row the rows cannot be told apart: delete + upsert as before.
    recs = [upd((1, "v1"), (2, "v1"), key_only=True), upd((2, "v2"), (1, "v2"), key_only=True)]
    groups = plan([(r, A) for r in recs])
    assert [g.kind for g in groups] == [G.DELETE, G.UPSERT, G.DELETE, G.UPSERT]


def test_unchanged_values_filled_from_the_full_old_row() -> None:
    # A TOASTed column unchanged by the key change: the old row has it, so the move is a
    # whole-row upsert and the swap keeps both rows.
    recs = [upd((1, "v1"), (2, UNCHANGED)), upd((2, "v2"), (1, UNCHANGED))]
    groups = plan([(r, A) for r in recs])
    assert G.REKEY not in [g.kind for g in groups]
    assert apply(SIX, groups) == {**SIX, **table((1, "v2"), (2, "v1"))}


def test_rekey_stays_without_a_full_old_row() -> None:
    (g,) = plan([(upd((1, "v1"), (2, UNCHANGED), key_only=True), A)])
    assert g.kind is G.REKEY and g.old_key == (1,)


def test_deferred_insert_over_a_key_then_move_of_the_original() -> None:
    # SET CONSTRAINTS ALL DEFERRED: a new row 2 first, then the original row 2 moves to 8
    recs = [ins(2, "new"), upd((2, "v2"), (8, "v2"))]
    assert run(SIX, recs) == {**SIX, **table((2, "new"), (8, "v2"))}


def test_truncate_forgets_earlier_writes() -> None:
    recs = [
        upd((1, "v1"), (2, "v1")),
        ChangeRecord(Op.TRUNCATE, A, S, None, None, PgLsn(1), "1", T0),
        ins(2, "x"),
        upd((2, "x"), (3, "x")),
    ]
    assert run(SIX, recs) == table((3, "x"))


def test_differs_ignores_unchanged_and_nan() -> None:
    nan = float("nan")
    assert not differs((1, nan), (1, float("nan")))
    assert not differs((1, [nan]), (1, [float("nan")]))
    assert not differs((1, UNCHANGED), (1, "x"))
    assert differs((1, "a"), (1, "b"))
