"""A source integer column changed to numeric(p,s) while streaming, into a PostgreSQL target:
the target column becomes a numeric holding both (the integers' digits, the new scale), as a
MariaDB target does, instead of stopping the pipeline. Values compared as Decimal."""

from __future__ import annotations

import signal
from decimal import Decimal
from pathlib import Path

import pytest

from tests.integration.harness import kill, wait_until
from tests.integration.routes import Route, column_types, execute, fetch, kind

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("engine", ["pg", "mysql"])
def test_an_integer_column_made_numeric_widens_the_target(
    tmp_path: Path, engine: str, source_dsn: str, my_source_dsn: str, target_dsn: str
) -> None:
    src = source_dsn if engine == "pg" else my_source_dsn
    stable = "public.t" if kind(src) == "postgres" else f"{src.rsplit('/', 1)[-1]}.t"
    execute(src, "CREATE TABLE t (id int PRIMARY KEY, n int)",
            "INSERT INTO t VALUES (1, 12345678), (2, -5)")  # fmt: skip
    r = Route(tmp_path, src, target_dsn, {stable: "public.t"}, pipeline="im", max_seconds=0.05)
    r.drain()
    retype = (
        "ALTER TABLE t ALTER COLUMN n TYPE numeric(12,4)"
        if kind(src) == "postgres"
        else "ALTER TABLE t MODIFY n decimal(12,4)"
    )
    proc = r.start()
    try:
        execute(src, "INSERT INTO t VALUES (3, 7)")
        wait_until(lambda: len(fetch(target_dsn, "t", "id")) == 3 or proc.poll() is not None)
        execute(src, "UPDATE t SET n = 1 WHERE id = 2", retype,
                "INSERT INTO t VALUES (4, 1.2345)")  # fmt: skip
        wait_until(lambda: len(fetch(target_dsn, "t", "id")) == 4 or proc.poll() is not None)
    finally:
        assert kill(proc, signal.SIGTERM) == 0, r.log.read_text()[-2000:]
    got = [(i, Decimal(v)) for i, v in fetch(target_dsn, "t", "id, n")]
    assert got == [(i, Decimal(v)) for i, v in fetch(src, "t", "id, n")]
    assert got[0][1] == 12345678 and got[3][1] == Decimal("1.2345")
    # The target's integers keep their 10 digits (a later int value would), the scale is 4.
    assert column_types(target_dsn, "public.t")["n"] == "numeric(14,4)"
    assert "target_column_widened" in r.log.read_text()
