"""A quiet source commits at once: a lone change does not wait for the batch's max_seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.harness import kill, wait_until
from tests.integration.routes import Route, execute, fetch

# Far longer than the wait below: only the "source has nothing more" commit can explain a
# row showing up in time (before, a lone change waited for max_seconds).
_MAX_SECONDS = 120.0
_WAIT = 30.0


def _ddl(dsn: str) -> str:
    if dsn.startswith("mysql"):
        return "CREATE TABLE t (id int PRIMARY KEY, v varchar(20))"
    return "CREATE TABLE public.t (id int PRIMARY KEY, v text)"


@pytest.mark.parametrize("route", ["pg", "mysql"])
def test_lone_changes_are_applied_without_waiting_for_the_batch(
    route: str, tmp_path: Path, source_dsn: str, my_source_dsn: str, target_dsn: str
) -> None:
    src = source_dsn if route == "pg" else my_source_dsn
    table = "public.t" if route == "pg" else f"{src.rsplit('/', 1)[-1]}.t"
    execute(src, _ddl(src))
    r = Route(
        tmp_path, src, target_dsn, {table: "public.t"}, pipeline=f"quiet_{route}",
        max_seconds=_MAX_SECONDS,
    )  # fmt: skip
    r.drain()  # slot / binlog position, target table and state tables
    proc = r.start()
    try:
        for i in range(1, 4):  # one transaction at a time, each waited for
            execute(src, f"INSERT INTO t (id, v) VALUES ({i}, 'v{i}')")
            wait_until(lambda i=i: len(fetch(target_dsn, "public.t")) == i, timeout=_WAIT)
        execute(src, "UPDATE t SET v = 'changed' WHERE id = 2", "DELETE FROM t WHERE id = 3")
        want = [(1, "v1"), (2, "changed")]
        wait_until(lambda: fetch(target_dsn, "public.t") == want, timeout=_WAIT)
        assert proc.poll() is None, r.log.read_text()[-3000:]
    finally:
        kill(proc)
