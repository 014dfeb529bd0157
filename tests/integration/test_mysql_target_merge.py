"""A source column retyped while streaming so that neither type holds the other (numeric(12,4)
-> numeric(12,1), DECIMAL(10,2) -> DECIMAL(10,4), INT -> BIGINT UNSIGNED): a MariaDB target
widens its column to a type holding both, as a PostgreSQL target does, and keeps every value
exactly (it used to stop, suggesting the source's type, which would round the target's rows)."""

from __future__ import annotations

import json
import signal
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import kill, log_tail, wait_until
from tests.integration.routes import Route, column_types, execute, fetch

pytestmark = pytest.mark.integration


def _db(dsn: str) -> str:
    return dsn.rsplit("/", 1)[-1]


def _widened(r: Route) -> dict[str, dict[str, Any]]:
    """{column: its target_column_widened event}."""
    events = [json.loads(x) for x in r.log.read_text().splitlines() if x.startswith("{")]
    return {str(e["column"]): e for e in events if e.get("event") == "target_column_widened"}


@pytest.mark.parametrize("engine", ["pg", "mysql"])
def test_retyped_while_streaming_is_merged_in_a_mariadb_target(
    tmp_path: Path, engine: str, source_dsn: str, my_source_dsn: str, my_target_dsn: str
) -> None:
    tgt = my_target_dsn
    if engine == "pg":
        src, table = source_dsn, "public.t"
        execute(src, "CREATE TABLE t (id int PRIMARY KEY, n numeric(12,4))")
        before = ["(1, 12345678.1234)", "(2, -0.0001)"]
        alter = "ALTER TABLE t ALTER n TYPE numeric(12,1)"
        after = ["(3, 12345678901.1)", "(4, -99999999999.9)"]
        want = {"n": "decimal(15,4)"}
    else:
        src, table = my_source_dsn, f"{_db(my_source_dsn)}.t"
        execute(src, "CREATE TABLE t (id int PRIMARY KEY, d decimal(10,2), i int)")
        # Values the source's ALTER keeps as they are: d within 6 whole digits, i >= 0.
        before = ["(1, 1234.56, 2147483647)", "(2, -999999.99, 0)"]
        alter = "ALTER TABLE t MODIFY d decimal(10,4), MODIFY i bigint unsigned"
        after = ["(3, 123456.7891, 18446744073709551615)", "(4, -0.0001, 9223372036854775808)"]
        want = {"d": "decimal(12,4)", "i": "decimal(20,0)"}
    execute(src, f"INSERT INTO t VALUES {before[0]}")
    r = Route(tmp_path, src, tgt, {table: f"{_db(tgt)}.t"}, pipeline="mm", max_seconds=0.05)
    r.drain()
    proc = r.start()
    try:
        # Streaming (past its start-up catalog reads) before the ALTER.
        execute(src, f"INSERT INTO t VALUES {before[1]}")
        wait_until(lambda: len(fetch(tgt, "t", "id")) == 2 or proc.poll() is not None)
        old = fetch(src, "t")  # the rows as written: a rounding ALTER rewrites them unsent
        execute(src, alter, *(f"INSERT INTO t VALUES {v}" for v in after))
        wait_until(
            lambda: len(fetch(tgt, "t", "id")) == 4 or proc.poll() is not None,
            why=lambda: log_tail(r.log),
        )
    finally:
        code = kill(proc, signal.SIGTERM)
    assert code == 0, log_tail(r.log)
    r.drain()  # a later start meets the merged type again: nothing more to do
    rows = fetch(tgt, "t")
    # Compared as Decimal (exact; 1.5 == 1.5000): nothing rounded, nothing went through float.
    assert all(isinstance(v, Decimal) for row in rows for v in row[1:])
    assert rows == old + fetch(src, "t")[2:]
    assert {c: t for c, t in column_types(tgt, "t").items() if c in want} == want
    events = _widened(r)
    assert set(events) == set(want)
    for column, e in events.items():
        assert e["level"] == "warning" and e["to_type"].lower().replace(" ", "") == want[column]
