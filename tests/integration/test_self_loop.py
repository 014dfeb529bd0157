"""The target DSN names the source database itself (one DSN pasted twice): refused by check
and at start, before anything is created there. Before, every applied change was captured and
applied again for ever (2,708 audited updates of one row in 6 s)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.integration.routes import Route, execute, fetch, my_connect

pytestmark = pytest.mark.integration

MESSAGE = "the target is the source database itself"


def pg_slots_and_state(dsn: str) -> tuple[int, int]:
    with psycopg.connect(dsn) as c:
        slots = c.execute("SELECT count(*) FROM pg_replication_slots").fetchone()
        state = c.execute(
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'cdc_sync%%'"
        ).fetchone()
    assert slots is not None and state is not None
    return int(slots[0]), int(state[0])


def test_postgres_source_as_its_own_target_is_refused(source_dsn: str, tmp_path: Path) -> None:
    execute(source_dsn, "CREATE TABLE people (id int PRIMARY KEY, name text NOT NULL)")
    execute(source_dsn, "INSERT INTO people VALUES (1, 'a')")
    before = pg_slots_and_state(source_dsn)
    route = Route(tmp_path, source_dsn, source_dsn, {"public.people": None})
    check = route.cli("check")
    assert check.returncode == 1
    assert MESSAGE in check.stdout + check.stderr and "public.people" in check.stdout + check.stderr
    run = route.cli("run", "--until-caught-up")
    assert run.returncode == 1
    assert MESSAGE in run.stderr
    assert pg_slots_and_state(source_dsn) == before  # no slot, no cdc_sync_* table made there
    assert fetch(source_dsn, "people") == [(1, "a")]


def test_another_table_of_the_same_database_is_allowed(source_dsn: str, tmp_path: Path) -> None:
    execute(source_dsn, "CREATE TABLE people (id int PRIMARY KEY, name text NOT NULL)")
    execute(source_dsn, "INSERT INTO people VALUES (1, 'a'), (2, 'b')", "CREATE SCHEMA archive")
    route = Route(tmp_path, source_dsn, source_dsn, {"public.people": "archive.people"})
    assert route.cli("check").returncode == 0
    assert route.cli("snapshot").returncode == 0
    execute(source_dsn, "UPDATE people SET name = 'b2' WHERE id = 2")
    route.drain()
    assert fetch(source_dsn, "archive.people") == fetch(source_dsn, "public.people")


def test_mysql_source_as_its_own_target_is_refused(my_source_dsn: str, tmp_path: Path) -> None:
    db = my_source_dsn.rsplit("/", 1)[1]
    execute(my_source_dsn, "CREATE TABLE people (id int PRIMARY KEY, name varchar(20) NOT NULL)")
    execute(my_source_dsn, "INSERT INTO people VALUES (1, 'a')")
    route = Route(tmp_path, my_source_dsn, my_source_dsn, {f"{db}.people": None})
    run = route.cli("run", "--until-caught-up")
    assert run.returncode == 1
    assert MESSAGE in run.stderr and f"{db}.people" in run.stderr
    with my_connect(my_source_dsn) as c, c.cursor() as cur:
        cur.execute("SHOW TABLES LIKE 'cdc_sync%%'")
        assert cur.fetchall() == ()
