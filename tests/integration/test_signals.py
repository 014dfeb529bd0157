"""Stop signals (#2): SIGINT like SIGTERM, a stop under load, a second signal exits at once."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from cdc_sync.records import PgLsn, Position
from tests.integration.harness import Setup, audit_rows, rows_as_text, sql, wait_until
from tests.integration.workload import DDL, Workload, audit_changes

pytestmark = pytest.mark.integration

TABLES = {"public.accounts": None, "public.events": "public.events_copy"}
Changes = Counter[tuple[str, str, str, int]]


def _applied(dsn: str) -> int:
    """Audited 'applied' changes in the target (0 before the daemon created its tables)."""
    with psycopg.connect(dsn) as conn:
        if conn.execute("SELECT to_regclass('cdc_sync_audit') IS NULL").fetchone() == (True,):
            return 0
        row = conn.execute(
            "SELECT count(*) FROM cdc_sync_audit WHERE outcome = 'applied'"
        ).fetchone()
    assert row is not None
    return int(row[0])


def _signal(proc: subprocess.Popen[bytes], sig: int) -> tuple[int, float]:
    """Send ``sig``; the exit code and the seconds it took (waits at most 60 s)."""
    t0 = time.monotonic()
    proc.send_signal(sig)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
        raise AssertionError(f"no exit within 60 s of signal {sig}") from None
    return code, time.monotonic() - t0


def _lsn(text: str) -> int:
    pos = Position.parse(text)
    assert isinstance(pos, PgLsn)
    return pos.value


def _checkpoint(s: Setup) -> int:
    """The checkpointed source position, as read by ``offsets show --json``."""
    res = s.cli("offsets", "show", "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    (info,) = json.loads(res.stdout)
    assert info["position"] is not None
    return _lsn(info["position"])


def _assert_checkpoint_covers_audit(s: Setup) -> None:
    """Every change the target holds as applied lies before the checkpoint: a restart
    resumes after them, never re-applies them."""
    with psycopg.connect(s.target_dsn) as conn:
        positions = [
            r[0]
            for r in conn.execute(
                "SELECT source_position FROM cdc_sync_audit "
                "WHERE pipeline = %s AND outcome = 'applied'",
                (s.pipeline,),
            )
        ]
    assert positions
    assert max(_lsn(p) for p in positions) < _checkpoint(s)


def _log_end(s: Setup) -> int:
    return s.log.stat().st_size if s.log.exists() else 0


def _finished(s: Setup, since: int) -> list[str]:
    """The ``result`` of each ``pipeline_finished`` line logged after offset ``since``."""
    out = []
    with s.log.open("rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == "pipeline_finished":
            out.append(str(entry.get("result")))
    return out


def _assert_exact(s: Setup, expected: Changes, tables: dict[str, str]) -> None:
    """Target equals source table by table; the audit holds each change exactly once."""
    for src, tgt in tables.items():
        assert rows_as_text(s.target_dsn, tgt) == rows_as_text(s.source_dsn, src), src
    audited = audit_changes(audit_rows(s.target_dsn, s.pipeline))
    dupes = {k: n for k, n in audited.items() if n > expected.get(k, 0) > 0}
    missing = expected - audited
    extra = audited - expected
    assert not dupes, f"{len(dupes)} changes audited more than once, e.g. {next(iter(dupes))}"
    assert not missing, f"{len(missing)} changes missing from the audit"
    assert not extra, f"{len(extra)} audited changes the source never made"


def _tx(conn: psycopg.Connection[tuple[object, ...]], changes: Changes, *stmts: str) -> int:
    """One source transaction of ``op``-tagged statements on table t ("insert:SQL …
    RETURNING id");
    records its changes under its xid and returns a WAL position inside it (before its
    commit, so the commit ends after it)."""
    with conn.transaction():
        xid = str(conn.execute("SELECT txid_current()").fetchone()[0])  # type: ignore[index]
        for stmt in stmts:
            op, _, text = stmt.partition(":")
            for (key,) in conn.execute(text).fetchall():
                changes[(xid, op, "public.t", int(str(key)))] += 1
        row = conn.execute("SELECT pg_current_wal_insert_lsn() - '0/0'").fetchone()
    assert row is not None
    return int(str(row[0]))


def test_sigint_drains_and_exits_zero_like_sigterm(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    sql(source_dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    s = Setup(tmp_path, source_dsn, target_dsn, {"public.t": None})
    # Slot, initial snapshot and first checkpoint first: rows written while a fresh daemon
    # sets up may be copied by its snapshot (audited 'snapshot'), not streamed.
    s.drain()
    changes: Changes = Counter()
    mark = _log_end(s)
    proc = s.start()
    try:
        with psycopg.connect(source_dsn) as conn:
            _tx(conn, changes, "insert:INSERT INTO t SELECT g, 'x' FROM generate_series(1, 1000) g "
                "RETURNING id")  # fmt: skip
            _tx(conn, changes, "update:UPDATE t SET v = 'y' WHERE id % 3 = 0 RETURNING id")
            last = _tx(conn, changes, "delete:DELETE FROM t WHERE id % 7 = 0 RETURNING id")
        wait_until(lambda: _applied(target_dsn) >= sum(changes.values()), timeout=60)
    finally:
        code, took = _signal(proc, signal.SIGINT)
    assert code == 0
    assert took < 10
    assert _finished(s, mark) == ["stopped"]
    _assert_exact(s, changes, {"t": "t"})
    # The checkpoint is past the last source commit: a restart finds nothing to apply.
    assert _checkpoint(s) > last
    _assert_checkpoint_covers_audit(s)
    before = _applied(target_dsn)
    s.drain()
    assert _applied(target_dsn) == before
    _assert_exact(s, changes, {"t": "t"})


def test_sigterm_under_continuous_writes(tmp_path: Path, source_dsn: str, target_dsn: str) -> None:
    """Stopped while streaming a live workload in small batches: exit 0 at a batch
    boundary, then a drain completes the target with each change applied exactly once."""
    sql(source_dsn, *DDL)
    s = Setup(tmp_path, source_dsn, target_dsn, TABLES, max_rows=50, max_seconds=0.05, flush_rows=7)
    s.drain()
    mark = _log_end(s)
    proc = s.start()
    work = Workload(source_dsn, seed=23, pause=0.003)
    work.start()
    try:
        wait_until(lambda: _applied(target_dsn) >= 200, timeout=60)
        # still applying right before the signal: the daemon is busy, not idle
        seen = _applied(target_dsn)
        wait_until(lambda: _applied(target_dsn) > seen, timeout=30, every=0.02)
        written = work.transactions
        code, took = _signal(proc, signal.SIGTERM)
        wait_until(lambda: work.transactions > written + 5, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        work.stop()
    assert code == 0
    assert took < 10
    assert _finished(s, mark) == ["stopped"]
    _assert_checkpoint_covers_audit(s)
    s.drain()
    _assert_exact(s, work.changes, {"accounts": "accounts", "events": "events_copy"})


def test_sigterm_while_applying_a_backlog(tmp_path: Path, source_dsn: str, target_dsn: str) -> None:
    """50k changes pending, applied 50 rows per batch: SIGTERM mid-backlog exits 0 quickly
    and loses or repeats nothing."""
    sql(source_dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    s = Setup(
        tmp_path, source_dsn, target_dsn, {"public.t": None},
        max_rows=50, max_seconds=0.05, flush_rows=25,
    )  # fmt: skip
    s.drain()
    changes: Changes = Counter()
    with psycopg.connect(source_dsn) as conn:
        for k in range(450):
            lo = k * 100 + 1
            stmts = [f"insert:INSERT INTO t SELECT g, md5(g::text) "
                     f"FROM generate_series({lo}, {lo + 99}) g RETURNING id"]  # fmt: skip
            if k % 10 == 9:
                stmts += [
                    f"update:UPDATE t SET v = 'u{k}' WHERE id BETWEEN {lo - 400} AND {lo - 1}"
                    " AND id % 2 = 0 RETURNING id",
                    f"delete:DELETE FROM t WHERE id BETWEEN {lo - 900} AND {lo - 800}"
                    " AND id % 10 = 0 RETURNING id",
                ]
            _tx(conn, changes, *stmts)
    total = sum(changes.values())
    assert total >= 50_000
    mark = _log_end(s)
    proc = s.start()
    try:
        wait_until(lambda: _applied(target_dsn) > 0, timeout=60, every=0.02)
    finally:
        code, took = _signal(proc, signal.SIGTERM)
    assert code == 0
    assert took < 10
    assert _finished(s, mark) == ["stopped"]
    assert _applied(target_dsn) < total, "the backlog was gone before the signal"
    _assert_checkpoint_covers_audit(s)
    s.drain()
    _assert_exact(s, changes, {"t": "t"})


@pytest.mark.parametrize(
    ("first", "second"),
    [(signal.SIGTERM, signal.SIGTERM), (signal.SIGINT, signal.SIGINT)],
    ids=["term-term", "int-int"],
)
def test_second_signal_during_drain_exits_at_once(
    tmp_path: Path, source_dsn: str, target_dsn: str, first: int, second: int
) -> None:
    """The drain waits for a batch blocked on a target lock; a second signal ends the
    process at once (exit 128 + signal). Nothing committed is lost, the abandoned batch is
    read again: after a restart every change is applied exactly once."""
    sql(source_dsn, *DDL)
    s = Setup(tmp_path, source_dsn, target_dsn, TABLES, max_rows=50, max_seconds=0.05, flush_rows=7)
    s.drain()
    mark = _log_end(s)
    proc = s.start()
    work = Workload(source_dsn, seed=31, pause=0.003)
    work.start()
    locker = psycopg.connect(target_dsn)
    try:
        wait_until(lambda: _applied(target_dsn) >= 100, timeout=60)
        # Writers of accounts now wait for this transaction: the daemon's next batch blocks.
        locker.execute("LOCK TABLE accounts IN SHARE MODE")
        wait_until(lambda: _waiting_on_lock(target_dsn), timeout=30, every=0.05)
        proc.send_signal(first)
        # draining: the blocked batch holds the target connection, so the daemon stays
        time.sleep(1.0)
        assert proc.poll() is None, "the first signal did not wait for the blocked batch"
        code, took = _signal(proc, second)
    finally:
        if proc.poll() is None:
            proc.kill()
        locker.rollback()
        locker.close()
        work.stop()
    assert code == 128 + second
    assert took < 3
    assert _finished(s, mark) == []
    _assert_checkpoint_covers_audit(s)
    s.drain()
    _assert_exact(s, work.changes, {"accounts": "accounts", "events": "events_copy"})


def _waiting_on_lock(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        ).fetchone()
    return row is not None and row[0] > 0


def _sleeping_in_trigger(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event = 'PgSleep' AND backend_xid IS NOT NULL"
        ).fetchone()
    return row is not None and row[0] > 0


def test_sigterm_inside_a_big_source_transaction(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    """One 6,000-row source transaction, applied slowly (a target trigger sleeps 2 ms a row,
    so at least 12 s on any machine): SIGTERM in the middle must not wait for all of it."""
    sql(source_dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    s = Setup(tmp_path, source_dsn, target_dsn, {"public.t": None}, flush_rows=100)
    s.drain()
    sql(
        target_dsn,
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN PERFORM pg_sleep(0.002); RETURN NEW; END$$",
        "CREATE TRIGGER slow BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION slow()",
    )
    changes: Changes = Counter()
    with psycopg.connect(source_dsn) as conn:
        _tx(conn, changes, "insert:INSERT INTO t SELECT g, md5(g::text) "
            "FROM generate_series(1, 6000) g RETURNING id")  # fmt: skip
    mark = _log_end(s)
    proc = s.start()
    try:
        # the daemon is inside the big transaction's target transaction, row by row
        wait_until(lambda: _sleeping_in_trigger(target_dsn), timeout=60, every=0.05)
    finally:
        code, took = _signal(proc, signal.SIGTERM)
    sql(target_dsn, "DROP TRIGGER slow ON t")
    assert code == 0
    assert _finished(s, mark) == ["stopped"]
    s.drain()
    _assert_exact(s, changes, {"t": "t"})
    # last: a drain that ignores the grace is still correct, only too slow
    assert took < 10, f"SIGTERM took {took:.1f} s inside a big source transaction"
