"""Partitioned PostgreSQL source tables (call logs by month) replicate as one table, and an
unlogged table, whose changes logical decoding never sees, is refused instead of going quiet."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.integration.routes import Route, execute, fetch, my_connect

pytestmark = pytest.mark.integration

CALLS = """
CREATE TABLE calls (
    id bigint NOT NULL, placed date NOT NULL, phone text NOT NULL, outcome text,
    PRIMARY KEY (id, placed)
) PARTITION BY RANGE (placed);
CREATE TABLE calls_2026_10 PARTITION OF calls FOR VALUES FROM ('2026-10-01') TO ('2026-11-01');
CREATE TABLE calls_2026_11 PARTITION OF calls FOR VALUES FROM ('2026-11-01') TO ('2026-12-01');
"""


def fill(dsn: str) -> None:
    execute(
        dsn,
        "INSERT INTO calls SELECT g, date '2026-10-20' + (g % 20), '+4930' || g, 'busy' "
        "FROM generate_series(1, 200) g",
    )


def change(dsn: str) -> None:
    execute(
        dsn,
        "UPDATE calls SET outcome = 'answered' WHERE id % 3 = 0",
        "DELETE FROM calls WHERE id % 7 = 0",
        # A partition added while the pipeline runs is covered by the publication at once.
        "CREATE TABLE calls_2026_12 PARTITION OF calls "
        "FOR VALUES FROM ('2026-12-01') TO ('2027-01-01')",
        "INSERT INTO calls VALUES (1000, '2026-12-24', '+4930999', 'busy')",
        # The row moves to another partition: a delete there and an insert here.
        "UPDATE calls SET placed = '2026-12-02' WHERE id = 1",
    )


def test_partitioned_table_into_postgres(source_dsn: str, target_dsn: str, tmp_path: Path) -> None:
    execute(source_dsn, CALLS)
    fill(source_dsn)
    route = Route(tmp_path, source_dsn, target_dsn, {"public.calls": None})
    check = route.cli("check")
    assert check.returncode == 0, check.stdout + check.stderr
    route.drain()
    assert fetch(target_dsn, "calls", order_by="1, 2") == fetch(
        source_dsn, "calls", order_by="1, 2"
    )
    change(source_dsn)
    route.drain()
    rows = fetch(source_dsn, "calls", order_by="1, 2")
    assert fetch(target_dsn, "calls", order_by="1, 2") == rows
    assert any(r[0] == 1000 for r in rows) and len(rows) > 150
    ops = Counter(r[0] for r in fetch(target_dsn, "cdc_sync_audit", "op"))
    # 66 updates, 28 deletes, and the row that changed partition: a delete and an insert
    assert ops["update"] == 66 and ops["delete"] == 28 + 1
    verify = route.cli("verify", "-p", route.pipeline)
    assert verify.returncode == 0 and "equal" in verify.stdout, verify.stdout + verify.stderr
    # PostgreSQL sends nothing for a partition truncated on its own (README): the target
    # keeps those rows until verify --repair removes them.
    execute(source_dsn, "TRUNCATE calls_2026_10")
    route.drain()
    assert len(fetch(target_dsn, "calls")) > len(fetch(source_dsn, "calls"))
    repair = route.cli("verify", "-p", route.pipeline, "--repair")
    assert repair.returncode in (0, 1), repair.stdout + repair.stderr
    assert fetch(target_dsn, "calls", order_by="1, 2") == fetch(
        source_dsn, "calls", order_by="1, 2"
    )


def test_partitioned_table_into_mysql(source_dsn: str, my_target_dsn: str, tmp_path: Path) -> None:
    execute(source_dsn, CALLS)
    fill(source_dsn)
    db = my_target_dsn.rsplit("/", 1)[1]
    route = Route(tmp_path, source_dsn, my_target_dsn, {"public.calls": f"{db}.calls"})
    route.drain()
    change(source_dsn)
    route.drain()
    with my_connect(my_target_dsn) as c, c.cursor() as cur:
        cur.execute("SELECT id, placed, phone, outcome FROM calls ORDER BY 1, 2")
        target = list(cur.fetchall())
    assert target == fetch(source_dsn, "calls", order_by="1, 2")


def test_unlogged_table_is_refused(source_dsn: str, target_dsn: str, tmp_path: Path) -> None:
    execute(source_dsn, "CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY, v text)")
    route = Route(tmp_path, source_dsn, target_dsn, {"public.scratch": None})
    check = route.cli("check")
    assert check.returncode == 1
    assert "public.scratch is unlogged" in check.stdout + check.stderr
    assert "ALTER TABLE public.scratch SET LOGGED" in check.stdout + check.stderr
    run = route.cli("run", "--until-caught-up")
    assert run.returncode == 1 and "public.scratch is unlogged" in run.stderr


def test_mysql_partitioned_table_into_postgres(
    my_source_dsn: str, target_dsn: str, tmp_path: Path
) -> None:
    """MySQL / MariaDB partitioning is invisible in the binlog: one table, as expected."""
    db = my_source_dsn.rsplit("/", 1)[1]
    execute(
        my_source_dsn,
        "CREATE TABLE calls (id bigint NOT NULL, placed date NOT NULL, phone varchar(20) NOT NULL, "
        "outcome varchar(20), PRIMARY KEY (id, placed)) PARTITION BY RANGE COLUMNS (placed) ("
        "PARTITION p10 VALUES LESS THAN ('2026-11-01'), PARTITION p11 VALUES LESS THAN (MAXVALUE))",
        "INSERT INTO calls SELECT seq, '2026-10-20' + INTERVAL (seq % 20) DAY, "
        "CONCAT('+4930', seq), 'busy' FROM seq_1_to_200",
    )
    route = Route(tmp_path, my_source_dsn, target_dsn, {f"{db}.calls": "public.calls"})
    route.drain()
    execute(
        my_source_dsn,
        "UPDATE calls SET outcome = 'answered' WHERE id % 3 = 0",
        "DELETE FROM calls WHERE id % 7 = 0",
        "UPDATE calls SET placed = '2026-11-02' WHERE id = 1",
    )
    route.drain()
    assert fetch(target_dsn, "calls", order_by="1, 2") == fetch(
        my_source_dsn, "calls", order_by="1, 2"
    )


def test_partitioned_target_table(source_dsn: str, target_dsn: str, tmp_path: Path) -> None:
    """The hub keeps call logs partitioned too: rows land in its partitions, and a row
    whose date moves crosses partitions there as well."""
    execute(source_dsn, CALLS)
    execute(target_dsn, CALLS.replace("2026_11 ", "rest ").replace("'2026-12-01'", "MAXVALUE"))
    fill(source_dsn)
    route = Route(tmp_path, source_dsn, target_dsn, {"public.calls": None})
    route.drain()
    change(source_dsn)
    route.drain()
    assert fetch(target_dsn, "calls", order_by="1, 2") == fetch(
        source_dsn, "calls", order_by="1, 2"
    )
    later = fetch(source_dsn, "calls WHERE placed >= '2026-11-01'", "count(*)")
    assert fetch(target_dsn, "calls_rest", "count(*)") == later != [(0,)]
