"""A huge source transaction (INSERT then UPDATE of every row): the target shows all or
nothing at every look, the daemon's peak RSS stays under 300 MB, and a SIGKILL in the middle
of applying it leaves nothing partial behind, then the restart applies it whole."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import Report
from tests.integration.harness import Setup, audit_rows, kill, rows_as_text, sql, wait_until

pytestmark = [pytest.mark.integration]

RSS_LIMIT_MB = 300


class Looker(threading.Thread):
    """Counts the target's rows and sums a version column: only 0 / all rows, and one
    version for all of them, may ever be seen."""

    def __init__(self, dsn: str, rows: int) -> None:
        super().__init__(daemon=True)
        self.dsn, self.rows, self.halt = dsn, rows, threading.Event()
        self.seen: set[tuple[int, int]] = set()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as c:
            while not self.halt.is_set():
                try:
                    row = c.execute("SELECT count(*), count(DISTINCT v) FROM big").fetchone()
                except psycopg.errors.UndefinedTable:
                    time.sleep(0.05)
                    continue
                assert row is not None
                self.seen.add((int(row[0]), int(row[1])))
                time.sleep(0.02)

    def torn(self) -> list[tuple[int, int]]:
        return [(n, v) for n, v in self.seen if n not in (0, self.rows) or v > 1]

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)


def _peak_rss_mb(pid: int) -> float:
    """VmHWM: the process's peak resident set so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _huge(tmp: Path, source: str, target: str, rows: int, report: Report) -> None:
    sql(source, "CREATE TABLE big (id int PRIMARY KEY, v int NOT NULL, pad text)")
    s = Setup(tmp, source, target, {"public.big": None}, max_rows=5000, flush_rows=5000)
    s.drain()
    pad = "x" * 60
    sql(source, f"INSERT INTO big SELECT g, 1, '{pad}' FROM generate_series(1, {rows}) g")
    looker = Looker(target, rows)
    looker.start()
    peak = 0.0
    proc = s.start()
    try:
        # SIGKILL while the first transaction is half applied (chunks in the open target
        # transaction, nothing committed): nothing of it may be visible, before or after.
        deadline = time.monotonic() + 120
        while not _applying(target) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        peak = max(peak, _peak_rss_mb(proc.pid))
        kill(proc)
        half = rows_as_text(target, "big") if _exists(target) else []
        sql(source, "UPDATE big SET v = 2")
        proc = s.start()
        wait_until(lambda: _version(target) == (rows, 2), timeout=600, every=0.5)
        peak = max(peak, _peak_rss_mb(proc.pid))
    finally:
        kill(proc, signal.SIGTERM)
        looker.stop()
    got = rows_as_text(target, "big")
    want = rows_as_text(source, "big")
    audited = [r["pk"]["id"] for r in audit_rows(target, s.pipeline) if r["outcome"] == "applied"]
    report(
        rows=len(want),
        lost=len(set(want) - set(got)),
        duplicated=len(audited) - 2 * rows,
        message=f"{rows}-row INSERT + UPDATE, SIGKILL mid-apply ({len(half)} rows visible "
        f"then); peak RSS {peak:.0f} MB; looks {sorted(looker.seen)[:4]}",
    )
    assert half == [], "a half-applied transaction was visible"
    assert not looker.torn(), looker.torn()
    assert got == want
    assert sorted(audited) == sorted(list(range(1, rows + 1)) * 2)
    assert peak < RSS_LIMIT_MB


def _applying(dsn: str) -> bool:
    """The daemon's target session is inside a transaction that has written rows."""
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()"
        ).fetchone()
    return row is not None and int(row[0]) > 0


def _exists(dsn: str) -> bool:
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT to_regclass('public.big')").fetchone() != (None,)


def _version(dsn: str) -> tuple[int, int] | None:
    if not _exists(dsn):
        return None
    with psycopg.connect(dsn) as c:
        row = c.execute("SELECT count(*), min(v) FROM big").fetchone()
    return None if row is None else (int(row[0]), int(row[1] or 0))


def test_huge_transaction_200k(
    tmp_path: Path, source_dsn: str, target_dsn: str, report: Report
) -> None:
    _huge(tmp_path, source_dsn, target_dsn, 200_000, report)


@pytest.mark.faults_full
def test_huge_transaction_1m(
    tmp_path: Path, source_dsn: str, target_dsn: str, report: Report
) -> None:
    _huge(tmp_path, source_dsn, target_dsn, 1_000_000, report)
