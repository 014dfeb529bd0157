"""Binlog row-image decoding (hand-encoded as the server writes it) and GTID state text."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest

from cdc_sync.errors import RowLevelError
from cdc_sync.records import TableId
from cdc_sync.sources.mysql import columns as ct
from cdc_sync.sources.mysql.columns import ColumnSpec
from cdc_sync.sources.mysql.gtids import MariaGtidState
from cdc_sync.sources.mysql.rows import (
    RowDecoder,
    datetime2_reader,
    decimal_reader,
    time2_reader,
)


def test_decimal_positive_negative() -> None:
    read = decimal_reader(4, 2)
    assert read(bytes([0x8C, 0x22]), 0) == (Decimal("12.34"), 2)
    assert read(bytes([0x73, 0xDD]), 0) == (Decimal("-12.34"), 2)
    v, _ = decimal_reader(3, 0)(bytes([0x80, 0x07]), 0)  # 3 digits: one 2-byte group
    assert str(v) == "7"


def test_time2_negative_with_fraction_and_over_24h() -> None:
    # -00:00:01.25 at fsp 2: int part -2 (floor), fraction byte (char)-25
    assert time2_reader(2)(bytes([0x7F, 0xFF, 0xFE, 0xE7]), 0)[0] == -timedelta(
        seconds=1, microseconds=250000
    )
    assert time2_reader(0)(bytes([0x7F, 0xFF, 0xFF]), 0)[0] == timedelta(seconds=-1)
    packed = (100 << 12) << 24  # 100:00:00 at fsp 6
    raw = (packed + 0x800000000000).to_bytes(6, "big")
    assert time2_reader(6)(raw, 0)[0] == timedelta(hours=100)
    raw = (0x800000000000 - 500000).to_bytes(6, "big")
    assert time2_reader(6)(raw, 0)[0] == timedelta(microseconds=-500000)


def _dt2(y: int, mo: int, d: int, h: int, mi: int, s: int) -> bytes:
    v = ((((y * 13 + mo) << 5) | d) << 17) | (h << 12) | (mi << 6) | s
    return (v + 0x8000000000).to_bytes(5, "big")


def test_datetime2() -> None:
    raw = _dt2(2024, 1, 2, 3, 4, 5) + (123456).to_bytes(3, "big")
    assert datetime2_reader(6)(raw, 0) == (datetime(2024, 1, 2, 3, 4, 5, 123456), 8)


def test_zero_date_is_not_null() -> None:
    specs = [ColumnSpec("id", ct.LONG, False), ColumnSpec("d", ct.DATE, False)]
    dec = RowDecoder(TableId("db", "t"), specs)
    ok = (
        bytes([0]) + (5).to_bytes(4, "little") + ((2020 << 9) | (2 << 5) | 29).to_bytes(3, "little")
    )
    assert dec.rows(ok) == [(5, date(2020, 2, 29))]
    null = bytes([0b10]) + (6).to_bytes(4, "little")
    assert dec.rows(null) == [(6, None)]
    zero = bytes([0]) + (7).to_bytes(4, "little") + ((2020 << 9) | 5).to_bytes(3, "little")
    with pytest.raises(RowLevelError, match=r"db\.t: column 'd' \(date\)") as ei:
        dec.rows(zero)
    assert "2020" not in str(ei.value)


def test_maria_gtid_state() -> None:
    s = MariaGtidState("1-2-9,0-1-5")
    assert s.text() == "0-1-5,1-2-9"
    assert s.seen("0-1-5") and not s.seen("0-1-6") and not s.seen("2-1-1")
    s.add("0-3-6")
    assert s.text() == "0-3-6,1-2-9"
    assert MariaGtidState("0-1-5").missing_from(MariaGtidState("0-1-7")) == ["domain 0"]
    assert MariaGtidState("0-1-7").missing_from(MariaGtidState("0-1-7")) == []
