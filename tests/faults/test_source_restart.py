"""Source restarts while the daemon streams, clean (fast) and crash (immediate), on
PostgreSQL and MariaDB: the daemon reconnects, nothing is lost, nothing applied twice."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from cdc_sync.testing.myserver import MyServer
from cdc_sync.testing.pgserver import PgServer
from tests.conftest import Report
from tests.integration.harness import Setup, kill, sql
from tests.integration.routes import Route, execute
from tests.integration.test_crash_safety import TABLES
from tests.integration.test_crash_safety import _assert_exact as _assert_pg
from tests.integration.test_mysql_routes import MY_DDL, MyWorkload, _tables
from tests.integration.test_mysql_routes import _assert_exact as _assert_my
from tests.integration.workload import DDL, Workload

pytestmark = [pytest.mark.integration]

# The crash is the default run's; a clean restart is only in the long run (-m faults_full).
MODES = [pytest.param("fast", marks=pytest.mark.faults_full), "immediate"]


@pytest.mark.parametrize("mode", MODES)
def test_pg_source_restart(
    tmp_path: Path, pg_private_server: PgServer, target_dsn: str, mode: str, report: Report
) -> None:
    source_dsn = pg_private_server.create_database("crash_src")
    sql(source_dsn, *DDL)
    s = Setup(tmp_path, source_dsn, target_dsn, TABLES, max_rows=200, max_seconds=0.1)
    s.drain()
    proc = s.start()
    total = Workload(source_dsn)  # accumulates the changes of every round
    try:
        for round_no in range(3):
            work = Workload(source_dsn, seed=round_no, pause=0.002)
            work.next_id = 1 + 10_000 * round_no
            work.start()
            time.sleep(2)
            work.stop()
            total.changes += work.changes
            # Restart the source while the daemon is still streaming: after a crash
            # PostgreSQL 15 re-sends transactions it had already confirmed.
            pg_private_server.restart(mode)
        time.sleep(1)
    finally:
        assert kill(proc, 15) == 0
    s.drain()
    changes = sum(total.changes.values())
    report(rows=changes, message=f"3 source restarts ({mode}) while streaming: reconnected")
    _assert_pg(s, total)


@pytest.mark.parametrize("mode", MODES)
def test_mariadb_source_restart(
    tmp_path: Path, my_private_server: MyServer, target_dsn: str, mode: str, report: Report
) -> None:
    dsn = my_private_server.create_database("crash_src")
    execute(dsn, *MY_DDL)
    r = Route(tmp_path, dsn, target_dsn, _tables(dsn), max_rows=200, max_seconds=0.1)
    r.drain()
    proc = r.start()
    total: Counter[tuple[str, str, str]] = Counter()
    try:
        for round_no in range(3):
            work = MyWorkload(dsn, seed=round_no, pause=0.002)
            work.next_id = 1 + 10_000 * round_no
            work.start()
            time.sleep(2)
            work.stop()
            total.update(work.changes)
            my_private_server.restart(mode)  # immediate: SIGKILL of mariadbd, crash recovery
        time.sleep(1)
    finally:
        assert kill(proc, 15) == 0
    r.drain()
    report(
        rows=sum(total.values()), message=f"3 source restarts ({mode}) while streaming: reconnected"
    )
    _assert_my(r, total)
