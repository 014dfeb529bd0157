"""Canonical rendering: equal data from PostgreSQL and MySQL drivers renders identically."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from uuid import UUID

import pytest

from cdc_sync.records import ColumnType, Interval, JsonText, Kind
from cdc_sync.runtime.verify_scan import OrderBroken, _check_order
from cdc_sync.verify.canonical import RowDigest, parse_iso_interval, renderer
from cdc_sync.verify.compare import compare_chunk, narrow, summarize

SAME = [
    (ColumnType(Kind.NUMERIC, precision=12, scale=2), Decimal("12.50"), Decimal("12.5")),
    (ColumnType(Kind.NUMERIC), Decimal("0.00"), Decimal("-0")),
    (ColumnType(Kind.BIGINT, unsigned=True), 18446744073709551615, Decimal("18446744073709551615")),
    (ColumnType(Kind.BOOLEAN), True, 1),
    (ColumnType(Kind.REAL), 0.1, 0.10000000149011612),
    (ColumnType(Kind.CHAR, length=5), "ab   ", "ab"),
    (
        ColumnType(Kind.TIMESTAMPTZ),
        datetime(2024, 1, 1, 12, tzinfo=UTC),
        datetime(2024, 1, 1, 14, tzinfo=timezone(timedelta(hours=2))),
    ),
    (ColumnType(Kind.TIMESTAMPTZ), datetime(2024, 1, 1, 12, tzinfo=UTC), datetime(2024, 1, 1, 12)),
    (
        ColumnType(Kind.TIME),
        time(1, 2, 3, 4),
        timedelta(hours=1, minutes=2, seconds=3, microseconds=4),
    ),
    (ColumnType(Kind.JSONB), JsonText('{"b": 1,  "a": [1, 2.50]}'), '{"a":[1,2.5],"b":1}'),
    (ColumnType(Kind.UUID), UUID(int=5), str(UUID(int=5))),
    (ColumnType(Kind.BYTES), b"\x00\xff", bytearray(b"\x00\xff")),
    (ColumnType(Kind.BIT, length=4), "0101", b"\x05"),
    (ColumnType(Kind.SET, enum_labels=("a", "b")), "a,b", {"b", "a"}),
    (ColumnType(Kind.INTERVAL), Interval(14, 3, 5), "P1Y2M3DT0.000005S"),
    (ColumnType(Kind.INTERVAL), Interval(0, 2, 7_000_000), timedelta(days=2, seconds=7)),
    (ColumnType(Kind.INTEGER, array_dims=1), [1, None, 3], (1, None, 3)),
    (ColumnType(Kind.DATE), date(2024, 2, 29), date(2024, 2, 29)),
]


@pytest.mark.parametrize(("ct", "a", "b"), SAME)
def test_renders_alike(ct: ColumnType, a: object, b: object) -> None:
    r = renderer(ct)
    assert r(a) == r(b)


@pytest.mark.parametrize(
    ("ct", "a", "b"),
    [
        (ColumnType(Kind.NUMERIC), Decimal("1.5"), Decimal("1.05")),
        (ColumnType(Kind.TEXT), "a", "a "),
        (ColumnType(Kind.JSON), '{"a": 1}', '{"a": "1"}'),
        (ColumnType(Kind.INTERVAL), Interval(1, 0, 0), Interval(0, 30, 0)),
        (ColumnType(Kind.TEXT, array_dims=1), ["a,b"], ["a", "b"]),
    ],
)
def test_renders_differently(ct: ColumnType, a: object, b: object) -> None:
    r = renderer(ct)
    assert r(a) != r(b)


def test_row_digest_null_and_boundaries() -> None:
    d = RowDigest([ColumnType(Kind.TEXT), ColumnType(Kind.TEXT)])
    assert d(("a", None)) != d(("a", ""))
    assert d(("a,", "b")) != d(("a", ",b"))
    assert d(("x", "y")) == d(("x", "y"))


def test_parse_iso_interval_round_trips() -> None:
    for iv in (Interval(-14, 3, -1_500_000), Interval(0, 0, 0), Interval(25, -2, 86_400_000_001)):
        assert parse_iso_interval(iv.to_iso()) == iv


def test_chunk_compare_and_narrow() -> None:
    src = {1: (10, "s1"), 2: (20, "s2"), 3: (30, "s3")}
    assert compare_chunk(src, {3: 30, 2: 20, 1: 10})[1].missing == []
    assert summarize([1, 2]) == summarize([2, 1])
    diff = narrow(src, {1: 10, 2: 21, 4: 40})
    assert diff.missing == [(3, "s3")]
    assert diff.different == [(2, "s2")]
    assert diff.extra == [4]
    assert narrow(src, {4: 40}, extras=False).extra == []


# -- the generated row digest (the scan's fast path) ------------------------------------------


class _Stamp(datetime):
    """A datetime subclass (some drivers hand those back): the fallback item, same form."""


def _digest(ct: ColumnType, v: object) -> int:
    return RowDigest([ct])((v,))


@pytest.mark.parametrize(("ct", "a", "b"), SAME)
def test_digests_alike(ct: ColumnType, a: object, b: object) -> None:
    assert _digest(ct, a) == _digest(ct, b)


FAST_SAME = [
    (ColumnType(Kind.NUMERIC, precision=12, scale=2), Decimal("1.50"), Decimal("1.5")),
    (ColumnType(Kind.NUMERIC), Decimal("2.00"), 2),  # MySQL DECIMAL(x,0) vs an int
    (ColumnType(Kind.NUMERIC), Decimal("1.5"), 1.5),
    (ColumnType(Kind.NUMERIC), Decimal("1E+2"), Decimal("100.000")),
    (ColumnType(Kind.NUMERIC), Decimal("-0.000"), 0),
    (ColumnType(Kind.NUMERIC), Decimal("NaN"), Decimal("NaN")),
    (ColumnType(Kind.BOOLEAN), True, 1),  # MariaDB tinyint(1)
    (ColumnType(Kind.BOOLEAN), False, 0),
    (ColumnType(Kind.INTEGER), True, 1),
    (ColumnType(Kind.BIGINT), 5, Decimal("5")),  # PostgreSQL numeric(20,0)
    (ColumnType(Kind.TIMESTAMPTZ), datetime(2024, 1, 1, 12), datetime(2024, 1, 1, 12, tzinfo=UTC)),
    (
        ColumnType(Kind.TIMESTAMPTZ),
        datetime(2024, 1, 1, 12, tzinfo=UTC),
        datetime(2024, 1, 1, 13, 30, tzinfo=timezone(timedelta(hours=1, minutes=30))),
    ),
    (
        ColumnType(Kind.TIMESTAMP),
        datetime(2024, 1, 1, 12, 0, 0, 5),
        _Stamp(2024, 1, 1, 12, 0, 0, 5),
    ),
    (ColumnType(Kind.TIMESTAMP), datetime(1, 1, 1), datetime(1, 1, 1, tzinfo=UTC)),
    (ColumnType(Kind.CHAR, length=4), "ab  ", "ab"),
    (ColumnType(Kind.CHAR, length=4), "ab", JsonText("ab  ")),
    (ColumnType(Kind.TEXT), "x", JsonText("x")),
    (ColumnType(Kind.VARCHAR), "ü", "ü"),
]

FAST_DIFFERENT = [
    (ColumnType(Kind.NUMERIC), Decimal("1.5"), Decimal("1.05")),
    # 40 significant digits: the default context's normalize() would round them alike.
    (ColumnType(Kind.NUMERIC), Decimal("1" * 39 + "2"), Decimal("1" * 39 + "3")),
    (ColumnType(Kind.NUMERIC), Decimal("NaN"), Decimal("0")),
    (ColumnType(Kind.NUMERIC), Decimal("Infinity"), Decimal("-Infinity")),
    (ColumnType(Kind.NUMERIC), Decimal("0"), None),
    (ColumnType(Kind.BOOLEAN), True, False),
    (ColumnType(Kind.BOOLEAN), False, None),
    # Python hashes numbers modulo 2**61 - 1, and hash(-1) == hash(-2): never in a digest.
    (ColumnType(Kind.BIGINT), -1, -2),
    (ColumnType(Kind.BIGINT), 0, 2**61 - 1),
    (ColumnType(Kind.BIGINT), 0, None),
    (ColumnType(Kind.TIMESTAMPTZ), datetime(2024, 1, 1, 12), datetime(2024, 1, 1, 12, 0, 0, 1)),
    (
        ColumnType(Kind.TIMESTAMPTZ),
        datetime(2024, 1, 1, 12),
        datetime(2024, 1, 1, 12, tzinfo=timezone(timedelta(hours=1))),
    ),
    (ColumnType(Kind.CHAR, length=4), "ab", " ab"),
    (ColumnType(Kind.TEXT), "a", "a "),
    (ColumnType(Kind.TEXT), None, ""),
    (ColumnType(Kind.TEXT), None, "None"),
    (ColumnType(Kind.TEXT), "1", None),
]


@pytest.mark.parametrize(("ct", "a", "b"), FAST_SAME)
def test_fast_digest_alike(ct: ColumnType, a: object, b: object) -> None:
    assert _digest(ct, a) == _digest(ct, b)


@pytest.mark.parametrize(("ct", "a", "b"), FAST_DIFFERENT)
def test_fast_digest_different(ct: ColumnType, a: object, b: object) -> None:
    assert _digest(ct, a) != _digest(ct, b)


def test_fast_digest_agrees_with_the_renderers() -> None:
    """Over many pairs of values from both engines' drivers: digests equal exactly when
    the canonical texts are equal (the fast items are another form of the same equality)."""
    rng = random.Random(7)
    numbers = [Decimal("1.5"), Decimal("1.50"), Decimal("-0"), Decimal("0.00"), 0, 3, 1.5]
    numbers += [Decimal(rng.randint(-5, 5)).scaleb(-rng.randint(0, 3)) for _ in range(20)]
    stamps = [datetime(2024, 1, 1, h, m) for h in (0, 1, 2) for m in (0, 30)]
    stamps += [s.replace(tzinfo=UTC) for s in stamps]
    stamps += [s.astimezone(timezone(timedelta(hours=1))) for s in stamps if s.tzinfo]
    cases: list[tuple[ColumnType, list[object]]] = [
        (ColumnType(Kind.NUMERIC), numbers),
        (ColumnType(Kind.TIMESTAMPTZ), [*stamps]),
        (ColumnType(Kind.TIMESTAMP), [*stamps]),
        (ColumnType(Kind.BOOLEAN), [True, False, 1, 0, 2]),
        (ColumnType(Kind.BIGINT), [0, 1, -1, -2, True, False, Decimal(1), 2**63 - 1]),
        (ColumnType(Kind.CHAR, length=3), ["a", "a ", " a", "a  ", "", " "]),
    ]
    for ct, values in cases:
        r = renderer(ct)
        for a in [*values, None]:
            for b in [*values, None]:
                same = (None if a is None else r(a)) == (None if b is None else r(b))
                assert (_digest(ct, a) == _digest(ct, b)) == same, (ct.kind, a, b)


def test_chunk_checksums_do_not_cancel() -> None:
    """Values swapped between two rows change the chunk's checksum (sums of raw tuple
    hashes could cancel; the digest hashes each row's tuple hash once more)."""
    d = RowDigest([ColumnType(Kind.BIGINT), ColumnType(Kind.TEXT), ColumnType(Kind.BIGINT)])
    rng = random.Random(11)
    for _ in range(2_000):
        k1, k2 = rng.sample(range(1_000_000), 2)
        x, y = rng.sample(range(-1_000, 1_000), 2)
        a = summarize([d((k1, "n", x)), d((k2, "n", y))])
        b = summarize([d((k1, "n", y)), d((k2, "n", x))])
        assert a != b


