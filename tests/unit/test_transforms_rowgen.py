"""The generated row function does what the per-column loop over the plans did."""

from __future__ import annotations

import itertools

from cdc_sync.records import UNCHANGED
from cdc_sync.transforms.rowgen import Hot, Row, generate


def loop(hot: tuple[Hot, ...], row: Row, bits: int) -> tuple[Row, int]:
    """The reference: the loop TableTransform ran before the code was generated."""
    out: list[object] = []
    for idx, steps, const, vbit in hot:
        if steps is None:
            if idx >= 0 and row[idx] != const:
                bits |= vbit
            out.append(const)
            continue
        v = row[idx]
        if steps and v is not UNCHANGED:
            for fn, bit, on_null in steps:
                if v is None and not on_null:
                    continue
                nv = fn(v)
                if nv is not v and (nv != v or type(nv) is not type(v)):
                    bits |= bit
                v = nv
        out.append(v)
    return tuple(out), bits


def upper(v: object) -> object:
    return str(v).upper()


def to_bool(v: object) -> object:
    return {1: True, 0: False}.get(v, v)  # type: ignore[call-overload]


def or_default(v: object) -> object:
    return "n/a" if v is None else v


def drop_value(_v: object) -> object:
    return None


HOT: tuple[Hot, ...] = (
    (0, (), None, 0),  # the key, no rules
    (1, ((upper, 1, False), (or_default, 2, True)), None, 0),  # skips NULL, then sees it
    (2, ((to_bool, 4, False),), None, 0),  # 1 -> True changes the value (type), 1 == True
    (3, ((drop_value, 8, False), (or_default, 16, True)), None, 0),  # redact then default
    (-1, None, "crm", 32),  # a target-only constant
    (4, None, 7, 64),  # a constant replacing a source column
)


def test_generated_matches_the_loop_on_every_combination() -> None:
    values = ([1], ["ab", "AB", None, UNCHANGED], [1, 0, True, 5, None], ["x", None, UNCHANGED],
              [7, 8, None, UNCHANGED])  # fmt: skip
    fn = generate(HOT)
    for row in itertools.product(*values):
        for bits in (0, 1 << 10):
            assert fn(row, bits) == loop(HOT, row, bits), row
            got, _ = fn(row, bits)
            want, _ = loop(HOT, row, bits)
            assert [type(v) for v in got] == [type(v) for v in want], row


def test_no_value_reaches_the_source_text() -> None:
    # Constants and functions are bound in the namespace, never written into the code.
    fn = generate(((-1, None, "'); import os; ('", 1),))
    assert fn((), 0) == (("'); import os; ('",), 0)
