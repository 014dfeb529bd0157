"""Exact types across engines, value by value: MySQL→PG, MySQL→MySQL, PG→MySQL (PG→PG: e2e)."""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from cdc_sync.records import Interval
from tests.integration.routes import Route, column_types, execute, fetch, norm, norm_json

pytestmark = pytest.mark.integration

MY_TYPED = """
CREATE TABLE typed (
  id int PRIMARY KEY,
  ti tinyint, tiu tinyint unsigned, si smallint, siu smallint unsigned,
  mi mediumint, miu mediumint unsigned, i int, iu int unsigned, bi bigint, biu bigint unsigned,
  b1 tinyint(1), dec65 decimal(65,30), dec2 decimal(12,2), f float, d double,
  c char(10), vc varchar(100), tt tinytext, t text, mt mediumtext, lt longtext,
  bin binary(4), vb varbinary(50), bl blob,
  dt date, tm time(6), dtm datetime(6), ts timestamp(6) NULL DEFAULT NULL, y year,
  e enum('new','open','closed'), st set('a','b','c'), bt bit(10), j json
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
"""
MY_COLS = (
    "id, ti, tiu, si, siu, mi, miu, i, iu, bi, biu, b1, dec65, dec2, f, d, c, vc, tt, t, mt, lt, "
    "bin, vb, bl, dt, tm, dtm, ts, y, e, st, bt, j"
)
MY_ROWS: list[tuple[Any, ...]] = [
    (
        1, 127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295,
        9223372036854775807, 18446744073709551615, 1,
        Decimal("12345678901234567890123456789012345.123456789012345678901234567890"),
        Decimal("-1234567890.12"), 1.5, -2.5e300, "abc", "emoji 😀 ✓ Łódź", "tiny",
        "text " * 100, "medium 美咲", "x" * 70_000, b"\x00\x01\x02\x03", b"\xff\x00",
        bytes(range(256)), date(1000, 1, 1), timedelta(hours=-838, minutes=-59, seconds=-59),
        datetime(9999, 12, 31, 23, 59, 59, 999999), datetime(2038, 1, 19, 3, 14, 7, 499999),
        2155, "closed", "a,c", 0b1011, '{"a": [1, 2.5, "x"], "b": null}',
    ),
    (
        2, -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0, 0,
        Decimal("-0.000000000000000000000000000001"), Decimal("0.00"), -0.25, 1e-300, "", "",
        "", "", "", "", b"\x00\x00\x00\x00", b"", b"", date(9999, 12, 31),
        timedelta(hours=838, minutes=59, seconds=59), datetime(1000, 1, 1),
        datetime(1970, 1, 1, 0, 0, 1), 1901, "new", "", 0, "[]",
    ),
    (
        3, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, Decimal("1"), Decimal("1.5"), 2.0, 3.0, "a", "b",
        "c", "d", "e", "f", b"abcd", b"\x00", b"\x00\x00", date(2024, 2, 29),
        timedelta(hours=25, minutes=30, microseconds=500000), datetime(2024, 2, 29, 12, 0),
        datetime(2024, 2, 29, 12, 0, 0, 1), 2024, "open", "a,b,c", 1023, '{"k": "v"}',
    ),
    (4, *([None] * 33)),
]  # fmt: skip


# The target's column types as docs/types.md maps them (the table created by cdc-sync).
MY_TO_PG_TYPES = {
    "id": "integer", "ti": "smallint", "tiu": "smallint", "si": "smallint", "siu": "integer",
    "mi": "integer", "miu": "integer", "i": "integer", "iu": "bigint", "bi": "bigint",
    "biu": "numeric(20,0)", "b1": "smallint", "dec65": "numeric(65,30)",
    "dec2": "numeric(12,2)", "f": "real", "d": "double precision", "c": "character(10)",
    "vc": "character varying(100)", "tt": "text", "t": "text", "mt": "text", "lt": "text",
    "bin": "bytea", "vb": "bytea", "bl": "bytea", "dt": "date", "tm": "interval",
    "dtm": "timestamp(6) without time zone", "ts": "timestamp(6) with time zone",
    "y": "smallint", "e": "typed_e", "st": "text", "bt": "bit(10)", "j": "jsonb",
}  # fmt: skip


def _write_my_rows(dsn: str) -> None:
    """Every row of the matrix, then updates and a delete (see ``_changes``)."""
    marks = ", ".join(["%s"] * 34)
    for row in MY_ROWS:
        execute(dsn, f"INSERT INTO typed ({MY_COLS}) VALUES ({marks})", params=row)
    _changes(dsn)


def _bits(v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, bytes):
        return int.from_bytes(v, "big")
    return int(str(v), 2)


