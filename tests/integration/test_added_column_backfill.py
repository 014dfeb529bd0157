"""A column the source adds with a constant DEFAULT (``ADD COLUMN do_not_call … DEFAULT true``)
gives the source's existing rows that value without any row change: the target's existing rows
get it too, in all four routes, whether the daemon was stopped or streaming. A default that
cannot be known (an expression) keeps NULL there and the WARNING naming the fix."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.routes import Route, execute, fetch, kind, norm

pytestmark = pytest.mark.integration

# (column DDL on PostgreSQL, on MariaDB): constant defaults, then one that cannot be known.
KNOWN = [
    ("dnc boolean NOT NULL DEFAULT true", "dnc boolean NOT NULL DEFAULT 1"),
    ("note varchar(20) DEFAULT 'it''s 5%'", "note varchar(20) DEFAULT 'it''s 5%'"),
    ("amount numeric(8,2) NOT NULL DEFAULT 12.50", "amount decimal(8,2) NOT NULL DEFAULT 12.50"),
    ("since date DEFAULT '2026-01-31'", "since date DEFAULT '2026-01-31'"),
    ("plain int", "plain int"),  # no default: NULL on both sides, nothing to warn about
]
UNKNOWN = ("token uuid DEFAULT gen_random_uuid()", "token varchar(40) DEFAULT uuid()")
COLUMNS = "id, name, dnc, note, amount, since, plain"


@pytest.fixture(params=["pg->pg", "mysql->pg", "pg->mysql", "mysql->mysql"])
def route(request: pytest.FixtureRequest) -> tuple[str, str]:
    src, tgt = str(request.param).split("->")
    source = request.getfixturevalue("source_dsn" if src == "pg" else "my_source_dsn")
    target = request.getfixturevalue("target_dsn" if tgt == "pg" else "my_target_dsn")
    return str(source), str(target)


def _table(dsn: str, name: str) -> str:
    return f"public.{name}" if kind(dsn) == "postgres" else f"{dsn.rsplit('/', 1)[-1]}.{name}"


def _rows(dsn: str, table: str) -> list[tuple[Any, ...]]:
    return [tuple(norm(v) for v in row) for row in fetch(dsn, table, COLUMNS)]


def _add(src: str, table: str) -> None:
    at = 0 if kind(src) == "postgres" else 1
    # The volatile default first: on PostgreSQL it rewrites the table, which stores every
    # column's value in the rows and so makes the defaults of columns added before unknown.
    execute(src, *(f"ALTER TABLE {table} ADD COLUMN {c[at]}" for c in [UNKNOWN, *KNOWN]))


def _warned(log: Path) -> set[str]:
    out = set()
    for line in log.read_text().splitlines():
        if "target_column_added_without_backfill" in line and line.startswith("{"):
            out.add(json.loads(line)["column"])
    return out


@pytest.mark.parametrize("when", ["stopped", "streaming"])
def test_added_columns_take_the_source_default(
    tmp_path: Path, route: tuple[str, str], when: str
) -> None:
    src, tgt = route
    execute(
        src,
        "CREATE TABLE customers (id int PRIMARY KEY, name varchar(20))",
        "INSERT INTO customers VALUES (1, 'ann'), (2, 'bob')",
    )
    target = _table(tgt, "customers")
    r = Route(tmp_path, src, tgt, {_table(src, "customers"): target}, max_seconds=0.05)
    r.drain()
    proc = r.start() if when == "streaming" else None
    if proc is not None:
        time.sleep(1.0)  # streaming, past its start-up
    # Written before the ALTER: when stopped, the stream sends it after the start added the
    # column to the target, without the column; the source gave it the defaults too.
    execute(src, "INSERT INTO customers VALUES (4, 'dan')")
    _add(src, "customers")
    # The row that announces the new columns to the stream (and one that changes a default).
    execute(
        src,
        "INSERT INTO customers (id, name, dnc, note, amount) VALUES (3, 'cat', false, 'x', 1)",
    )
    if proc is not None:
        deadline = time.monotonic() + 30
        while len(fetch(tgt, target, "id")) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.terminate()
        assert proc.wait(30) == 0
    r.drain()
    got, want = _rows(tgt, target), _rows(src, "customers")
    assert got == want
    assert got[0] == (1, "ann", 1, "it's 5%", got[0][4], want[0][5], None)
    assert got[3] == (4, "dan", 1, "it's 5%", got[0][4], want[0][5], None)
    assert float(got[0][4]) == 12.5
    # The expression default: the target's old rows keep NULL, and the log says so.
    tokens = [row[1] for row in fetch(tgt, target, "id, token")]
    assert tokens[:2] == [None, None]  # the volatile default: unknown
    assert _warned(r.log) == {"token"}
    assert "source_column_type_changed" not in r.log.read_text()  # no type changed


@pytest.mark.parametrize("src_kind", ["pg", "mysql"])
def test_a_type_change_while_streaming_is_flagged(
    tmp_path: Path, request: pytest.FixtureRequest, target_dsn: str, src_kind: str
) -> None:
    """PostgreSQL ``ALTER … TYPE … USING`` (and a MySQL MODIFY) may rewrite values without
    sending a change: the target keeps the old ones, and a WARNING names column and fix."""
    src = str(request.getfixturevalue("source_dsn" if src_kind == "pg" else "my_source_dsn"))
    execute(src, "CREATE TABLE c (id int PRIMARY KEY, n int)", "INSERT INTO c VALUES (1, 1)")
    r = Route(tmp_path, src, target_dsn, {_table(src, "c"): "public.c"}, max_seconds=0.05)
    r.drain()
    proc = r.start()
    # Streaming for sure before the ALTER (else the start meets the new type: not flagged).
    execute(src, "INSERT INTO c VALUES (2, 2)")
    deadline = time.monotonic() + 60
    while len(fetch(target_dsn, "public.c", "id")) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    retype = "ALTER COLUMN n TYPE bigint USING n * 100" if src_kind == "pg" else "MODIFY n bigint"
    execute(src, f"ALTER TABLE c {retype}", "INSERT INTO c VALUES (3, 3)")
    while len(fetch(target_dsn, "public.c", "id")) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.terminate()
    assert proc.wait(30) == 0
    events = [json.loads(x) for x in r.log.read_text().splitlines() if x.startswith("{")]
    (warned,) = [e for e in events if e["event"] == "source_column_type_changed"]
    assert warned["column"] == "n" and "--repair" in warned["fix"]


def test_a_type_change_while_stopped_names_the_repair(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    """Stopped: the start meets a type the target cannot take as it is (varchar → text with a
    USING that rewrote every value); its refusal also says that values may have changed."""
    execute(
        source_dsn,
        "CREATE TABLE p (id int PRIMARY KEY, phone varchar(30))",
        "INSERT INTO p VALUES (1, '(555) 123-4567')",
    )
    r = Route(tmp_path, source_dsn, target_dsn, {"public.p": "public.p"})
    r.drain()
    execute(
        source_dsn,
        r"ALTER TABLE p ALTER COLUMN phone TYPE text USING regexp_replace(phone, '\D', '', 'g')",
    )
    res = r.cli("run", "--until-caught-up")
    assert res.returncode != 0
    assert "column 'phone' has type character varying(30), but the source column is text" in (
        res.stderr
    )
    assert "may also have rewritten values it never sent" in res.stderr
    assert "--repair" in res.stderr


def test_postgres_generated_column_is_named(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    """PostgreSQL 15 never sends generated columns: the target has none, and each start says
    so, naming the column (a helper's probe found it silent)."""
    execute(
        source_dsn,
        "CREATE TABLE g (id int PRIMARY KEY, n int, twice int GENERATED ALWAYS AS (n * 2) STORED)",
        "INSERT INTO g (id, n) VALUES (1, 1)",
    )
    r = Route(tmp_path, source_dsn, target_dsn, {"public.g": "public.g"})
    r.drain()
    assert fetch(target_dsn, "public.g") == [(1, 1)]
    events = [json.loads(x) for x in r.log.read_text().splitlines() if x.startswith("{")]
    (warned,) = [e for e in events if e["event"] == "source_generated_column_not_sent"]
    assert warned["table"] == "public.g" and warned["column"] == "twice"
