"""A MySQL / MariaDB target key column whose collation ignores case or accents: refused
before any row is written when the source tells such keys apart, allowed when the source
compares them the same way; and a widening keeps the column's collation."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.integration.routes import Route, execute, fetch, my_connect

pytestmark = pytest.mark.integration

ROWS = [("ABC", "upper"), ("abc", "lower"), ("e", "plain"), ("é", "acute")]
MORE = [("Xy", "one"), ("xY", "two")]


def db_of(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/")


def collation(dsn: str, table: str, column: str) -> tuple[str, str]:
    with my_connect(dsn) as c, c.cursor() as cur:
        cur.execute(
            "SELECT COLLATION_NAME, COLUMN_TYPE FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s AND COLUMN_NAME = %s",
            (table, column),
        )
        row = cur.fetchone()
        assert row is not None
        return str(row[0]), str(row[1])


def insert(dsn: str, rows: list[tuple[str, str]]) -> None:
    for code, name in rows:
        execute(dsn, "INSERT INTO people VALUES (%s, %s)", params=(code, name))


def test_case_insensitive_key_is_refused_before_any_row(
    source_dsn: str, my_target_dsn: str, tmp_path: Path
) -> None:
    execute(source_dsn, "CREATE TABLE people (code text PRIMARY KEY, name text NOT NULL)")
    insert(source_dsn, ROWS)
    # The dialer's own table, made with MySQL's habits: a case- and accent-insensitive key.
    execute(
        my_target_dsn,
        "CREATE TABLE people (code varchar(50) COLLATE utf8mb4_general_ci PRIMARY KEY, "
        "name text) DEFAULT CHARSET = utf8mb4 COLLATE utf8mb4_general_ci",
    )
    route = Route(
        tmp_path, source_dsn, my_target_dsn, {"public.people": f"{db_of(my_target_dsn)}.people"}
    )
    check = route.cli("check")  # found before any start, nothing changed
    assert check.returncode == 1 and "uses collation utf8mb4_general_ci" in check.stdout
    res = route.cli("snapshot")
    assert res.returncode == 1
    err = res.stderr
    assert "people" in err and "'code'" in err and "utf8mb4_general_ci" in err
    assert "COLLATE utf8mb4_nopad_bin" in err  # the fix, ready to run
    assert "upper" not in err and "lower" not in err  # no row value in the message
    assert fetch(my_target_dsn, "people") == []

    # The DBA applies the fix the message gives; then every key arrives as its own row.
    fix = err[err.index("ALTER TABLE") :].split(";")[0]
    execute(my_target_dsn, fix)
    assert route.cli("snapshot").returncode == 0
    insert(source_dsn, MORE)
    route.drain()
    assert fetch(my_target_dsn, "people", order_by="code") == fetch(
        source_dsn, "people", order_by='code COLLATE "C"'
    )
    assert collation(my_target_dsn, "people", "code")[0] == "utf8mb4_nopad_bin"


def test_same_collation_on_both_sides_is_allowed(
    my_source_dsn: str, my_target_dsn: str, tmp_path: Path
) -> None:
    ddl = (
        "CREATE TABLE people (code varchar(50) COLLATE utf8mb4_general_ci PRIMARY KEY, "
        "name varchar(50) NOT NULL) DEFAULT CHARSET = utf8mb4 COLLATE utf8mb4_general_ci"
    )
    execute(my_source_dsn, ddl)
    execute(my_target_dsn, ddl)
    insert(my_source_dsn, [("ABC", "upper"), ("e", "plain")])
    route = Route(
        tmp_path,
        my_source_dsn,
        my_target_dsn,
        {f"{db_of(my_source_dsn)}.people": f"{db_of(my_target_dsn)}.people"},
    )
    assert route.cli("snapshot").returncode == 0
    insert(my_source_dsn, MORE[:1])
    execute(my_source_dsn, "UPDATE people SET name = 'upper!' WHERE code = 'abc'")  # ci: ABC
    route.drain()
    assert fetch(my_target_dsn, "people", order_by="code") == fetch(
        my_source_dsn, "people", order_by="code"
    )


def test_widening_keeps_the_key_columns_collation(
    source_dsn: str, my_target_dsn: str, tmp_path: Path
) -> None:
    """The DBA fixed the key column to utf8mb4_bin in a case-insensitive table; the source's
    text is wider than varchar(50): the MODIFY must not fall back to the table's collation."""
    execute(source_dsn, "CREATE TABLE people (code text PRIMARY KEY, name text NOT NULL)")
    insert(source_dsn, ROWS)
    execute(
        my_target_dsn,
        "CREATE TABLE people (code varchar(50) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin "
        "PRIMARY KEY, name text) DEFAULT CHARSET = utf8mb4 COLLATE utf8mb4_general_ci",
    )
    route = Route(
        tmp_path, source_dsn, my_target_dsn, {"public.people": f"{db_of(my_target_dsn)}.people"}
    )
    res = route.cli("snapshot")
    assert res.returncode == 0, res.stderr[-2000:]
    # utf8mb4_bin is PAD SPACE: 'abc' and 'abc ' would be one key. Told, with the fix.
    warned = [json.loads(line) for line in res.stderr.splitlines() if "trailing_spaces" in line]
    assert [(w["column"], w["collation"]) for w in warned] == [("code", "utf8mb4_bin")]
    assert "COLLATE utf8mb4_nopad_bin NOT NULL;" in warned[0]["fix"]
    coll, ctype = collation(my_target_dsn, "people", "code")
    assert (coll, ctype) == ("utf8mb4_bin", "varchar(768)")
    insert(source_dsn, MORE)
    route.drain()
    assert fetch(my_target_dsn, "people", order_by="code") == fetch(
        source_dsn, "people", order_by='code COLLATE "C"'
    )


