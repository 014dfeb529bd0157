"""Binlog row-image decoding (hand-encoded as the server writes it) and GTID state text."""

from __future__ import annotations

import random
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from cdc_sync.records import TableId
from cdc_sync.sources.mysql import columns as ct
from cdc_sync.sources.mysql.columns import ColumnSpec
from cdc_sync.sources.mysql.gtids import MariaGtidState
from cdc_sync.sources.mysql.rows import (
    RowDecoder,
    datetime2_reader,
    decimal_layout,
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
    # The row still decodes (the date None) and the next image too; the problem names the
    # column, never the value.
    assert dec.rows(zero + ok) == [(7, None), (5, date(2020, 2, 29))]
    assert list(dec.problems) == [0]
    problem = dec.problems[0]
    assert problem.column == "d"
    assert re.search(r"db\.t: column 'd' \(date\) holds a zero", problem.reason)
    assert "2020" not in problem.reason
    assert dec.rows(ok) == [(5, date(2020, 2, 29))] and dec.problems == {}
    # Text bytes its character set does not define: that row's problem (a dead letter by
    # on_error), naming column and charset, never the bytes; the next image decodes.
    text = [ColumnSpec("v", ct.VARCHAR, False, max_length=40, charset="utf8mb4")]
    dec = RowDecoder(TableId("db", "t"), text)
    assert dec.rows(bytes([0, 2]) + b"\xff\xfe" + bytes([0, 2]) + b"ok") == [(None,), ("ok",)]
    assert list(dec.problems) == [0] and dec.problems[0].column == "v"
    assert "not valid utf8mb4 text" in dec.problems[0].reason
    # MySQL's latin1 holds the five bytes Windows-1252 leaves undefined: C1 controls.
    latin1 = [ColumnSpec("v", ct.VARCHAR, False, max_length=40, charset="latin1")]
    raw = bytes([0, 6]) + bytes([0x81, 0x8D, 0x8F, 0x90, 0x9D, 0x80])
    assert RowDecoder(TableId("db", "t"), latin1).rows(raw) == [("\x81\x8d\x8f\x90\x9d€",)]


def test_maria_gtid_state() -> None:
    s = MariaGtidState("1-2-9,0-1-5")
    assert s.text() == "0-1-5,1-2-9"
    assert s.seen("0-1-5") and not s.seen("0-1-6") and not s.seen("2-1-1")
    s.add("0-3-6")
    assert s.text() == "0-3-6,1-2-9"
    assert MariaGtidState("0-1-5").missing_from(MariaGtidState("0-1-7")) == ["domain 0"]
    assert MariaGtidState("0-1-7").missing_from(MariaGtidState("0-1-7")) == []


def _decimal_bytes(precision: int, scale: int, groups: list[int], negative: bool) -> bytes:
    """A DECIMAL as the server stores it, from its digit-group values (most significant first)."""
    size, int_groups, frac_groups = decimal_layout(precision, scale)
    v = sum(g << sh for g, (sh, _, _) in zip(groups, int_groups + frac_groups, strict=True))
    top, ones = 1 << (8 * size - 1), (1 << (8 * size)) - 1
    return (v ^ ones ^ top if negative else v ^ top).to_bytes(size, "big")


def _random_image(rng: random.Random, specs: list[ColumnSpec], stamps: list[int]) -> bytes:
    nulls, parts = 0, []
    for i, s in enumerate(specs):
        if s.nullable and rng.random() < 0.2:
            nulls |= 1 << i
            continue
        if s.type == ct.LONGLONG:
            parts.append(rng.randbytes(8))
        elif s.type == ct.VARCHAR:
            text = "".join(rng.choice("aé美 ") for _ in range(rng.randrange(6))).encode()
            parts.append(bytes([len(text)]) + text)
        elif s.type == ct.NEWDECIMAL:
            _, int_groups, frac_groups = decimal_layout(s.precision, s.decimals)
            groups = [rng.randrange(p) for _, _, p in int_groups + frac_groups]
            parts.append(_decimal_bytes(s.precision, s.decimals, groups, rng.random() < 0.5))
        else:  # TIMESTAMP2 / DATETIME2: from a few values, so the caches hit and miss
            n = (s.decimals + 1) // 2
            frac = rng.randrange(10 ** (2 * n)).to_bytes(n, "big") if n else b""
            if s.type == ct.TIMESTAMP2:
                parts.append(rng.choice(stamps).to_bytes(4, "big") + frac)
            else:
                parts.append(_dt2(2000 + rng.choice(stamps) % 50, 12, 31, 23, 59, 58) + frac)
    return nulls.to_bytes((len(specs) + 7) // 8, "little") + b"".join(parts)


def test_generated_decoder_matches_the_generic_loop() -> None:
    """The generated code (decimals as one unscaled integer, cached timestamps, NOT NULL
    columns without a null test) reads exactly what the per-column readers read."""
    rng = random.Random(7)
    specs = [ColumnSpec("id", ct.LONGLONG, False)]
    for p, s in [
        (1, 0),
        (4, 2),
        (5, 0),
        (9, 0),
        (10, 9),
        (12, 2),
        (14, 6),
        (18, 9),
        (20, 0),
        (30, 30),
        (65, 30),
    ]:
        specs.append(ColumnSpec(f"n{p}_{s}", ct.NEWDECIMAL, rng.random() < 0.5, precision=p,
                                decimals=s))  # fmt: skip
    for fsp in range(7):
        specs.append(ColumnSpec(f"ts{fsp}", ct.TIMESTAMP2, fsp % 2 == 0, decimals=fsp))
        specs.append(ColumnSpec(f"dt{fsp}", ct.DATETIME2, fsp % 2 == 1, decimals=fsp))
    specs.append(ColumnSpec("v", ct.VARCHAR, True, max_length=40, charset="utf8mb4"))
    dec = RowDecoder(TableId("db", "t"), specs)
    stamps = [1, 86_400, 1_700_000_000, 2_147_483_647]
    data = b"".join(_random_image(rng, specs, stamps) for _ in range(500))
    generic, o = [], 0
    while o < len(data):
        row, o = dec._checked_image(data, o, len(generic))
        generic.append(row)
    assert repr(dec.rows(data)) == repr(generic)  # repr: Decimal scale and types too
    assert repr(dec.pairs(data)) == repr(list(zip(generic[::2], generic[1::2], strict=True)))


def test_generated_decoder_not_null_column_with_null_bit() -> None:
    """An image setting the null bit of a NOT NULL column is read by the generic loop."""
    specs = [ColumnSpec("id", ct.LONG, False), ColumnSpec("n", ct.NEWDECIMAL, False, precision=4,
                                                          decimals=2)]  # fmt: skip
    dec = RowDecoder(TableId("db", "t"), specs)
    ok = bytes([0]) + (1).to_bytes(4, "little") + bytes([0x8C, 0x22])
    null = bytes([0b10]) + (2).to_bytes(4, "little")
    assert dec.rows(ok + null + ok) == [(1, Decimal("12.34")), (2, None), (1, Decimal("12.34"))]


def test_zero_timestamp_is_refused_after_cached_values() -> None:
    specs = [ColumnSpec("ts", ct.TIMESTAMP2, False, decimals=0)]
    dec = RowDecoder(TableId("db", "t"), specs)
    one = bytes([0]) + (5).to_bytes(4, "big")
    assert dec.rows(one + one) == [(datetime(1970, 1, 1, 0, 0, 5, tzinfo=UTC),)] * 2
    stamp = datetime(1970, 1, 1, 0, 0, 5, tzinfo=UTC)
    assert dec.rows(one + bytes([0]) + bytes(4)) == [(stamp,), (None,)]
    assert dec.problems[1].column == "ts" and "zero" in dec.problems[1].reason
