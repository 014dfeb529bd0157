"""A deadlock with another session on the target (40P01): the daemon's transaction is the
victim, it is retried from the checkpoint, and the target ends equal to the source with one
audit row per change (nothing lost, nothing applied twice)."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.integration.harness import kill, wait_until
from tests.integration.routes import Route, audit_counts, execute, fetch

pytestmark = pytest.mark.integration


def _daemon_waits_on_a_lock(dsn: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'cdc-sync:%' "
            "AND wait_event_type = 'Lock'"
        ).fetchone()
        return bool(row and row[0])


def test_a_deadlock_on_the_target_is_retried_without_loss_or_duplicates(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    db = urlsplit(target_dsn).path.lstrip("/")
    # The daemon's sessions check for deadlocks after 2 s, the DBA's only after 60 s: the
    # daemon is the one PostgreSQL picks as the victim.
    execute(target_dsn, f"ALTER DATABASE {db} SET deadlock_timeout = '2s'")
    execute(source_dsn, "CREATE TABLE t (id int PRIMARY KEY, n int)")
    execute(source_dsn, "INSERT INTO t SELECT g, 0 FROM generate_series(1, 4) g")
    r = Route(tmp_path, source_dsn, target_dsn, {"public.t": None}, pipeline="deadlock_p")
    r.drain()
    assert fetch(target_dsn, "t") == fetch(source_dsn, "t")

    proc = r.start()
    try:
        with psycopg.connect(target_dsn) as dba:
            dba.execute("SET deadlock_timeout = '60s'")
            dba.execute("SELECT 1 FROM t WHERE id = 4 FOR UPDATE")  # the DBA holds row 4
            # One source transaction touching rows 1..4: the daemon locks 1..3, waits on 4.
            execute(source_dsn, "UPDATE t SET n = n + 1")
            wait_until(lambda: _daemon_waits_on_a_lock(target_dsn) or proc.poll() is not None)
            assert proc.poll() is None, r.log.read_text()[-2000:]
            dba.execute("SELECT 1 FROM t WHERE id = 1 FOR UPDATE")  # the cycle: 40P01
            dba.commit()
        execute(source_dsn, "UPDATE t SET n = n + 10 WHERE id = 2")
        wait_until(lambda: fetch(target_dsn, "t") == fetch(source_dsn, "t"))
    finally:
        assert kill(proc, signal.SIGTERM) == 0, r.log.read_text()[-3000:]
    log = r.log.read_text()
    retried = [
        json.loads(x)
        for x in log.splitlines()
        if x.startswith("{") and "transient_error_retrying" in x
    ]
    assert retried and "40P01" in retried[0]["error"], log[-3000:]
    assert fetch(target_dsn, "t") == [(1, 1), (2, 11), (3, 1), (4, 1)]
    # Exactly one audit row per change: 4 snapshot rows, then 4 + 1 updates.
    counts = audit_counts(target_dsn, "deadlock_p")
    updates = {json.loads(k)["id"]: v for (op, _, k), v in counts.items() if op == "update"}
    assert updates == {1: 1, 2: 2, 3: 1, 4: 1}, counts