def test_nondeterministic_key_collation_in_postgres_target_is_refused(
    source_dsn: str, target_dsn: str, tmp_path: Path
) -> None:
    execute(source_dsn, "CREATE TABLE people (code text PRIMARY KEY, name text NOT NULL)")
    insert(source_dsn, ROWS)
    execute(
        target_dsn,
        "CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)",
        "CREATE TABLE people (code text COLLATE ci PRIMARY KEY, name text)",
    )
    route = Route(tmp_path, source_dsn, target_dsn, {"public.people": None})
    check = route.cli("check")
    assert check.returncode == 1 and "nondeterministic collation ci" in check.stdout
    res = route.cli("snapshot")
    assert res.returncode == 1
    err = res.stderr
    assert "public.people" in err and "'code'" in err and "nondeterministic collation ci" in err
    assert fetch(target_dsn, "people") == []
    execute(target_dsn, err[err.index("ALTER TABLE") :].split(";")[0])
    assert route.cli("snapshot").returncode == 0
    insert(source_dsn, MORE)
    route.drain()
    order = 'code COLLATE "C"'
    assert fetch(target_dsn, "people", order_by=order) == fetch(
        source_dsn, "people", order_by=order
    )


def test_keys_differing_in_trailing_spaces_stay_apart(
    source_dsn: str, my_target_dsn: str, tmp_path: Path
) -> None:
    """The tables cdc-sync creates compare keys as bytes, trailing spaces included (NO PAD):
    under utf8mb4_bin 'abc', 'abc ' and 'abc  ' were one row, the last one written."""
    spaced = [("abc", "none"), ("abc ", "one"), ("abc  ", "two")]
    execute(source_dsn, "CREATE TABLE people (code text PRIMARY KEY, name text NOT NULL)")
    insert(source_dsn, spaced)
    target = f"{db_of(my_target_dsn)}.people"
    route = Route(tmp_path, source_dsn, my_target_dsn, {"public.people": target})
    assert route.cli("snapshot").returncode == 0
    insert(source_dsn, [("x", "x"), ("x ", "x and a space")])
    execute(source_dsn, "UPDATE people SET name = 'one!' WHERE code = 'abc '")
    execute(source_dsn, "DELETE FROM people WHERE code = 'abc  '")
    route.drain()
    order = "concat(code, '|')"
    got = fetch(my_target_dsn, "people", "concat('[', code, ']'), name", order_by=order)
    want = fetch(source_dsn, "people", "'[' || code || ']', name", order_by=order + ' COLLATE "C"')
    assert got == want
    assert len(got) == 4
    assert collation(my_target_dsn, "people", "code")[0] == "utf8mb4_nopad_bin"
