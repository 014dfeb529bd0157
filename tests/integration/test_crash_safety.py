"""Kill -9 at random moments under load, restart the source: nothing lost, nothing twice."""

from __future__ import annotations

import itertools
import random
import time
from pathlib import Path

import psycopg
import pytest

from tests.integration.harness import Setup, audit_rows, kill, rows_as_text, sql
from tests.integration.workload import DDL, Workload, audit_changes

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TABLES = {"public.accounts": None, "public.events": "public.events_copy"}


def _audited(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM cdc_sync_audit").fetchone()
    assert row is not None
    return int(row[0])


def _assert_exact(s: Setup, work: Workload) -> None:
    for src, tgt in (("accounts", "accounts"), ("events", "events_copy")):
        assert rows_as_text(s.target_dsn, tgt) == rows_as_text(s.source_dsn, src)
    audited = audit_changes(audit_rows(s.target_dsn, s.pipeline))
    # a row updated twice in one transaction is two changes: compare with the workload's count
    dupes = {k: n for k, n in audited.items() if n > work.changes.get(k, 0) > 0}
    missing = work.changes - audited
    extra = audited - work.changes
    assert not dupes, f"{len(dupes)} changes audited more than once"
    assert not missing, f"{len(missing)} changes missing from the audit"
    assert not extra, f"{len(extra)} audited changes the workload never made"


def test_sigkill_at_random_moments(tmp_path: Path, source_dsn: str, target_dsn: str) -> None:
    sql(source_dsn, *DDL)
    # small batches so kills land between, inside and right after target commits
    s = Setup(tmp_path, source_dsn, target_dsn, TABLES, max_rows=50, max_seconds=0.05, flush_rows=7)
    s.drain()
    # Paced: an unpaced writer on a fast machine built a backlog the 50-row batches needed
    # ~110 s to drain (the CLI timeout is 120 s); the kills, not the backlog, are the test.
    work = Workload(source_dsn, seed=11, pause=0.003)
    work.start()
    rng = random.Random(5)
    kills = 0
    applied = [_audited(s.target_dsn)]
    try:
        # #2 asks for >= 20 kills; runs of 0.5-2.2 s keep the loop within the CI budget
        # (~35 s) while kills land in start-up, streaming and commits.
        while kills < 20:
            proc = s.start()
            time.sleep(rng.uniform(0.5, 2.2))
            kill(proc)
            kills += 1
            applied.append(_audited(s.target_dsn))
    finally:
        work.stop()
    assert work.transactions > 100
    # Most runs applied something before their kill: the kills hit a working daemon, not
    # only its start-up (a slow machine starts slower, hence not all).
    advanced = sum(b > a for a, b in itertools.pairwise(applied))
    assert advanced >= 8, f"only {advanced} of 20 runs applied anything before their kill"
    s.drain()
    _assert_exact(s, work)


def test_sigkill_while_inserts_go_by_copy(tmp_path: Path, source_dsn: str, target_dsn: str) -> None:
    """Big insert transactions take the COPY path: kills in the middle of it lose nothing and
    audit nothing twice (the checkpoint commits with the copied rows)."""
    sql(source_dsn, "CREATE TABLE bulk (id int PRIMARY KEY, note text)")
    s = Setup(tmp_path, source_dsn, target_dsn, {"public.bulk": None}, flush_rows=500)
    s.drain()
    proc = s.start()
    rng = random.Random(3)
    with psycopg.connect(source_dsn, autocommit=True) as c:
        for k in range(60):
            c.execute(
                "INSERT INTO bulk SELECT g, md5(g::text) FROM generate_series(%s::int, %s::int) g",
                (k * 1000 + 1, k * 1000 + 1000),
            )
            if k % 10 == 9:
                time.sleep(rng.uniform(0.0, 0.4))
                kill(proc)
                proc = s.start()
    kill(proc)
    s.drain()
    assert rows_as_text(s.target_dsn, "bulk") == rows_as_text(source_dsn, "bulk")
    audited = audit_rows(s.target_dsn, s.pipeline)
    keys = [r["pk"]["id"] for r in audited if r["outcome"] == "applied"]
    assert len(keys) == len(set(keys)) == 60_000
