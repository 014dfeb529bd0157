"""MariaDB source transactions with savepoints: every committed row arrives, resumes work."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.routes import Route, execute, fetch, my_connect

pytestmark = pytest.mark.integration


def _savepoint_transactions(dsn: str) -> None:
    """Savepoints as ORMs use them (Django atomic(), Rails requires_new): rolled back to,
    released, nested; each transaction also writes rows before and after them."""
    conn = my_connect(dsn)
    try:
        with conn.cursor() as cur:
            for sql in (
                "BEGIN",
                "INSERT INTO t VALUES (2, 'b')",
                "SAVEPOINT sp1",
                "INSERT INTO t VALUES (3, 'rolled back')",
                "ROLLBACK TO SAVEPOINT sp1",
                "INSERT INTO t VALUES (4, 'd')",
                "COMMIT",
                "BEGIN",
                "SAVEPOINT `s p`",
                "INSERT INTO t VALUES (5, 'e')",
                "RELEASE SAVEPOINT `s p`",
                "SAVEPOINT a",
                "UPDATE t SET v = 'b2' WHERE id = 2",
                "SAVEPOINT b",
                "DELETE FROM t WHERE id = 4",
                "ROLLBACK TO b",
                "INSERT INTO t VALUES (6, 'f')",
                "RELEASE SAVEPOINT a",
                "COMMIT",
                "INSERT INTO t VALUES (7, 'g')",
            ):
                cur.execute(sql)
    finally:
        conn.close()


_EXPECTED = [(1, "a"), (2, "b2"), (4, "d"), (5, "e"), (6, "f"), (7, "g")]


@pytest.mark.parametrize("target", ["pg", "mariadb"])
def test_rows_after_a_savepoint_are_replicated(
    tmp_path: Path, my_source_dsn: str, target_dsn: str, my_target_dsn: str, target: str
) -> None:
    tgt = target_dsn if target == "pg" else my_target_dsn
    db = my_source_dsn.rsplit("/", 1)[-1]
    tgt_table = "public.t" if target == "pg" else f"{tgt.rsplit('/', 1)[-1]}.t"
    execute(my_source_dsn, "CREATE TABLE t (id int PRIMARY KEY, v varchar(20))")
    execute(my_source_dsn, "INSERT INTO t VALUES (1, 'a')")
    r = Route(tmp_path, my_source_dsn, tgt, {f"{db}.t": tgt_table})
    r.drain()

    # Written while the daemon is stopped: the rows after each savepoint were lost, and the
    # checkpoint then sat inside the transaction.
    _savepoint_transactions(my_source_dsn)
    r.drain()
    assert fetch(my_source_dsn, "t", "id, v", "id") == _EXPECTED
    assert fetch(tgt, tgt_table, "id, v", "id") == _EXPECTED

    # A restart resumes after those transactions (was: ValueError on the next start).
    execute(my_source_dsn, "INSERT INTO t VALUES (8, 'h')")
    r.drain()
    assert fetch(tgt, tgt_table, "id, v", "id") == [*_EXPECTED, (8, "h")]


def test_savepoints_while_the_daemon_runs(
    tmp_path: Path, my_source_dsn: str, target_dsn: str
) -> None:
    db = my_source_dsn.rsplit("/", 1)[-1]
    execute(my_source_dsn, "CREATE TABLE t (id int PRIMARY KEY, v varchar(20))")
    execute(my_source_dsn, "INSERT INTO t VALUES (1, 'a')")
    r = Route(tmp_path, my_source_dsn, target_dsn, {f"{db}.t": "public.t"})
    r.drain()
    daemon = r.start()
    try:
        time.sleep(1.0)
        _savepoint_transactions(my_source_dsn)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if fetch(target_dsn, "public.t", "id, v", "id") == _EXPECTED:
                break
            time.sleep(0.2)
        assert fetch(target_dsn, "public.t", "id, v", "id") == _EXPECTED
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    assert daemon.returncode == 0
