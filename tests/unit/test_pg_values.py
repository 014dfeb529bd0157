"""PostgreSQL text output → canonical values, exactly, including edge values and arrays."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, date, datetime, time
from decimal import Decimal

import pytest

from cdc_sync.errors import UnsupportedTypeError
from cdc_sync.records import ColumnType, Interval, JsonText, Kind
from cdc_sync.sources.postgres.types import PgType, TypeResolver
from cdc_sync.sources.postgres.values import (
    converter_for,
    parse_array,
    to_interval,
    to_timestamptz,
)


def conv(kind: Kind, text: str, dims: int = 0) -> object:
    c = converter_for(ColumnType(kind, array_dims=dims))
    return text if c is None else c(text)


@pytest.mark.parametrize(
    ("kind", "text", "want"),
    [
        (Kind.SMALLINT, "-32768", -32768),
        (Kind.INTEGER, "2147483647", 2147483647),
        (Kind.BIGINT, "-9223372036854775808", -9223372036854775808),
        (Kind.BOOLEAN, "t", True),
        (Kind.BOOLEAN, "f", False),
        (Kind.TEXT, "multi\nline ☎ ", "multi\nline ☎ "),
        (Kind.CHAR, "ab   ", "ab   "),
        (Kind.DATE, "0001-01-01", date(1, 1, 1)),
        (Kind.TIME, "23:59:59.999", time(23, 59, 59, 999000)),
        (Kind.TIMESTAMP, "2026-11-23 12:00:00.123456", datetime(2026, 11, 23, 12, 0, 0, 123456)),
        (
            Kind.UUID,
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        ),
        (Kind.BYTES, "\\x00ff10", b"\x00\xff\x10"),
        (Kind.BYTES, "\\x", b""),
        (Kind.ENUM, "happy", "happy"),
    ],
)
def test_scalars(kind: Kind, text: str, want: object) -> None:
    got = conv(kind, text)
    assert got == want and type(got) is type(want)


def test_numeric_keeps_scale_and_special_values() -> None:
    assert str(conv(Kind.NUMERIC, "12.30")) == "12.30"
    assert str(conv(Kind.NUMERIC, "-0.0000000001")) == "-1E-10"
    assert conv(Kind.NUMERIC, "-0.0000000001") == Decimal("-0.0000000001")
    assert conv(Kind.NUMERIC, "NaN").is_nan()  # type: ignore[attr-defined]
    assert conv(Kind.NUMERIC, "Infinity") == Decimal("Infinity")
    assert conv(Kind.NUMERIC, "-Infinity") == Decimal("-Infinity")


def test_floats_with_special_values() -> None:
    assert math.isnan(conv(Kind.REAL, "NaN"))  # type: ignore[arg-type]
    assert conv(Kind.DOUBLE, "-Infinity") == -math.inf
    assert conv(Kind.DOUBLE, "2.2250738585072014e-308") == 2.2250738585072014e-308
    assert conv(Kind.REAL, "3.4028235e+38") == 3.4028235e38


def test_json_is_kept_as_exact_text() -> None:
    got = conv(Kind.JSON, '{"b": 1,   "a": [1, 2.50]}')
    assert isinstance(got, JsonText) and got == '{"b": 1,   "a": [1, 2.50]}'


def test_timestamptz_is_aware_utc() -> None:
    assert to_timestamptz("2026-11-23 06:30:00.5+00") == datetime(
        2026, 11, 23, 6, 30, 0, 500000, tzinfo=UTC
    )
    got = to_timestamptz("2026-11-23 12:00:00+05:30")
    assert got == datetime(2026, 11, 23, 6, 30, tzinfo=UTC) and got.tzinfo is UTC
    assert to_timestamptz("1900-01-01 00:00:00+00:53:28").utcoffset() is not None


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("PT0S", Interval(0, 0, 0)),
        ("P1Y2M3DT4H5M6.789S", Interval(14, 3, 14_706_789_000)),
        ("P-1Y-2M3DT-4H-5M-6.000001S", Interval(-14, 3, -14_706_000_001)),
        ("PT-0.5S", Interval(0, 0, -500_000)),
        ("P-3D", Interval(0, -3, 0)),
        ("PT2562047788H", Interval(0, 0, 2562047788 * 3_600_000_000)),
        ("P1M", Interval(1, 0, 0)),
        ("PT1M", Interval(0, 0, 60_000_000)),
    ],
)
def test_iso_intervals_exact(text: str, want: Interval) -> None:
    assert to_interval(text) == want


@pytest.mark.parametrize("bad", ["P", "1 year", "PT1.1234567S", ""])
def test_bad_intervals_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        to_interval(bad)


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        (Kind.DATE, "infinity"),
        (Kind.DATE, "-infinity"),
        (Kind.DATE, "0044-03-15 BC"),
        (Kind.TIMESTAMP, "infinity"),
        (Kind.TIMESTAMPTZ, "-infinity"),
        (Kind.TIMESTAMP, "10000-01-01 00:00:00"),
        (Kind.TIME, "24:00:00"),
        (Kind.BOOLEAN, "x"),
    ],
)
def test_unrepresentable_values_raise(kind: Kind, text: str) -> None:
    with pytest.raises(ValueError):
        conv(kind, text)


def test_arrays_quotes_nulls_nesting() -> None:
    assert parse_array('{"a b","c,d","e\\"f",NULL,"","NULL","x\\\\y"}', None) == [
        "a b",
        "c,d",
        'e"f',
        None,
        "",
        "NULL",
        "x\\y",
    ]
    assert conv(Kind.INTEGER, "{{1,2},{3,NULL}}", 2) == [[1, 2], [3, None]]
    assert conv(Kind.INTEGER, "{}", 1) == []
    assert conv(Kind.INTEGER, "[0:1]={7,8}", 1) == [7, 8]
    nums = conv(Kind.NUMERIC, "{1.10,NaN}", 1)
    assert isinstance(nums, list) and str(nums[0]) == "1.10" and nums[1].is_nan()
    assert conv(Kind.TIMESTAMPTZ, '{"2026-01-01 00:00:00+00"}', 1) == [
        datetime(2026, 1, 1, tzinfo=UTC)
    ]
    assert conv(Kind.BYTES, '{"\\\\x00ff",NULL}', 1) == [b"\x00\xff", None]
    assert conv(Kind.INTERVAL, '{P1D,"PT-1S"}', 1) == [
        Interval(0, 1, 0),
        Interval(0, 0, -1_000_000),
    ]


@pytest.mark.parametrize("bad", ["{1,2", "1,2}", '{"a}', "", "{1}}"])
def test_bad_arrays_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_array(bad, int)


# -- type resolution -----------------------------------------------------------------------

_CATALOG = {
    5000: PgType(5000, "public", "mood", "e", enum_labels=("sad", "ok")),
    5001: PgType(5001, "public", "_mood", "b", elem=5000),
    5002: PgType(5002, "public", "short_text", "d", base=1043, base_typmod=14),
    5003: PgType(5003, "public", "address", "c"),
    600: PgType(600, "pg_catalog", "point", "b"),
    3904: PgType(3904, "pg_catalog", "int4range", "r"),
    790: PgType(790, "pg_catalog", "money", "b"),
    2205: PgType(2205, "pg_catalog", "regclass", "b"),
    2249: PgType(2249, "pg_catalog", "record", "p"),
}


def resolve(oid: int, typmod: int = -1, dims: int = 1) -> ColumnType:
    return TypeResolver(_CATALOG.get).resolve(oid, typmod, "public.t", "c", dims)[0]


def test_typmods() -> None:
    assert resolve(1043, 24) == ColumnType(Kind.VARCHAR, length=20)
    assert resolve(1042, 9) == ColumnType(Kind.CHAR, length=5)
    assert resolve(1700, (12 << 16 | 2) + 4) == ColumnType(Kind.NUMERIC, precision=12, scale=2)
    assert resolve(1700, (5 << 16 | (-2 & 0x7FF)) + 4).scale == -2
    assert resolve(1700) == ColumnType(Kind.NUMERIC)
    assert resolve(1083, 3) == ColumnType(Kind.TIME, precision=3)
    assert resolve(1114, 0) == ColumnType(Kind.TIMESTAMP, precision=0)
    assert resolve(1186) == ColumnType(Kind.INTERVAL)
    assert resolve(1186, 0x7FFF0000 | 3).precision == 3


def test_arrays_enums_domains() -> None:
    assert resolve(1007) == ColumnType(Kind.INTEGER, array_dims=1)
    assert resolve(1007, dims=2) == ColumnType(Kind.INTEGER, array_dims=2)
    assert resolve(1015, 14) == ColumnType(Kind.VARCHAR, length=10, array_dims=1)
    mood = resolve(5000)
    assert mood.kind is Kind.ENUM and mood.enum_labels == ("sad", "ok")
    assert resolve(5001).array_dims == 1 and resolve(5001).enum_name == "mood"
    assert resolve(5002) == ColumnType(Kind.VARCHAR, length=10)


@pytest.mark.parametrize(
    ("oid", "words"),
    [
        (790, "money"),
        (2205, "regclass"),
        (2249, "pseudo record"),
        (99999, "unknown type oid 99999"),
    ],
)
def test_unsupported_types_name_table_column_type(oid: int, words: str) -> None:
    with pytest.raises(UnsupportedTypeError) as ei:
        resolve(oid)
    assert ei.value.table == "public.t" and ei.value.column == "c"
    assert ei.value.type_name == words
