"""Values a target cannot hold, end to end through the daemon: stopped or dead-lettered."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.integration.routes import Route, execute, fetch, kind, my_connect

pytestmark = pytest.mark.integration

Row = tuple[Any, ...]
CANARY = "canary-7f3q9zx"  # in another column of every refused row: must never be echoed
LETTER_COLS = "pk, stage, column_name, reason"


def policy_route(tmp: Path, src: str, tgt: str, table: str, on_error: str) -> Route:
    """A Route whose pipeline has an explicit ``on_error`` (default: dead_letter)."""
    schema = src.rsplit("/", 1)[-1] if kind(src) == "mysql" else "public"
    tschema = tgt.rsplit("/", 1)[-1] if kind(tgt) == "mysql" else "public"
    pipeline = "tp_" + src.rsplit("/", 1)[-1]  # PostgreSQL slots are per server
    tables: dict[str, str | None] = {f"{schema}.{table}": f"{tschema}.{table}"}
    return Route(tmp, src, tgt, tables, pipeline=pipeline, on_error=on_error)


def insert(dsn: str, table: str, row: Row) -> None:
    sql = f"INSERT INTO {table} VALUES ({', '.join(['%s'] * len(row))})"
    if kind(dsn) == "postgres":
        execute(dsn, sql, params=row)
        return
    with my_connect(dsn) as c, c.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")  # neither strict nor NO_ZERO_DATE
        cur.execute(sql, row)


def run(r: Route) -> subprocess.CompletedProcess[str]:
    """One ``run --until-caught-up``, its stderr kept in the pipeline's log like ``drain``."""
    res = r.cli("run", "--until-caught-up")
    with r.log.open("a") as f:
        f.write(res.stderr)
    return res


def letters(dsn: str, columns: str = LETTER_COLS) -> list[dict[str, Any]]:
    rows = fetch(dsn, "cdc_sync_dead_letters", columns, "id")
    return [dict(zip(columns.split(", "), r, strict=True)) for r in rows]


# Today's times only (the values checked for are of 1987), and binlog positions.
_TIMES = re.compile(r"20\d\d-\d\d-\d\d[T ][\d:.]+(?:Z|\+00:00)?|mysql:\S+")


def _no_times(text: str) -> str:
    return _TIMES.sub("", text)


def drive(
    r: Route,
    table: str,
    on_error: str,
    good: Row,
    bad: list[tuple[str, Row]],
    secrets: tuple[str, ...],
) -> None:
    """Row 1 (good) is applied first; then each refused row (ids 2, 4, …, its column named
    in ``bad``) is followed by a good one. ``secrets``: the refused rows' other values."""
    src, tgt = r.source_dsn, r.target_dsn
    r.drain()  # creates the target table and the start position
    insert(src, table, (1, *good))
    r.drain()
    refused = {2 + 2 * i: col for i, (col, _) in enumerate(bad)}
    for i, (_, values) in enumerate(bad):
        insert(src, table, (2 + 2 * i, *values))
        insert(src, table, (3 + 2 * i, *good))
    source = fetch(src, table)
    assert [row[0] for row in source] == list(range(1, 2 + 2 * len(bad)))
    kept = [row for row in source if row[0] not in refused]
    res = run(r)
    if on_error == "stop":
        assert res.returncode == 1, res.stderr[-2000:]
        assert f".{table}: column {refused[2]!r}" in res.stderr, res.stderr[-2000:]
        # The checkpoint stays before the refused row: nothing at or after it is applied.
        assert fetch(tgt, table) == kept[:1]
        again = run(r)  # stays stopped: never skipped silently
        assert again.returncode == 1 and f".{table}: column {refused[2]!r}" in again.stderr
        assert fetch(tgt, table) == kept[:1]
        assert not letters(tgt)
    else:
        assert res.returncode == 0, res.stderr[-2000:]
        assert fetch(tgt, table) == kept
        insert(src, table, (100, *good))  # the stream goes on
        r.drain()
        assert [row[0] for row in fetch(tgt, table)] == [row[0] for row in kept] + [100]
    # Times and binlog positions are digits too ("18:00:18.198711Z" holds "1987"): taken
    # out, so that a secret found is a value that leaked.
    log = _no_times(r.log.read_text())
    got = letters(tgt)
    listed = _no_times(r.cli("dlq", "list").stdout)
    for s in secrets:
        assert s not in log and s not in listed
        assert not any(s in d["reason"] for d in got)
    if on_error != "stop":
        assert [(json.loads(d["pk"]), d["column_name"]) for d in got] == [
            ({"id": i}, col) for i, col in refused.items()
        ]


