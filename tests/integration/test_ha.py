"""One active daemon per pipeline: a standby waits, takes over, and a paused one is fenced."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from cdc_sync.checkpoint.store import CheckpointStore, LeaseHolder
from cdc_sync.config import load_config
from cdc_sync.errors import FencedError, ShutdownRequested
from cdc_sync.logs import get
from cdc_sync.records import PgLsn
from cdc_sync.runtime.lease import LeaseHeldError, holder_gone, wait_for_lease
from cdc_sync.runtime.stop import StopFlag
from cdc_sync.runtime.wiring import target_engine
from cdc_sync.state.migrate import upgrade
from tests.integration.harness import Setup, audit_rows, kill, rows_as_text, sql, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DDL = "CREATE TABLE items (id int PRIMARY KEY, v text)"


def start(s: Setup, log: Path) -> subprocess.Popen[bytes]:
    """The daemon with a log of its own (to tell the two apart)."""
    with log.open("ab") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "cdc_sync", "run", "-c", str(s.config)],
            env=s.env,
            stdout=subprocess.DEVNULL,
            stderr=f,
        )


def owner_of(proc: subprocess.Popen[bytes]) -> str:
    return f"{socket.gethostname()}:{proc.pid}"


def lease(s: Setup) -> tuple[str | None, bool]:
    """(owner, lease unexpired) of the pipeline's checkpoint row."""
    with psycopg.connect(s.target_dsn) as conn:
        row = conn.execute(
            "SELECT owner, coalesce(lease_expires_at > now(), false) "
            "FROM cdc_sync_checkpoints WHERE pipeline = %s",
            (s.pipeline,),
        ).fetchone()
    return (None, False) if row is None else (row[0], bool(row[1]))


def insert(s: Setup, ids: range) -> None:
    last = ids.stop - 1
    sql(
        s.source_dsn,
        f"INSERT INTO items SELECT g, 'v' || g FROM generate_series({ids.start}, {last}) g",
    )


def count(s: Setup) -> int:
    with psycopg.connect(s.target_dsn) as conn:
        row = conn.execute("SELECT count(*) FROM items").fetchone()
    return int(row[0]) if row else 0


def assert_applied_once(s: Setup, rows: int) -> None:
    assert rows_as_text(s.target_dsn, "items") == rows_as_text(s.source_dsn, "items")
    audited = [a["pk"] for a in audit_rows(s.target_dsn, s.pipeline) if a["op"] == "insert"]
    assert len(audited) == rows, "every change audited exactly once"
    assert len({str(pk) for pk in audited}) == rows


def setup(tmp_path: Path, source_dsn: str, target_dsn: str) -> Setup:
    sql(source_dsn, DDL)
    s = Setup(tmp_path, source_dsn, target_dsn, {"public.items": None})
    s.drain()  # slot, publication, target table
    return s


@contextlib.contextmanager
def two_daemons(
    s: Setup, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]]:
    """The first one started holds the lease; the second waits (and says for whom)."""
    a = start(s, tmp_path / "a.log")
    wait_until(lambda: lease(s) == (owner_of(a), True), timeout=30)
    b = start(s, tmp_path / "b.log")
    wait_until(lambda: "lease_waiting" in (tmp_path / "b.log").read_text(), timeout=30)
    assert owner_of(a) in (tmp_path / "b.log").read_text()  # the holder is named
    try:
        yield a, b
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                kill(p)


def test_standby_takes_over_after_kill_9(tmp_path: Path, source_dsn: str, target_dsn: str) -> None:
    s = setup(tmp_path, source_dsn, target_dsn)
    with two_daemons(s, tmp_path) as (a, b):
        insert(s, range(1, 51))
        wait_until(lambda: count(s) == 50, timeout=30)
        assert lease(s) == (owner_of(a), True)  # the standby applied nothing
        assert "lease_waiting" in (tmp_path / "b.log").read_text()
        # while a daemon holds it, a one-shot run fails at once, naming the holder
        res = s.cli("run", "--until-caught-up")
        assert res.returncode == 1 and owner_of(a) in res.stderr, res.stderr[-2000:]

        kill(a)
        killed = time.monotonic()
        insert(s, range(51, 101))
        wait_until(lambda: count(s) == 100, timeout=15)
        assert time.monotonic() - killed < 15
        assert lease(s) == (owner_of(b), True)
        assert kill(b, signal.SIGTERM) == 0
        # a clean stop releases the lease: the next run need not wait for it to expire
        assert lease(s) == (owner_of(b), False)
    s.drain()
    assert_applied_once(s, 100)


