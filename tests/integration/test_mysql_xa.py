"""MariaDB source XA transactions: rows arrive once when committed, never when rolled back."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from tests.integration.routes import Route, audit_counts, execute, fetch, my_connect

pytestmark = pytest.mark.integration


def _session(dsn: str, *statements: str) -> None:
    """Statements on a connection of their own, closed after: a prepared XA transaction
    outlives its session (MariaDB ≥ 10.5) and is finished later from another one."""
    conn = my_connect(dsn)
    try:
        with conn.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
    finally:
        conn.close()


def _prefix(dsn: str) -> str:
    """XIDs are server-wide and the test server is shared: one prefix per test database."""
    return dsn.rsplit("/", 1)[-1]


def _phase_a(dsn: str) -> None:
    """XA committed and rolled back right after PREPARE, one-phase, and never prepared."""
    p = _prefix(dsn)
    _session(
        dsn,
        f"XA START '{p}x1'",
        "INSERT INTO t VALUES (2, 'x1')",
        "UPDATE t SET v = 'a1' WHERE id = 1",
        f"XA END '{p}x1'",
        f"XA PREPARE '{p}x1'",
        f"XA COMMIT '{p}x1'",
        f"XA START '{p}x2'",
        "INSERT INTO t VALUES (3, 'never x2')",
        "DELETE FROM t WHERE id = 1",
        f"XA END '{p}x2'",
        f"XA PREPARE '{p}x2'",
        f"XA ROLLBACK '{p}x2'",
        f"XA START '{p}x3'",
        "INSERT INTO t VALUES (4, 'x3')",
        f"XA END '{p}x3'",
        f"XA COMMIT '{p}x3' ONE PHASE",
        f"XA START '{p}x4'",
        "INSERT INTO t VALUES (5, 'never x4')",
        f"XA END '{p}x4'",
        f"XA ROLLBACK '{p}x4'",
        "INSERT INTO t VALUES (6, 'o')",
    )


def _phase_b(dsn: str) -> None:
    """Two XA transactions prepared (their sessions gone), ordinary ones committed after."""
    p = _prefix(dsn)
    _session(
        dsn,
        f"XA START '{p}x5', 'br', 7",
        "INSERT INTO t VALUES (7, 'x5')",
        "UPDATE t SET v = 'x5' WHERE id = 2",
        "DELETE FROM t WHERE id = 4",
        f"XA END '{p}x5', 'br', 7",
        f"XA PREPARE '{p}x5', 'br', 7",
    )
    _session(
        dsn,
        f"XA START '{p}x6'",
        "INSERT INTO t VALUES (8, 'never x6')",
        f"XA END '{p}x6'",
        f"XA PREPARE '{p}x6'",
    )
    _session(
        dsn,
        "INSERT INTO t VALUES (9, 'o')",
        "BEGIN",
        "INSERT INTO t VALUES (10, 'o')",
        "UPDATE t SET v = 'o6' WHERE id = 6",
        "COMMIT",
    )


def _phase_c(dsn: str) -> None:
    """The prepared transactions finished from another session, an ordinary one after."""
    p = _prefix(dsn)
    _session(
        dsn, f"XA COMMIT '{p}x5', 'br', 7", f"XA ROLLBACK '{p}x6'", "INSERT INTO t VALUES (11, 'o')"
    )


_AFTER_B = [(1, "a1"), (2, "x1"), (4, "x3"), (6, "o6"), (9, "o"), (10, "o")]
_AFTER_C = [(1, "a1"), (2, "x5"), (6, "o6"), (7, "x5"), (9, "o"), (10, "o"), (11, "o")]
# Every change that committed at the source, once (row 1 arrived by the initial snapshot).
_CHANGES = Counter(
    {
        ("insert", 2): 1, ("update", 1): 1, ("insert", 4): 1, ("insert", 6): 1,
        ("insert", 9): 1, ("insert", 10): 1, ("update", 6): 1,
        ("insert", 7): 1, ("update", 2): 1, ("delete", 4): 1, ("insert", 11): 1,
    }
)  # fmt: skip


def _setup(tmp: Path, src: str, tgt: str, mode: str) -> tuple[Route, str]:
    db = src.rsplit("/", 1)[-1]
    tgt_table = "public.t" if tgt.startswith("postgres") else f"{tgt.rsplit('/', 1)[-1]}.t"
    execute(src, "CREATE TABLE t (id int PRIMARY KEY, v varchar(20))")
    execute(src, "INSERT INTO t VALUES (1, 'a')")
    extra = f", position_mode: {mode}" if mode != "auto" else ""
    r = Route(tmp, src, tgt, {f"{db}.t": tgt_table}, source_extra=extra)
    r.drain()
    assert fetch(tgt, tgt_table, "id, v", "id") == [(1, "a")]
    return r, tgt_table


def _applied(r: Route) -> Counter[tuple[str, int]]:
    out: Counter[tuple[str, int]] = Counter()
    for (op, _table, key), n in audit_counts(r.target_dsn, r.pipeline).items():
        if op in ("insert", "update", "delete"):
            out[(op, int(json.loads(key)["id"]))] += n
    return out


def _wait_for(r: Route, table: str, expected: list[tuple[Any, ...]]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if fetch(r.target_dsn, table, "id, v", "id") == expected:
            return
        time.sleep(0.2)
    assert fetch(r.target_dsn, table, "id, v", "id") == expected


def _check_end(r: Route, table: str) -> None:
    assert fetch(r.source_dsn, "t", "id, v", "id") == _AFTER_C
    assert fetch(r.target_dsn, table, "id, v", "id") == _AFTER_C
    assert _applied(r) == _CHANGES


def _pending_xa(dsn: str) -> list[bytes]:
    """This test's prepared XA transactions (XA RECOVER lists the whole server's)."""
    with my_connect(dsn) as c, c.cursor() as cur:
        cur.execute("XA RECOVER")
        return [
            bytes(r[3]) for r in cur.fetchall() if bytes(r[3]).startswith(_prefix(dsn).encode())
        ]


@pytest.fixture(autouse=True)
def _no_leftover_xa(my_source_dsn: str) -> Iterator[None]:
    """A failed test must not leave its prepared transactions (and their locks) behind."""
    yield
    with my_connect(my_source_dsn) as c, c.cursor() as cur:
        cur.execute("XA RECOVER FORMAT = 'SQL'")
        for row in cur.fetchall():
            xid = row[3].decode() if isinstance(row[3], bytes) else str(row[3])
            if _prefix(my_source_dsn) in xid:
                cur.execute(f"XA ROLLBACK {xid}")


@pytest.mark.parametrize(("target", "mode"), [("pg", "auto"), ("mariadb", "auto"), ("pg", "file")])
def test_xa_written_while_the_daemon_is_stopped(
    tmp_path: Path,
    my_source_dsn: str,
    target_dsn: str,
    my_target_dsn: str,
    target: str,
    mode: str,
) -> None:
    r, table = _setup(
        tmp_path, my_source_dsn, target_dsn if target == "pg" else my_target_dsn, mode
    )
    _phase_a(my_source_dsn)
    _phase_b(my_source_dsn)
    assert len(_pending_xa(my_source_dsn)) == 2, _pending_xa(my_source_dsn)
    # Caught up while x5 and x6 are prepared: the checkpoint goes past their PREPARE.
    r.drain()
    assert fetch(r.target_dsn, table, "id, v", "id") == _AFTER_B
    _phase_c(my_source_dsn)
    r.drain()  # resumes between their PREPARE and their COMMIT / ROLLBACK
    _check_end(r, table)
    execute(my_source_dsn, "INSERT INTO t VALUES (12, 'o')")
    r.drain()  # and resumes after them
    assert fetch(r.target_dsn, table, "id, v", "id") == [*_AFTER_C, (12, "o")]


@pytest.mark.parametrize("target", ["pg", "mariadb"])
def test_xa_while_the_daemon_runs(
    tmp_path: Path, my_source_dsn: str, target_dsn: str, my_target_dsn: str, target: str
) -> None:
    r, table = _setup(
        tmp_path, my_source_dsn, target_dsn if target == "pg" else my_target_dsn, "auto"
    )
    daemon = r.start()
    try:
        time.sleep(1.0)
        _phase_a(my_source_dsn)
        _phase_b(my_source_dsn)
        _wait_for(r, table, _AFTER_B)
        time.sleep(0.5)  # the prepared rows must still not have arrived
        assert fetch(r.target_dsn, table, "id, v", "id") == _AFTER_B
        _phase_c(my_source_dsn)
        _wait_for(r, table, _AFTER_C)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    assert daemon.returncode == 0
    _check_end(r, table)


@pytest.mark.parametrize("mode", ["auto", "file"])
def test_xa_daemon_restarted_between_prepare_and_commit(
    tmp_path: Path, my_source_dsn: str, target_dsn: str, mode: str
) -> None:
    r, table = _setup(tmp_path, my_source_dsn, target_dsn, mode)
    daemon = r.start()
    try:
        time.sleep(1.0)
        _phase_a(my_source_dsn)
        _phase_b(my_source_dsn)
        _wait_for(r, table, _AFTER_B)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    assert daemon.returncode == 0
    _phase_c(my_source_dsn)
    daemon = r.start()
    try:
        _wait_for(r, table, _AFTER_C)
        execute(my_source_dsn, "INSERT INTO t VALUES (12, 'o')")
        _wait_for(r, table, [*_AFTER_C, (12, "o")])
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    assert daemon.returncode == 0
    assert _applied(r) == _CHANGES + Counter({("insert", 12): 1})


def test_xa_prepare_still_pending_then_rolled_back(
    tmp_path: Path, my_source_dsn: str, target_dsn: str
) -> None:
    """A prepared transaction left pending across runs, then rolled back: never applied."""
    r, table = _setup(tmp_path, my_source_dsn, target_dsn, "auto")
    p = _prefix(my_source_dsn)
    _session(
        my_source_dsn,
        f"XA START '{p}p'",
        "INSERT INTO t VALUES (20, 'never p')",
        f"XA END '{p}p'",
        f"XA PREPARE '{p}p'",
    )
    execute(my_source_dsn, "INSERT INTO t VALUES (21, 'o')")
    r.drain()
    r.drain()
    assert fetch(r.target_dsn, table, "id, v", "id") == [(1, "a"), (21, "o")]
    _session(my_source_dsn, f"XA ROLLBACK '{p}p'")
    execute(my_source_dsn, "INSERT INTO t VALUES (22, 'o')")
    r.drain()
    assert fetch(r.target_dsn, table, "id, v", "id") == [(1, "a"), (21, "o"), (22, "o")]
    assert _applied(r) == Counter({("insert", 21): 1, ("insert", 22): 1})
    with pytest.raises(pymysql.err.OperationalError):
        _session(my_source_dsn, f"XA COMMIT '{p}p'")  # gone for good