def test_row_digest_many_and_width() -> None:
    d = RowDigest([ColumnType(Kind.INTEGER), ColumnType(Kind.NUMERIC), ColumnType(Kind.JSON)])
    rows = [(1, Decimal("1.5"), '{"a": 1}'), (2, None, None)]
    assert list(d.many(rows)) == [d(r) for r in rows]
    assert d((1, Decimal("1.50"), '{ "a":1 }')) == d(rows[0])
    with pytest.raises(ValueError):
        d((1, 2))


def test_check_order() -> None:
    _check_order(None, [(1, "a"), (2, "b")], (0,))
    _check_order((0,), [(1, "a"), (2, "b")], (0,))
    _check_order(None, [(1, "b"), (1, "c"), (2, "a")], (0, 1))
    broken: list[tuple[tuple[object, ...] | None, list[tuple[object, ...]], tuple[int, ...]]] = [
        ((1,), [(1, "a")], (0,)),  # not after the previous chunk
        (None, [(2, "a"), (1, "b")], (0,)),
        (None, [(1, "a"), (1, "a")], (0, 1)),  # equal keys
        (None, [(None, "a"), (1, "b")], (0,)),  # NULL does not order
        (None, [(Decimal("NaN"), "a"), (Decimal(1), "b")], (0,)),
    ]
    for prev, rows, idx in broken:
        with pytest.raises(OrderBroken):
            _check_order(prev, rows, idx)
