"""PG→PG end to end through the CLI: every supported type, exact values, all operations."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.harness import Setup, audit_rows, column_types, rows_as_text, sql

pytestmark = pytest.mark.integration

DDL = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE everything (
    id bigint PRIMARY KEY,
    i2 smallint, i4 integer, i8 bigint,
    n numeric, n122 numeric(12,2), n3810 numeric(38,10),
    r real, d double precision,
    t text, vc varchar(20), c char(5),
    b boolean,
    dt date, tm time, tm3 time(3), ts timestamp, ts0 timestamp(0), tstz timestamptz,
    iv interval,
    u uuid,
    js json, jb jsonb,
    by bytea,
    m mood,
    ai int[], at text[], an numeric[], ats timestamptz[], a2 integer[][], au uuid[], am mood[]
);
"""

ROWS = [
    # every column NULL
    "INSERT INTO everything (id) VALUES (1)",
    # ordinary values
    """INSERT INTO everything VALUES (2, 1, 2, 3, 1.5, 12.30, 123.4560000001,
        1.5, 2.25, 'hello', 'varchar', 'ab', true,
        '2026-11-23', '12:34:56.789', '01:02:03.456', '2026-11-23 12:00:00.123456',
        '2026-11-23 12:00:00', '2026-11-23 12:00:00.5+05:30',
        '1 year 2 mons 3 days 04:05:06.789', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
        '{"b": 1,   "a": [1, 2.50]}', '{"b": 1, "a": [1, 2.50]}', '\\x00ff10',
        'happy', '{1,NULL,3}', '{"a b","c,d","e\\"f",NULL,""}', '{1.10,NaN}',
        '{"2026-01-01 00:00:00+00"}', '{{1,2},{3,4}}',
        '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}', '{sad,ok}')""",
    # edge values
    """INSERT INTO everything VALUES (3, -32768, -2147483648, -9223372036854775808,
        'NaN', -9999999999.99, -0.0000000001,
        'NaN', '-Infinity', '', '', '', false,
        '0001-01-01', '00:00:00', '23:59:59.999', '1970-01-01 00:00:00',
        '2000-02-29 23:59:59', '1900-01-01 00:00:00+00',
        '-1 year -2 mons +3 days -04:05:06.000001', '00000000-0000-0000-0000-000000000000',
        '[]', '{}', '\\x', 'sad', '{}', '{}', '{}', '{}', '{}', '{}', '{}')""",
    """INSERT INTO everything (id, i2, i4, i8, n, r, d, t, tstz, iv)
       VALUES (4, 32767, 2147483647, 9223372036854775807, 'Infinity', 'Infinity', 1e308,
       E'multi\\nline \\t tab ☎ 电话 ', '9999-12-31 23:59:59.999999+00', '0')""",
    """INSERT INTO everything (id, n, d, r) VALUES (5, '-Infinity', 2.2250738585072014e-308,
       3.4028235e38)""",
]

CHANGES = [
    "UPDATE everything SET t = 'changed', m = 'ok' WHERE id = 2",
    "UPDATE everything SET id = 20 WHERE id = 2",  # key change
    "DELETE FROM everything WHERE id = 3",
    "UPDATE everything SET i4 = NULL, js = NULL WHERE id = 20",
]


def _same(setup: Setup, table: str, target: str) -> None:
    assert rows_as_text(setup.target_dsn, target) == rows_as_text(setup.source_dsn, table)


def test_every_type_exactly(tmp_path: Path, source_dsn: str, target_dsn: str) -> None:
    sql(source_dsn, DDL)
    s = Setup(tmp_path, source_dsn, target_dsn, {"public.everything": "public.everything_copy"})
    s.drain()  # creates slot, publication and the target table
    src_types = column_types(source_dsn, "everything")
    assert column_types(target_dsn, "everything_copy") == src_types
    sql(source_dsn, *ROWS)
    s.drain()
    _same(s, "everything", "everything_copy")
    sql(source_dsn, *CHANGES)
    s.drain()
    _same(s, "everything", "everything_copy")
    # schema change mid-stream: a new column arrives with the next rows
    sql(
        source_dsn,
        "ALTER TABLE everything ADD COLUMN added_later numeric(5,1)",
        "UPDATE everything SET added_later = 1.5 WHERE id = 1",
        "INSERT INTO everything (id, added_later) VALUES (6, 2.5)",
    )
    s.drain()
    _same(s, "everything", "everything_copy")
    sql(source_dsn, "TRUNCATE everything")
    s.drain()
    assert rows_as_text(target_dsn, "everything_copy") == []
    ops = [a["op"] for a in audit_rows(target_dsn, s.pipeline)]
    assert ops == ["insert"] * 5 + ["update", "update", "delete", "update"] + [
        "update",
        "insert",
        "truncate",
    ]


def test_toast_value_untouched_by_update_of_other_column(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    sql(
        source_dsn,
        "CREATE TABLE docs (id int PRIMARY KEY, body text, v int, blob bytea)",
        "ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL",  # keep it out of line
    )
    s = Setup(tmp_path, source_dsn, target_dsn, {"public.docs": None})
    s.drain()
    sql(
        source_dsn,
        "INSERT INTO docs SELECT 1, string_agg(md5(g::text), '') , 0, "
        "decode(repeat('ab', 700000), 'hex') FROM generate_series(1, 40000) g",
    )
    s.drain()
    sql(source_dsn, "UPDATE docs SET v = v + 1 WHERE id = 1")  # body/blob come as 'unchanged'
    s.drain()
    _same(s, "docs", "docs")
    got = rows_as_text(target_dsn, "docs")[0]
    assert len(got) > 1_000_000


def test_truncate_can_be_turned_off(tmp_path: Path, source_dsn: str, target_dsn: str) -> None:
    sql(source_dsn, "CREATE TABLE keep (id int PRIMARY KEY)")
    s = Setup(tmp_path, source_dsn, target_dsn, {"public.keep": None})
    s.config.write_text(
        s.config.read_text().replace("public.keep: {}", "public.keep: {apply_truncate: false}")
    )
    s.drain()
    sql(source_dsn, "INSERT INTO keep VALUES (1), (2)", "TRUNCATE keep")
    s.drain()
    assert rows_as_text(target_dsn, "keep") == ["(1)", "(2)"]
    assert [a["outcome"] for a in audit_rows(target_dsn, s.pipeline)] == [
        "applied",
        "applied",
        "skipped",
    ]
