"""A source column's NOT NULL dropped while the daemon streams: rows with NULL there used to
become dead letters (the target column stayed NOT NULL; a PostgreSQL Relation message carries
no nullability). Now the target column follows, with WARNING target_column_made_nullable.
Contents are compared with the source."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.integration.harness import kill, wait_until
from tests.integration.routes import Route, execute, fetch, kind

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("source", "target"), [("pg", "pg"), ("pg", "mysql"), ("mysql", "pg"), ("mysql", "mysql")]
)
def test_a_not_null_dropped_at_the_source_is_dropped_in_the_target(
    tmp_path: Path,
    source: str,
    target: str,
    source_dsn: str,
    my_source_dsn: str,
    target_dsn: str,
    my_target_dsn: str,
) -> None:
    src = source_dsn if source == "pg" else my_source_dsn
    tgt = target_dsn if target == "pg" else my_target_dsn
    stable = "public.t" if kind(src) == "postgres" else f"{src.rsplit('/', 1)[-1]}.t"
    ttable = "public.t" if kind(tgt) == "postgres" else f"{tgt.rsplit('/', 1)[-1]}.t"
    execute(src, "CREATE TABLE t (id int PRIMARY KEY, v varchar(10) NOT NULL, n int)",
            "INSERT INTO t VALUES (1, 'a', 1), (2, 'b', 2)")  # fmt: skip
    r = Route(tmp_path, src, tgt, {stable: ttable}, pipeline="nn", max_seconds=0.05)
    r.drain()
    proc = r.start()
    relax = (
        "ALTER TABLE t ALTER COLUMN v DROP NOT NULL"
        if kind(src) == "postgres"
        else "ALTER TABLE t MODIFY v varchar(10) NULL"
    )
    try:
        execute(src, "INSERT INTO t VALUES (3, 'c', 3)")
        wait_until(lambda: len(fetch(tgt, "t", "id")) == 3 or proc.poll() is not None)
        execute(src, relax, "INSERT INTO t VALUES (4, NULL, 4)",
                "UPDATE t SET v = NULL WHERE id = 1")  # fmt: skip
        wait_until(lambda: fetch(tgt, "t", "id, v")[0] == (1, None) or proc.poll() is not None)
    finally:
        assert kill(proc, signal.SIGTERM) == 0, r.log.read_text()[-2000:]
    assert fetch(tgt, "t", "id, v, n") == fetch(src, "t", "id, v, n")
    events = [json.loads(x) for x in r.log.read_text().splitlines() if x.startswith("{")]
    assert not [e for e in events if e["event"] == "row_dead_lettered"]
    (made,) = [e for e in events if e["event"] == "target_column_made_nullable"]
    assert made["column"] == "v" and "allows NULL" in made["why"]
