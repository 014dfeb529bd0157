"""ENUM / SET labels changed at the source while the daemon is stopped: at start the target is
widened from the source's catalog, then the stream replays the rows written before the ALTER,
whose table map still has the old labels. A target holding every old label takes them (it
used to stop the pipeline for good on a MariaDB target); contents are compared with the source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.routes import Route, column_types, execute, fetch, kind, norm

pytestmark = pytest.mark.integration


def _db(dsn: str) -> str:
    return dsn.rsplit("/", 1)[-1]


def _route(tmp: Path, src: str, tgt: str) -> tuple[Route, str]:
    """The pipeline for table ``calls``; returns it and the target table's name."""
    stable = f"{_db(src)}.calls" if kind(src) == "mysql" else "public.calls"
    ttable = f"{_db(tgt)}.calls" if kind(tgt) == "mysql" else "public.calls"
    r = Route(tmp, src, tgt, {stable: ttable}, pipeline=f"e_{_db(src)}", max_seconds=0.05)
    return r, ttable


def _rows(dsn: str, table: str, cols: str) -> list[tuple[object, ...]]:
    if kind(dsn) == "postgres":  # enum / set as text, as MariaDB returns them
        cols = ", ".join(f"{c.strip()}::text" if c.strip() != "id" else c for c in cols.split(","))
    return [tuple(norm(v) for v in r) for r in fetch(dsn, table, cols)]


def _widened(r: Route) -> list[str]:
    lines = r.log.read_text().splitlines()
    return [str(json.loads(x)["column"]) for x in lines if "target_column_widened" in x]


@pytest.fixture(params=["mysql-mysql", "mysql-pg", "pg-mysql"])
def ends(
    request: pytest.FixtureRequest,
    source_dsn: str,
    target_dsn: str,
    my_source_dsn: str,
    my_target_dsn: str,
) -> tuple[str, str]:
    skind, tkind = str(request.param).split("-")
    return (
        my_source_dsn if skind == "mysql" else source_dsn,
        my_target_dsn if tkind == "mysql" else target_dsn,
    )


def test_label_added_while_stopped_replays_the_older_rows(
    tmp_path: Path, ends: tuple[str, str]
) -> None:
    """The DBA's sequence: a row with the old labels pending, a label added, a row using it."""
    src, tgt = ends
    mysql_source = kind(src) == "mysql"
    if mysql_source:
        execute(src, "CREATE TABLE calls (id int PRIMARY KEY, outcome enum('answered','busy') "
                "NOT NULL DEFAULT 'busy', tags set('vip','new'))")  # fmt: skip
        cols = "id, outcome, tags"
        first, second = "(1, 'busy', 'vip')", "(2, 'answered', 'vip,new')"
        alter: tuple[str, ...] = (
            "ALTER TABLE calls MODIFY outcome enum('answered','busy','voicemail') NOT NULL "
            "DEFAULT 'busy', MODIFY tags set('vip','new','callback')",
        )
        third = "(3, 'voicemail', 'callback,vip')"
    else:
        execute(src, "CREATE TYPE outcome AS ENUM ('answered', 'busy')",
                "CREATE TABLE calls (id int PRIMARY KEY, outcome outcome NOT NULL)")  # fmt: skip
        cols = "id, outcome"
        first, second, third = "(1, 'busy')", "(2, 'answered')", "(3, 'voicemail')"
        alter = ("ALTER TYPE outcome ADD VALUE 'voicemail'",)
    execute(src, f"INSERT INTO calls VALUES {first}")
    r, ttable = _route(tmp_path, src, tgt)
    r.drain()
    execute(src, f"INSERT INTO calls VALUES {second}", *alter, f"INSERT INTO calls VALUES {third}")
    r.drain()
    assert _rows(tgt, ttable, cols) == _rows(src, "calls", cols)
    r.drain()  # every later start replays nothing and refuses nothing
    execute(src, "UPDATE calls SET outcome = 'answered' WHERE id = 3")
    r.drain()
    assert _rows(tgt, ttable, cols) == _rows(src, "calls", cols)
    if kind(tgt) == "mysql" and mysql_source:
        assert set(_widened(r)) == {"outcome", "tags"}
        types = column_types(tgt, "calls")
        assert types["outcome"] == "enum('answered','busy','voicemail')"
        assert types["tags"] == "set('vip','new','callback')"


def test_label_swapped_while_stopped_keeps_the_targets_labels(
    tmp_path: Path, my_source_dsn: str, my_target_dsn: str
) -> None:
    """The source drops a label and adds another while the daemon is stopped: the target
    column has a label the source lost, the source one the target lacks. The target gets both
    (each new label after the source's label before it, as a PostgreSQL enum type is
    extended), so the rows from before and after the ALTER all fit."""
    src, tgt = my_source_dsn, my_target_dsn
    execute(src, "CREATE TABLE calls (id int PRIMARY KEY, outcome enum('answered','busy') "
            "NOT NULL, tags set('vip','new'))",
            "INSERT INTO calls VALUES (1, 'busy', 'new')")  # fmt: skip
    r, ttable = _route(tmp_path, src, tgt)
    r.drain()
    execute(
        src,
        "INSERT INTO calls VALUES (2, 'answered', 'vip')",
        "UPDATE calls SET outcome = 'answered', tags = 'vip'",
        "ALTER TABLE calls MODIFY outcome enum('answered','voicemail') NOT NULL, "
        "MODIFY tags set('vip','callback')",
        "INSERT INTO calls VALUES (3, 'voicemail', 'vip,callback')",
    )
    r.drain()
    cols = "id, outcome, tags"
    assert _rows(tgt, ttable, cols) == _rows(src, "calls", cols)
    types = column_types(tgt, "calls")
    assert types["outcome"] == "enum('answered','voicemail','busy')"
    assert types["tags"] == "set('vip','callback','new')"
    r.drain()
    execute(src, "INSERT INTO calls VALUES (4, 'voicemail', 'callback')")
    r.drain()
    assert _rows(tgt, ttable, cols) == _rows(src, "calls", cols)