ZERO_DT = ("0000-00-00 00:00:00", date(1987, 6, 5), CANARY)
ZERO_D = (datetime(1987, 6, 5, 4, 3, 2), "0000-00-00", CANARY)


@pytest.mark.parametrize(
    ("on_error", "bad"),
    [
        ("stop", [("dt", ZERO_DT), ("d", ZERO_D)]),
        ("stop", [("d", ZERO_D), ("dt", ZERO_DT)]),
        pytest.param("dead_letter", [("dt", ZERO_DT), ("d", ZERO_D)]),
    ],
    ids=["stop-datetime", "stop-date", "dead_letter"],
)
def test_mysql_zero_dates_into_pg(
    tmp_path: Path,
    on_error: str,
    bad: list[tuple[str, Row]],
    my_source_dsn: str,
    target_dsn: str,
) -> None:
    execute(my_source_dsn, "CREATE TABLE ev (id int PRIMARY KEY, dt datetime, d date, note text)")
    r = policy_route(tmp_path, my_source_dsn, target_dsn, "ev", on_error)
    good = (datetime(2024, 1, 2, 3, 4, 5), date(2024, 2, 3), "ok")
    drive(r, "ev", on_error, good, bad, (CANARY, "1987-06-05", "1987"))
    if on_error == "dead_letter":
        # The fix at the source (its old image still holds the zero date) and a delete of
        # the other refused row go through: the target then equals the source.
        execute(
            my_source_dsn,
            "UPDATE ev SET dt = '2001-02-03 04:05:06', d = '2001-02-03' WHERE id = 2",
            "DELETE FROM ev WHERE id = 4",
        )
        r.drain()
        assert fetch(target_dsn, "ev") == fetch(my_source_dsn, "ev")
        # The letters then retry cleanly: the fixed row is re-read, the deleted one is gone.
        res = r.cli("dlq", "retry", "--all")
        assert res.returncode == 0, res.stderr[-2000:]
        assert {d["status"] for d in letters(target_dsn, "status")} == {"retried"}
        assert fetch(target_dsn, "ev") == fetch(my_source_dsn, "ev")


NAN = ("n", (Decimal("NaN"), 8675309.25, CANARY))
INF = ("n", (Decimal("Infinity"), 8675309.25, CANARY))
NEG_INF = ("n", (Decimal("-Infinity"), 8675309.25, CANARY))
F_INF = ("f", (Decimal("8675309.0123"), float("inf"), CANARY))


@pytest.mark.parametrize(
    ("on_error", "bad"),
    [
        ("stop", [NAN, INF, NEG_INF, F_INF]),
        ("stop", [INF, NAN]),
        ("stop", [NEG_INF, NAN]),
        ("stop", [F_INF, NAN]),
        ("dead_letter", [NAN, INF, NEG_INF, F_INF]),
    ],
    ids=["stop-nan", "stop-inf", "stop-neg-inf", "stop-double-inf", "dead_letter"],
)
def test_pg_nan_and_infinity_into_mysql(
    tmp_path: Path,
    on_error: str,
    bad: list[tuple[str, Row]],
    source_dsn: str,
    my_target_dsn: str,
) -> None:
    execute(
        source_dsn,
        "CREATE TABLE nums (id int PRIMARY KEY, n numeric, f double precision, note text)",
    )
    r = policy_route(tmp_path, source_dsn, my_target_dsn, "nums", on_error)
    good = (Decimal("1.5"), -2.5, "ok")
    drive(r, "nums", on_error, good, bad, (CANARY, "8675309"))


@pytest.mark.parametrize("on_error", ["stop", "dead_letter"])
def test_mysql_text_with_nul_into_pg(
    tmp_path: Path, on_error: str, my_source_dsn: str, target_dsn: str
) -> None:
    execute(my_source_dsn, "CREATE TABLE notes (id int PRIMARY KEY, body text, note text)")
    r = policy_route(tmp_path, my_source_dsn, target_dsn, "notes", on_error)
    bad = [("body", ("nulpart-xq\x00tail-wv", CANARY))]
    drive(r, "notes", on_error, ("fine", "ok"), bad, (CANARY, "nulpart-xq", "tail-wv"))
