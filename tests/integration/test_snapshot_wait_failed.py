"""``snapshot --table --wait`` ends when the re-snapshot cannot progress: a signal table of
the wrong shape fails the task (with the fix) while the daemon goes on streaming, and a
stopped daemon ends the wait instead of leaving it hanging. ``check`` finds the bad table."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests.integration.harness import kill, wait_until
from tests.integration.routes import Route, execute, fetch, kind

pytestmark = pytest.mark.integration


def _db(dsn: str) -> str:
    return dsn.rsplit("/", 1)[-1]


def _setup(tmp: Path, src: str, tgt: str) -> tuple[Route, str, str]:
    """Table ``leads`` (100 rows) and a pipeline with a signal table; (route, source table,
    signal table)."""
    mysql = kind(src) == "mysql"
    table = f"{_db(src)}.leads" if mysql else "public.leads"
    signal = f"{_db(src)}.cdc_sync_signal" if mysql else "public.cdc_sync_signal"
    execute(src, "CREATE TABLE leads (id int PRIMARY KEY, v varchar(20))")
    execute(src, "INSERT INTO leads VALUES " + ", ".join(f"({i}, 'x{i}')" for i in range(1, 101)))
    r = Route(tmp, src, tgt, {table: "public.leads"}, pipeline=f"w_{_db(src)}")
    text = r.config.read_text()
    r.config.write_text(text.replace("    tables:", f"    signal_table: {signal}\n    tables:"))
    return r, table, signal


def _same(src: str, tgt: str) -> bool:
    try:
        return fetch(src, "leads") == fetch(tgt, "public.leads")
    except psycopg.errors.UndefinedTable:
        return False  # not created by the daemon yet


@pytest.fixture(params=["postgres", "mysql"])
def src(request: pytest.FixtureRequest) -> str:
    name = "source_dsn" if request.param == "postgres" else "my_source_dsn"
    return str(request.getfixturevalue(name))


def test_wrong_shaped_signal_table_fails_the_task_not_the_pipeline(
    tmp_path: Path, src: str, target_dsn: str
) -> None:
    r, table, signal = _setup(tmp_path, src, target_dsn)
    # Pre-made by a DBA with other columns (the daemon never alters an existing one).
    execute(src, f"CREATE TABLE {signal} (id varchar(40) PRIMARY KEY, kind text, data text)")
    checked = r.cli("check")
    assert checked.returncode != 0
    out = checked.stdout + checked.stderr
    assert f"signal table {signal} exists but" in out
    assert "'pipeline', 'value', 'updated_at'" in out and "'id'" in out
    assert "CREATE TABLE" in out
    proc = r.start()
    try:
        wait_until(lambda: _same(src, target_dsn), timeout=60, every=0.2)  # initial copy
        t0 = time.monotonic()
        res = r.cli("snapshot", "--table", table, "--wait", timeout=120)
        assert res.returncode != 0, res.stdout + res.stderr
        assert time.monotonic() - t0 < 30
        assert ": failed" in res.stderr and "pipeline" in res.stderr
        assert "CREATE TABLE" in res.stderr  # the fix, as docs/snapshot.md promises
        # The daemon goes on streaming: a later change arrives.
        assert proc.poll() is None
        execute(src, "UPDATE leads SET v = 'later' WHERE id = 7", "DELETE FROM leads WHERE id = 8")
        wait_until(lambda: _same(src, target_dsn), timeout=60, every=0.2)
    finally:
        if proc.poll() is None:
            assert kill(proc, 15) == 0
    # Fixed as the message says: the daemon creates the signal table at its next start.
    execute(src, f"DROP TABLE {signal}")
    assert r.cli("check").returncode == 0
    execute(target_dsn, "DELETE FROM public.leads WHERE id <= 50")  # drift to repair
    proc = r.start()
    try:
        res = r.cli("snapshot", "--table", table, "--wait", timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        wait_until(lambda: _same(src, target_dsn), timeout=60, every=0.2)
    finally:
        if proc.poll() is None:
            assert kill(proc, 15) == 0


def test_wait_ends_when_no_daemon_runs_the_pipeline(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    r, table, _ = _setup(tmp_path, source_dsn, target_dsn)
    proc = r.start()
    try:
        wait_until(lambda: _same(source_dsn, target_dsn), timeout=60, every=0.2)
    finally:
        assert kill(proc, 15) == 0  # a clean stop; the request comes after it
    execute(target_dsn, "DELETE FROM public.leads WHERE id > 90")
    t0 = time.monotonic()
    res = r.cli("snapshot", "--table", table, "--wait", timeout=120)
    assert res.returncode != 0, res.stdout + res.stderr
    assert time.monotonic() - t0 < 60
    assert "no daemon has been running it" in res.stderr, res.stderr
    assert "still requested" in res.stderr
    # The request stays: the daemon's next start copies the table.
    proc = r.start()
    try:
        wait_until(lambda: _same(source_dsn, target_dsn), timeout=60, every=0.2)
        done = f"resnapshot {table}: done"
        wait_until(lambda: done in r.cli("snapshot", "--status").stdout, timeout=30, every=0.5)
    finally:
        assert kill(proc, 15) == 0


def _requested(dsn: str) -> int:
    with psycopg.connect(dsn) as c:
        row = c.execute("SELECT count(*) FROM cdc_sync_snapshots WHERE status = 'requested'")
        got = row.fetchone()
        return int(got[0]) if got else 0


def test_wait_exits_1_when_the_task_is_cancelled(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    """A task cancelled while ``--wait`` follows it (here by hand in the state table) is not
    a success: exit 1 with its line."""
    r, table, _ = _setup(tmp_path, source_dsn, target_dsn)
    assert r.drain().returncode == 0  # state tables made; no daemon runs now
    waiter = subprocess.Popen(
        [sys.executable, "-m", "cdc_sync", "snapshot", "--table", table, "--wait", "-c",
         str(r.config)],
        env=r.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: _requested(target_dsn) == 1, timeout=30, every=0.2)
        execute(target_dsn, "UPDATE cdc_sync_snapshots SET status = 'cancelled'")
        out, err = waiter.communicate(timeout=30)
    finally:
        if waiter.poll() is None:
            waiter.kill()
    assert waiter.returncode == 1, out + err
    assert ": cancelled" in err, err
