"""Values at their types' limits, and bytes that are not UTF-8, MariaDB → PostgreSQL: every
value arrives exact (latin1 decoded as latin1, binary kept as bytes, never mangled)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from tests.conftest import Report
from tests.integration.routes import Route, my_connect

pytestmark = [pytest.mark.integration]

DDL = (
    "CREATE TABLE edge (id int PRIMARY KEY, "
    "big bigint, ubig bigint unsigned, dec65 decimal(65,30), dbl double, "
    "dt datetime(6), d date, t time(6), "
    "l varchar(120) CHARACTER SET latin1, b varbinary(40), bl blob, "
    "u varchar(40) CHARACTER SET utf8mb4)"
)
ALL_BYTES = bytes(range(256))
ROWS = [
    (
        1, 2**63 - 1, 2**64 - 1, Decimal("9" * 35 + "." + "9" * 30), 1.7976931348623157e308,
        datetime(9999, 12, 31, 23, 59, 59, 999999), date(9999, 12, 31),
        timedelta(hours=838, minutes=59, seconds=59), "café ÿ ñ", b"\xff\xfe\x00\x01",
        ALL_BYTES, "emoji 😀 and 中文",
    ),
    (
        2, -(2**63), 0, Decimal("-" + "9" * 35 + "." + "9" * 30), -2.2250738585072014e-308,
        datetime(1000, 1, 1, 0, 0, 0), date(1000, 1, 1),
        -timedelta(hours=838, minutes=59, seconds=59), bytes(range(0xA0, 0x100)).decode("latin1"),
        b"", b"\x80\x81\xc3\x28", "",
    ),
    (3, None, None, None, None, None, None, None, None, None, None, None),
]  # fmt: skip


def _norm(v: object) -> object:
    """psycopg's forms: bytea as memoryview; a TIME within a day as time."""
    if isinstance(v, memoryview):
        return bytes(v)
    if isinstance(v, time):
        return datetime.combine(date.min, v) - datetime.combine(date.min, time(0))
    return v


def test_values_at_their_limits_and_non_utf8_bytes(
    tmp_path: Path, my_source_dsn: str, target_dsn: str, report: Report
) -> None:
    db = my_source_dsn.rsplit("/", 1)[-1]
    with my_connect(my_source_dsn) as c, c.cursor() as cur:
        cur.execute(DDL)
    r = Route(tmp_path, my_source_dsn, target_dsn, {f"{db}.edge": "public.edge"})
    r.drain()
    with my_connect(my_source_dsn) as c, c.cursor() as cur:
        cur.executemany("INSERT INTO edge VALUES (" + ", ".join(["%s"] * 12) + ")", ROWS)
    r.drain()
    with psycopg.connect(target_dsn) as c:
        got = [tuple(row) for row in c.execute("SELECT * FROM edge ORDER BY id")]
    bad = []
    for want, have in zip(ROWS, got, strict=True):
        for i, (w, h) in enumerate(zip(want, have, strict=True)):
            if w != _norm(h):
                bad.append((want[0], i, w, h))
    report(
        rows=len(ROWS),
        lost=len(bad),
        message="bigint/unsigned/decimal(65,30)/double/datetime/date/time limits, latin1, "
        f"all 256 byte values in blob: {len(bad)} values differ",
    )
    assert len(got) == len(ROWS)
    assert not bad, bad
