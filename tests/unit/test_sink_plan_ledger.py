"""Key swaps under a DEFERRABLE source key that several plans see in parts (flush_rows
chunks, rows re-applied one by one after a refusal): the Ledger carries what they learnt."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from cdc_sync.config.rules import TableRules
from cdc_sync.records import UNCHANGED, ChangeRecord, Op, PgLsn, Row
from cdc_sync.sinks.sql.plan import Ledger, plan
from cdc_sync.transforms import compile_table
from tests.unit.test_sink_plan_swaps import SIX, T0, A, S, apply, dele, ins, table, upd

ROTATE = [upd((i, f"v{i}"), (i % 6 + 1, f"v{i}")) for i in (6, 5, 4, 3, 2, 1)]  # i → i+1
SWAPS = [
    [upd((1, "v1"), (2, "v1")), upd((2, "v2"), (1, "v2"))],
    [upd((3, "v3"), (4, "v3")), upd((4, "v4"), (5, "v4")), upd((5, "v5"), (3, "v5"))],
    ROTATE,
]
WANT = [
    {**SIX, **table((1, "v2"), (2, "v1"))},
    {**SIX, **table((4, "v3"), (5, "v4"), (3, "v5"))},
    table(*((i % 6 + 1, f"v{i}") for i in range(1, 7))),
]


def chunked(
    start: dict[object, Row], recs: list[ChangeRecord], sizes: list[int]
) -> dict[object, Row]:
    """Plan and apply ``recs`` in chunks of ``sizes``, with one ledger, as the sink does."""
    ledger, out, i = Ledger(), start, 0
    for n in sizes:
        out = apply(out, plan([(r, A) for r in recs[i : i + n]], ledger))
        ledger.commit()
        i += n
    return apply(out, plan([(r, A) for r in recs[i:]], ledger))


@pytest.mark.parametrize("case", range(len(SWAPS)))
def test_swaps_split_anywhere_across_chunks_keep_every_row(case: int) -> None:
    recs = SWAPS[case]
    inner = range(1, len(recs))
    for cuts in itertools.chain.from_iterable(
        itertools.combinations(inner, k) for k in range(len(recs))
    ):
        sizes = [b - a for a, b in itertools.pairwise((0, *cuts))]
        assert chunked(SIX, recs, sizes) == WANT[case], cuts


def test_a_plan_rolled_back_teaches_nothing() -> None:
    # The batch fails (refused row): rolled back to its savepoint, re-applied row by row.
    recs = SWAPS[0] + [ins(50, "refused")]
    ledger = Ledger()
    plan([(r, A) for r in recs], ledger)  # never committed
    out = SIX
    for r in recs:
        if r.after == (50, "refused"):
            plan([(r, A)], ledger)  # refused: rolled back to the row's savepoint
            continue
        out = apply(out, plan([(r, A)], ledger))
        ledger.commit()
    assert out == WANT[0]


def test_refused_key_change_keeps_the_row_its_old_key_now_holds() -> None:
    # 1→2 applied; 2→1 refused, then the delete of its old key 2 (old_row_gone): key 2
    # holds the row 1→2 wrote, which stays.
    ledger = Ledger()
    first, second = SWAPS[0]
    out = apply(SIX, plan([(first, A)], ledger))
    ledger.commit()
    plan([(second, A)], ledger)
    out = apply(out, plan([(second.old_row_gone(), A)], ledger))
    want = {**SIX, **table((2, "v1"))}
    del want[(1,)]
    assert out == want


def test_chains_across_chunks_still_delete_moved_rows() -> None:
    recs = [
        upd((1, "v1"), (100, "v1")),
        upd((2, "v2"), (1, "v2")),
        ins(7, "x"),
        upd((100, "v1"), (2, "v1")),
        upd((7, "x"), (8, "x")),
        upd((8, "x"), (8, "y")),  # an update in place of a ledgered key
        upd((8, "y"), (9, "y")),
        dele((9, "y")),
    ]
    want = {**SIX, **table((1, "v2"), (2, "v1"))}
    assert chunked(SIX, recs, [1] * len(recs)) == want
    assert chunked(SIX, recs, [3, 2, 2]) == want


def _tx(r: ChangeRecord, xid: str) -> ChangeRecord:
    return r._replace(xid=xid)


def test_the_next_source_transaction_starts_afresh() -> None:
    ledger = Ledger()
    apply(SIX, plan([(_tx(SWAPS[0][0], "t1"), A)], ledger))
    ledger.commit()
    assert len(ledger) == 1 and ledger.xid == "t1"
    plan([(_tx(ins(9, "x"), "t2"), A)], ledger)
    ledger.commit()
    assert len(ledger) == 0 and ledger.xid is None
    # a ledger entry of t1 is not evidence in t2: a different row than t1 wrote moves away
    ledger = Ledger()
    plan([(_tx(SWAPS[0][0], "t1"), A)], ledger)
    ledger.commit()
    groups = plan([(_tx(upd((2, "other"), (7, "other")), "t2"), A)], ledger)
    assert apply({(2,): (2, "other")}, groups) == table((7, "other"))


def test_truncate_clears_the_ledger() -> None:
    ledger = Ledger()
    plan([(SWAPS[0][0], A)], ledger)
    ledger.commit()
    trunc = ChangeRecord(Op.TRUNCATE, A, S, None, None, PgLsn(1), "1", T0)
    plan([(trunc, A), (ins(2, "x"), A)], ledger)
    ledger.commit()
    groups = plan([(upd((2, "x"), (3, "x")), A)], ledger)
    assert apply(table((2, "x")), groups) == table((3, "x"))


def test_fingerprints_follow_differs() -> None:
    nan = float("nan")
    ledger = Ledger()
    key_change = upd((1, "a"), (2, "a"))
    rows: list[tuple[Any, ...]] = [(2, nan), (2, [nan, 1.0]), (2, {"k": [1]}), (2, "a")]
    for row in rows:
        ledger = Ledger()
        plan([(key_change._replace(after=row), A)], ledger)
        ledger.commit()
        again = tuple(float("nan") if v is nan else v for v in row)
        assert not ledger.taken(A, (2,), again), row
        assert ledger.taken(A, (2,), (2, "b"))
    # UNCHANGED on the written side is no evidence, on the old row's side neither
    ledger = Ledger()
    plan([(upd((1, "a"), (2, UNCHANGED), key_only=True), A)], ledger)
    ledger.commit()
    assert not ledger.taken(A, (2,), (2, "zzz"))


def test_memory_is_spent_on_key_changes_only() -> None:
    ledger = Ledger()
    plan([(SWAPS[0][0], A)], ledger)
    ledger.commit()
    plan([(ins(1000 + i, "x"), A) for i in range(500)], ledger)
    ledger.commit()
    assert len(ledger) == 1


def test_rules_keep_the_comparison_when_the_full_old_row_is_kept() -> None:
    # Tables with rules: a key change with its full old row keeps it (its rules applied),
    # with full_before (two-way links) or without, so compared after the rules (rename,
    # upper, a constant) the old row still tells the swapped rows apart.
    rules = TableRules.model_validate(
        {"columns": {"v": {"target": "label", "transforms": ["upper"]}, "origin": {"value": "x"}}}
    )
    want = {(1,): (1, "V2", "x"), (2,): (2, "V1", "x")}
    for full in (True, False):
        tt = compile_table(A, rules, S, "p.tables.public.swap")
        tt.full_before = full
        shaped = []
        for r in SWAPS[0]:
            applied = tt.apply(r)
            assert applied is not None
            assert not applied.record.before_is_key_only
            shaped.append((applied.record, A))
        got = apply({(1,): (1, "V1", "x"), (2,): (2, "V2", "x")}, plan(shaped, Ledger()))
        assert got == want
