"""bench/my_target.py's cross-engine row comparison, without servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from bench.my_target import compare_rows
from bench.verify import content_check

AT = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def _pg(i: int, bal: str = "1.50", at: datetime = AT) -> tuple[object, ...]:
    # As psycopg returns it: aware timestamptz, bool.
    return (i, "Zoë", None, "a@x.org", 1, False, Decimal(bal), at)


def _my(i: int, bal: str = "1.50", at: datetime = AT) -> tuple[object, ...]:
    # As PyMySQL returns it in a UTC session: naive TIMESTAMP, TINYINT(1) as int.
    return (i, "Zoë", None, "a@x.org", 1, 0, Decimal(bal), at.replace(tzinfo=None))


def test_same_values_across_engines_are_equal() -> None:
    other_zone = AT.astimezone(timezone(timedelta(hours=2)))
    cmp = compare_rows([_pg(1), _pg(2, at=other_zone)], [_my(1), _my(2)])
    assert cmp.equal and cmp.source_rows == cmp.target_rows == 2
    assert cmp.source_sha256 == cmp.target_sha256
    assert content_check(cmp).ok


def test_missing_extra_and_different_rows_are_counted() -> None:
    later = AT + timedelta(microseconds=1)
    cmp = compare_rows(
        [_pg(1), _pg(2), _pg(3, bal="2.00"), _pg(5, at=later)],
        [_my(1), _my(3), _my(4), _my(5)],
    )
    assert (cmp.missing, cmp.extra, cmp.different) == (1, 1, 2)
    assert not content_check(cmp).ok
    assert any("missing in target" in e for e in cmp.examples)
