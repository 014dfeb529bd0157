"""A configured MariaDB table dropped and created again while the daemon was stopped (or
behind): the dropped table's rows are gone at the source, so they go from the target too (as
a TRUNCATE at the DROP, under apply_truncate), instead of staying there without a word.
Contents are compared with the source."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.routes import Route, execute, fetch, kind

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("engine", ["pg", "mysql"])
def test_a_table_dropped_and_created_again_leaves_no_stale_rows(
    tmp_path: Path, engine: str, my_source_dsn: str, target_dsn: str, my_target_dsn: str
) -> None:
    src = my_source_dsn
    tgt = target_dsn if engine == "pg" else my_target_dsn
    sdb, tdb = src.rsplit("/", 1)[-1], tgt.rsplit("/", 1)[-1]
    ttable = f"{tdb}.t" if kind(tgt) == "mysql" else "public.t"
    execute(src, "CREATE TABLE t (id int PRIMARY KEY, v varchar(20), n int)",
            "INSERT INTO t VALUES (1, 'one', 1), (2, 'two', 2), (3, 'three', 3)")  # fmt: skip
    r = Route(tmp_path, src, tgt, {f"{sdb}.t": ttable}, pipeline="rc", max_seconds=0.05)
    r.drain()
    execute(src, "INSERT INTO t VALUES (4, 'four', 4)", "DROP TABLE t",
            "CREATE TABLE t (id int PRIMARY KEY, v varchar(20), w date)",
            "INSERT INTO t VALUES (1, 'uno', '2026-01-01'), (10, 'ten', NULL)")  # fmt: skip
    r.drain()
    execute(src, "INSERT INTO t VALUES (11, 'eleven', NULL)")
    r.drain()
    assert fetch(tgt, "t", "id, v") == fetch(src, "t", "id, v") == [
        (1, "uno"), (10, "ten"), (11, "eleven")
    ]  # fmt: skip
    # The old table's column stays in the target, NULL in the new table's rows.
    assert [n for (n,) in fetch(tgt, "t", "n")] == [None, None, None]
    assert [op for (op,) in fetch(tgt, "cdc_sync_audit", "op")].count("truncate") == 1
