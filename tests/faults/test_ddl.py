"""DDL mid-stream on a PostgreSQL source, with the daemon running and while it is stopped:
an added column is added to the target, a dropped one stays there (NULL for new rows), a
renamed one arrives as a new column (the old one keeps its history). No change is lost."""

from __future__ import annotations

import signal
from pathlib import Path

import psycopg
import pytest

from tests.conftest import Report
from tests.integration.harness import Setup, audit_rows, kill, sql, wait_until

pytestmark = [pytest.mark.integration]


def _rows(dsn: str, cols: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as c:
        return [tuple(r) for r in c.execute(f"SELECT {cols} FROM calls ORDER BY id")]


def test_add_drop_rename_column_running_and_stopped(
    tmp_path: Path, source_dsn: str, target_dsn: str, report: Report
) -> None:
    sql(source_dsn, "CREATE TABLE calls (id int PRIMARY KEY, outcome text, note text)")
    s = Setup(tmp_path, source_dsn, target_dsn, {"public.calls": None}, max_seconds=0.05)
    s.drain()
    sql(source_dsn, "INSERT INTO calls VALUES (1, 'busy', 'n1')")
    proc = s.start()
    try:  # running: each ALTER arrives between the stream's transactions
        sql(
            source_dsn,
            "ALTER TABLE calls ADD COLUMN seconds int",
            "INSERT INTO calls VALUES (2, 'answered', 'n2', 42)",
            "UPDATE calls SET seconds = 7 WHERE id = 1",
            "ALTER TABLE calls RENAME COLUMN note TO memo",
            "INSERT INTO calls VALUES (3, 'busy', 'm3', 1)",
            "UPDATE calls SET memo = 'm1' WHERE id = 1",
        )
        wait_until(lambda: len(_rows(target_dsn, "id")) == 3, timeout=60)
        wait_until(lambda: _rows(target_dsn, "id, memo")[0] == (1, "m1"), timeout=60)
    finally:
        assert kill(proc, signal.SIGTERM) == 0
    # stopped: a dropped column and an added one in the same stretch
    sql(
        source_dsn,
        "ALTER TABLE calls DROP COLUMN seconds",
        "ALTER TABLE calls ADD COLUMN agent text",
        "INSERT INTO calls VALUES (4, 'late', 'm4', 'bob')",
        "UPDATE calls SET agent = 'ann' WHERE id = 2",
    )
    s.drain()
    want = _rows(source_dsn, "id, outcome, memo, agent")
    got = _rows(target_dsn, "id, outcome, memo, agent")
    kept = _rows(target_dsn, "id, note, seconds")
    changes = [r for r in audit_rows(target_dsn, s.pipeline) if r["outcome"] == "applied"]
    report(
        rows=len(want),
        lost=len(set(want) - set(got)),
        duplicated=len(changes) - 7,
        message="ADD / RENAME while running, DROP / ADD while stopped: target keeps the old "
        "columns' history",
    )
    assert got == want
    # the renamed column's old values and the dropped column stay in the target
    assert kept == [(1, "n1", 7), (2, "n2", 42), (3, None, 1), (4, None, None)]
    assert len(changes) == 7
