"""A source column renamed while the daemon streams: the target keeps the old column with its
values and gets the new one (the daemon renames nothing there, see the README), NULL in rows
not changed since. That was silent; now WARNING source_column_renamed names both columns."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import psycopg
import pytest

from tests.integration.harness import kill, wait_until
from tests.integration.routes import Route, execute, fetch, kind

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("engine", ["pg", "mysql"])
def test_a_renamed_column_is_named_in_a_warning(
    tmp_path: Path, engine: str, source_dsn: str, my_source_dsn: str, target_dsn: str
) -> None:
    src = source_dsn if engine == "pg" else my_source_dsn
    stable = "public.t" if kind(src) == "postgres" else f"{src.rsplit('/', 1)[-1]}.t"
    execute(src, "CREATE TABLE t (id int PRIMARY KEY, v varchar(20))",
            "INSERT INTO t VALUES (1, 'one'), (2, 'two')")  # fmt: skip
    r = Route(tmp_path, src, target_dsn, {stable: "public.t"}, pipeline="cr", max_seconds=0.05)
    r.drain()
    proc = r.start()
    try:
        execute(src, "INSERT INTO t VALUES (3, 'three')")
        wait_until(lambda: len(fetch(target_dsn, "t", "id")) == 3 or proc.poll() is not None)
        execute(src, "ALTER TABLE t RENAME COLUMN v TO w", "UPDATE t SET w = 'uno' WHERE id = 1")
        wait_until(lambda: _renamed_row(target_dsn) or proc.poll() is not None)
    finally:
        assert kill(proc, signal.SIGTERM) == 0, r.log.read_text()[-2000:]
    # As documented: the old column keeps its values, the new one has the changed row only.
    assert fetch(target_dsn, "t", "id, v, w") == [(1, "one", "uno"), (2, "two", None),
                                                  (3, "three", None)]  # fmt: skip
    events = [json.loads(x) for x in r.log.read_text().splitlines() if x.startswith("{")]
    (warned,) = [e for e in events if e["event"] == "source_column_renamed"]
    assert (warned["column"], warned["new_column"], warned["level"]) == ("v", "w", "warning")
    assert "--repair" in warned["fix"]


def _renamed_row(dsn: str) -> bool:
    try:
        return fetch(dsn, "t", "id, w")[0] == (1, "uno")
    except psycopg.errors.UndefinedColumn:
        return False  # not added yet