def _my_expected(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A source row as read back from MariaDB, normalised for comparison."""
    out = [norm(v) for v in row]
    out[32] = _bits(row[32])
    out[33] = norm_json(row[33])
    out[31] = ",".join(sorted(row[31])) if isinstance(row[31], set) else row[31]
    return tuple(out)


def _changes(dsn: str) -> None:
    """Update and delete too, so before-images and keys of every type take part."""
    execute(
        dsn,
        "UPDATE typed SET vc = 'updated ✓', tm = '-00:00:01.5', bt = b'1' WHERE id = 3",
        "DELETE FROM typed WHERE id = 2",
    )


def test_mysql_to_pg_types(tmp_path: Path, my_source_dsn: str, target_dsn: str) -> None:
    db = my_source_dsn.rsplit("/", 1)[-1]
    execute(my_source_dsn, MY_TYPED)
    r = Route(tmp_path, my_source_dsn, target_dsn, {f"{db}.typed": "public.typed"})
    r.drain()  # creates the target table, stores the start position
    _write_my_rows(my_source_dsn)
    r.drain()
    src = [_my_expected(x) for x in fetch(my_source_dsn, "typed", MY_COLS)]
    got = []
    for row in fetch(target_dsn, "public.typed", MY_COLS):
        out = [norm(v) for v in row]
        out[16] = row[16].rstrip(" ") if row[16] is not None else None  # char(10) pads
        out[32] = _bits(row[32])
        out[33] = norm_json(row[33])
        got.append(tuple(out))
    assert len(got) == len(src) == 3
    for a, b in zip(src, got, strict=True):
        for name, x, y in zip(MY_COLS.split(", "), a, b, strict=True):
            assert x == y, f"{name}: source {x!r} target {y!r}"
    assert column_types(target_dsn, "public.typed") == MY_TO_PG_TYPES


def test_mysql_to_mysql_types(tmp_path: Path, my_source_dsn: str, my_target_dsn: str) -> None:
    db, tdb = my_source_dsn.rsplit("/", 1)[-1], my_target_dsn.rsplit("/", 1)[-1]
    execute(my_source_dsn, MY_TYPED)
    r = Route(tmp_path, my_source_dsn, my_target_dsn, {f"{db}.typed": f"{tdb}.typed"})
    r.drain()
    _write_my_rows(my_source_dsn)
    r.drain()
    src = [_my_expected(x) for x in fetch(my_source_dsn, "typed", MY_COLS)]
    got = [_my_expected(x) for x in fetch(my_target_dsn, "typed", MY_COLS)]
    assert len(got) == 3
    for a, b in zip(src, got, strict=True):
        for name, x, y in zip(MY_COLS.split(", "), a, b, strict=True):
            assert x == y, f"{name}: source {x!r} target {y!r}"
    # The same types as the source: TINYINT(1), BLOB and BINARY(n) kept (docs/types.md).
    assert column_types(my_target_dsn, "typed") == column_types(my_source_dsn, "typed")


# UUIDs whose last bytes are zero: the binlog carries BINARY(n) without its trailing zero
# bytes, and the server compares keys with them, so a lost pad loses the row.
UUID_0 = UUID("0b8f1d2e-3c4a-4b5c-8d6e-7f8091a2b300").bytes
UUID_00 = UUID("5d41402a-bc4b-4a76-b971-9d911017c500").bytes[:14] + b"\x00\x00"


def test_mysql_to_mysql_binary16_snapshot_and_stream(
    tmp_path: Path, my_source_dsn: str, my_target_dsn: str
) -> None:
    """BINARY(16) stays BINARY(16), with the source's bytes, trailing zeros included, whether
    the initial snapshot copied the row or the binlog carried it; key lookups find the rows."""
    db, tdb = my_source_dsn.rsplit("/", 1)[-1], my_target_dsn.rsplit("/", 1)[-1]
    execute(
        my_source_dsn,
        "CREATE TABLE ids (id binary(16) PRIMARY KEY, ref binary(16), b4 binary(4) NOT NULL, "
        "vb varbinary(16))",
    )
    execute(
        my_source_dsn, "INSERT INTO ids VALUES (%s, %s, x'00', x'6100')", params=(UUID_0, UUID_00)
    )
    execute(my_source_dsn, "INSERT INTO ids VALUES (x'ab', NULL, x'ab000000', NULL)")
    r = Route(tmp_path, my_source_dsn, my_target_dsn, {f"{db}.ids": f"{tdb}.ids"})
    r.drain()  # the two rows predate the pipeline: the initial snapshot copies them
    cols = "id, ref, b4, vb"
    assert fetch(my_target_dsn, "ids", cols) == fetch(my_source_dsn, "ids", cols)
    want = {"id": "binary(16)", "ref": "binary(16)", "b4": "binary(4)", "vb": "varbinary(16)"}
    assert column_types(my_target_dsn, "ids") == column_types(my_source_dsn, "ids") == want
    execute(
        my_source_dsn,
        "INSERT INTO ids VALUES (%s, %s, x'0000', x'00')",
        params=(UUID_00, UUID_0),
    )
    execute(my_source_dsn, "UPDATE ids SET ref = x'01', b4 = x'7a' WHERE id = %s", params=(UUID_0,))
    # BINARY compares every byte: x'ab' alone would not match the padded key
    execute(my_source_dsn, "DELETE FROM ids WHERE id = %s", params=(b"\xab" + bytes(15),))
    r.drain()
    src = fetch(my_source_dsn, "ids", cols)
    assert [row[0] for row in src] == [UUID_0, UUID_00]
    assert src[0][1:3] == (b"\x01" + bytes(15), b"z\x00\x00\x00")
    assert fetch(my_target_dsn, "ids", cols) == src
    assert column_types(my_target_dsn, "ids") == want


PG_TYPED = (
    "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')",
    """CREATE TABLE typed (
      id int PRIMARY KEY, si smallint, i int, bi bigint, n numeric(65,30), nu numeric,
      r real, d double precision, t text, vc varchar(100), c char(10), b boolean, dt date,
      tm time(6), ts timestamp(6), tstz timestamptz(6), iv interval, u uuid, j json, jb jsonb,
      byt bytea, e mood)""",
)
PG_COLS = "id, si, i, bi, n, nu, r, d, t, vc, c, b, dt, tm, ts, tstz, iv, u, j, jb, byt, e"
PG_ROWS: list[tuple[Any, ...]] = [
    (
        1, 32767, 2147483647, 9223372036854775807,
        Decimal("12345678901234567890123456789012345.123456789012345678901234567890"),
        Decimal("-123.000000000000000000000000000001"), 1.5, -2.5e300, "emoji 😀 Łódź",
        "vc ✓", "abc", True, date(1000, 1, 1), time(23, 59, 59, 999999),
        datetime(9999, 12, 31, 23, 59, 59, 999999), "2038-01-19 03:14:07.499999+00",
        timedelta(days=3, hours=4, microseconds=5), UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        '{"b": 1,  "a": [1, 2]}', '{"x": null}', b"\x00\xff", "happy",
    ),
    (
        2, -32768, -2147483648, -9223372036854775808, Decimal("0"), Decimal("0.5"), -0.25,
        1e-300, "", "", "", False, date(9999, 12, 31), time(0, 0), datetime(1000, 1, 1),
        "1970-01-01 00:00:01+00", timedelta(0), UUID(int=0), "[]", "[]", b"", "sad",
    ),
    (3, *([None] * 21)),
]  # fmt: skip


# MariaDB's spellings; its JSON is LONGTEXT with a json_valid() check.
PG_TO_MY_TYPES = {
    "id": "int(11)", "si": "smallint(6)", "i": "int(11)", "bi": "bigint(20)",
    "n": "decimal(65,30)", "nu": "decimal(65,30)", "r": "float", "d": "double",
    "t": "longtext", "vc": "varchar(100)", "c": "char(10)", "b": "tinyint(1)", "dt": "date",
    "tm": "time(6)", "ts": "datetime(6)", "tstz": "timestamp(6)", "iv": "varchar(100)",
    "u": "char(36)", "j": "longtext", "jb": "longtext", "byt": "longblob",
    "e": "enum('sad','ok','happy')",
}  # fmt: skip


def test_pg_to_mysql_types(tmp_path: Path, source_dsn: str, my_target_dsn: str) -> None:
    tdb = my_target_dsn.rsplit("/", 1)[-1]
    execute(source_dsn, *PG_TYPED)
    r = Route(tmp_path, source_dsn, my_target_dsn, {"public.typed": f"{tdb}.typed"},
              pipeline="pg_to_my_" + source_dsn.rsplit("/", 1)[-1])  # fmt: skip
    r.drain()
    marks = ", ".join(["%s"] * 22)
    for row in PG_ROWS:
        execute(source_dsn, f"INSERT INTO typed ({PG_COLS}) VALUES ({marks})", params=row)
    execute(source_dsn, "UPDATE typed SET vc = 'updated', b = NULL WHERE id = 2")
    r.drain()
    src = fetch(source_dsn, "typed", PG_COLS)
    got = fetch(my_target_dsn, "typed", PG_COLS)
    assert len(got) == len(src) == 3
    for a, b in zip(src, got, strict=True):
        for name, x, y in zip(PG_COLS.split(", "), a, b, strict=True):
            assert _pg_as_mysql(name, x) == _mysql_read(name, y), name
    assert column_types(my_target_dsn, "typed") == PG_TO_MY_TYPES


def _pg_as_mysql(name: str, v: Any) -> Any:
    """What the MySQL target must hold for a PostgreSQL value (docs/types.md)."""
    if v is None:
        return None
    if name == "c":
        return v.rstrip(" ")  # MySQL CHAR reads without its pad
    if name == "iv":  # no months in these values: psycopg's timedelta is exact
        return Interval(0, v.days, v.seconds * 1_000_000 + v.microseconds).to_iso()
    if name == "tm":
        return timedelta(
            hours=v.hour, minutes=v.minute, seconds=v.second, microseconds=v.microsecond
        )
    if name == "u":
        return str(v)
    if name in ("j", "jb"):
        return norm_json(v) if isinstance(v, str) else v
    return norm(v)


def _mysql_read(name: str, v: Any) -> Any:
    if v is None:
        return None
    if name == "iv":
        return str(v)  # ISO 8601 text (docs/types.md)
    if name in ("j", "jb"):
        return json.loads(v)
    return norm(v)
