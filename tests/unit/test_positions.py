"""Positions are values: ordered, hashable, round-trip through text."""

from __future__ import annotations

import pytest

from cdc_sync.records import PgLsn, Position


def test_lsn_text_round_trip_and_order() -> None:
    a = PgLsn.from_body("0/16B3748")
    b = PgLsn.from_body("1/0")
    assert a < b and b > a and a <= a and a == PgLsn(0x16B3748)
    assert Position.parse(b.to_text()) == b
    assert b.to_text() == "pg:1/0"
    assert len({a, PgLsn(0x16B3748)}) == 1


@pytest.mark.parametrize("bad", ["", "pg:", "pg:1-2", "xx:1/2", "pg:1/2/3", "pg:G/0"])
def test_bad_text_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        Position.parse(bad)


def test_out_of_range() -> None:
    with pytest.raises(ValueError):
        PgLsn(1 << 64)