# -- the store and the wait, on a real target ---------------------------------------------------


@pytest.fixture
def engine(target_dsn: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(target_dsn.replace("postgresql://", "postgresql+psycopg://"))
    with eng.connect() as conn:
        upgrade(conn)
        conn.commit()
    yield eng
    eng.dispose()


def test_live_lease_is_waited_for_then_taken_when_expired(engine: sa.Engine) -> None:
    mine, theirs = CheckpointStore("p1"), CheckpointStore("p1")
    log = get()
    with engine.connect() as conn:
        t1 = theirs.acquire(conn, "elsewhere:1", 1.5)
        conn.commit()
        got = mine.try_acquire(conn, "here:2", 10, holder_gone)
        assert isinstance(got, LeaseHolder) and got.owner == "elsewhere:1"
        conn.rollback()
        with pytest.raises(LeaseHeldError, match="elsewhere:1"):
            wait_for_lease(conn, mine, StopFlag(), log, wait=False)
        begun = time.monotonic()
        t2 = wait_for_lease(conn, mine, StopFlag(), log, wait=True)
        assert 0.5 < time.monotonic() - begun < 5
        assert t2 == t1 + 1
        with pytest.raises(FencedError):
            theirs.save(conn, PgLsn(5), "1", None, t1)
        conn.rollback()
        assert not theirs.renew(conn, t1)
        assert mine.renew(conn, t2)
        conn.commit()
        # a stop request (SIGTERM) ends a standby's wait
        theirs.acquire(conn, "elsewhere:1", 60)
        conn.commit()
        stop = StopFlag()
        stop.request()
        with pytest.raises(ShutdownRequested):
            wait_for_lease(conn, mine, stop, log, wait=True)


def test_dead_holder_on_this_host_is_not_waited_for(engine: sa.Engine) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store = CheckpointStore("p2")
    with engine.connect() as conn:
        store.acquire(conn, f"{socket.gethostname()}:{dead.pid}", 60)
        conn.commit()
        assert holder_gone(f"{socket.gethostname()}:{dead.pid}")
        assert not holder_gone(f"{socket.gethostname()}:1")  # alive (init)
        assert not holder_gone(f"otherhost:{dead.pid}")
        got = store.try_acquire(conn, "here:9", 10, holder_gone)
        assert isinstance(got, int)
        conn.commit()
        store.release(conn, got)
        conn.commit()
        # released: free for anybody at once
        assert isinstance(store.try_acquire(conn, "otherhost:7", 10), int)
        conn.commit()


def test_daemon_start_spares_tool_sessions(
    tmp_path: Path, source_dsn: str, target_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A starting daemon ends its earlier owner's sessions idle in a transaction (they hold
    row locks), never an operator's verify or dlq retry between two of its statements."""
    sql(source_dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    s = Setup(tmp_path, source_dsn, target_dsn, {"public.t": None})
    s.drain()
    monkeypatch.setenv("SRC_DSN", source_dsn)
    monkeypatch.setenv("TGT_DSN", target_dsn)
    config = load_config(s.config)
    tool, owner = target_engine(config, s.pipeline), target_engine(config, s.pipeline, daemon=True)
    try:
        with tool.connect() as a, owner.connect() as b:
            assert (
                a.execute(sa.text("SELECT 1")).scalar() == b.execute(sa.text("SELECT 1")).scalar()
            )
            s.drain()  # its start-up ends the stalled owner session, not the tool's
            assert a.execute(sa.text("SELECT 2")).scalar() == 2
            with pytest.raises(sa.exc.DBAPIError):
                b.execute(sa.text("SELECT 2"))
    finally:
        tool.dispose()
        owner.dispose()
