"""Around the lease and the exit: a lost lease is not "up", exits release it, batch times."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from cdc_sync.checkpoint.store import CheckpointStore
from tests.integration.harness import Setup, kill, sql, wait_until
from tests.integration.test_metrics import free_port, get, scrape

pytestmark = pytest.mark.integration


def with_metrics(s: Setup) -> str:
    """Serve the daemon's metrics on a free port; returns the base URL."""
    port = free_port()
    with s.config.open("a") as f:
        f.write(f"metrics: {{listen: 127.0.0.1:{port}, ready_max_lag_seconds: 60}}\n")
    return f"http://127.0.0.1:{port}"


def up(base: str, pipeline: str) -> float | None:
    return scrape(base).get(("cdc_sync_pipeline_up", frozenset({("pipeline", pipeline)})))


def readyz(base: str, pipeline: str) -> tuple[int, str | None]:
    code, body = get(base + "/readyz")
    state = json.loads(body)["pipelines"].get(pipeline, {}).get("state") if body else None
    return code, state


def lease_engine(s: Setup) -> sa.Engine:
    return sa.create_engine(s.target_dsn.replace("postgresql://", "postgresql+psycopg://"))


def log_events(s: Setup, event: str) -> list[dict[str, object]]:
    lines = s.log.read_text().splitlines()
    return [e for e in (json.loads(x) for x in lines if x.startswith("{")) if e["event"] == event]


def test_daemon_that_lost_its_lease_while_busy_is_not_up_nor_ready(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    """Another daemon takes the lease while this one applies a steady load (what a standby
    does once a paused daemon's lease expired, done here at once): /readyz 503 'standby' and
    pipeline_up 0 until it holds the lease again; its exit never frees the other's lease."""
    sql(source_dsn, "CREATE TABLE t (id int PRIMARY KEY, v int)")
    s = Setup(tmp_path, source_dsn, target_dsn, {"public.t": None})
    s.drain()
    base, p = with_metrics(s), s.pipeline
    proc = s.start()
    engine, store = lease_engine(s), CheckpointStore(p)
    loading = threading.Event()
    loading.set()

    def load() -> None:
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            i = 0
            while loading.is_set():
                i += 1
                conn.execute("INSERT INTO t VALUES (%s, 1)", (i,))
                time.sleep(0.005)

    loader = threading.Thread(target=load)
    try:
        wait_until(lambda: up(base, p) == 1 and readyz(base, p) == (200, "running"), timeout=60)
        loader.start()
        wait_until(lambda: log_events(s, "batch_applied"), timeout=30)
        with engine.connect() as conn:
            theirs = store.acquire(conn, "elsewhere:1", 120)
            conn.commit()
        wait_until(lambda: readyz(base, p) == (503, "standby") and up(base, p) == 0, timeout=20)
        wait_until(lambda: log_events(s, "lease_waiting"), timeout=20)
        assert log_events(s, "lease_lost_standing_by") or log_events(s, "lease_lost")
        time.sleep(2)  # and it stays so while it waits (healthy: it pings alive)
        assert readyz(base, p) == (503, "standby") and up(base, p) == 0
        assert get(base + "/healthz")[0] == 200
        with engine.connect() as conn:
            # the failed attempt released nothing of ours: fenced by its own token
            assert store.lease_holder(conn) == "elsewhere:1"
            store.release(conn, theirs)
            conn.commit()
        # free again: the daemon takes it back and streams
        wait_until(lambda: readyz(base, p) == (200, "running") and up(base, p) == 1, timeout=30)
        loading.clear()
        loader.join()
        count = "SELECT count(*) FROM t"
        with psycopg.connect(source_dsn) as src:
            want = src.execute(count).fetchone()

        def caught_up() -> bool:
            with psycopg.connect(target_dsn) as tgt:
                return tgt.execute(count).fetchone() == want

        wait_until(caught_up, timeout=30)
    finally:
        loading.clear()
        if loader.is_alive():
            loader.join()
        assert kill(proc, signal.SIGTERM) == 0, s.log.read_text()[-3000:]
        engine.dispose()


def test_permanent_error_exit_releases_the_lease(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    """on_error: stop ends the run with exit 1; recovery commands work at once after it."""
    sql(source_dsn, "CREATE TABLE t (id int PRIMARY KEY, v int)")
    s = Setup(tmp_path, source_dsn, target_dsn, {"public.t": None})
    s.config.write_text(
        s.config.read_text().replace("    target: tgt\n", "    target: tgt\n    on_error: stop\n")
    )
    s.drain()
    sql(target_dsn, "ALTER TABLE t ADD CONSTRAINT v_small CHECK (v < 100)")
    sql(source_dsn, "INSERT INTO t VALUES (1, 500)")
    res = s.cli("run", "--until-caught-up")
    ended = time.monotonic()
    assert res.returncode == 1, res.stderr[-3000:]
    assert "check constraint" in res.stderr, res.stderr[-3000:]
    engine = lease_engine(s)
    try:
        with engine.connect() as conn:
            assert CheckpointStore(s.pipeline).lease_holder(conn) is None
        reset = s.cli("offsets", "reset", "-p", s.pipeline, "--to", "latest", "--dry-run")
        assert reset.returncode == 0, reset.stderr
        assert time.monotonic() - ended < 10  # well before the lease would have expired
    finally:
        engine.dispose()


def test_batch_time_counts_from_the_first_change_not_from_idle(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    sql(source_dsn, "CREATE TABLE t (id int PRIMARY KEY, v int)")
    s = Setup(tmp_path, source_dsn, target_dsn, {"public.t": None})
    s.drain()
    base, p = with_metrics(s), s.pipeline
    proc = s.start()
    try:
        wait_until(lambda: up(base, p) == 1, timeout=60)
        time.sleep(6)  # idle
        sql(source_dsn, "INSERT INTO t VALUES (1, 1)")
        wait_until(lambda: log_events(s, "batch_applied"), timeout=30)
        (line,) = log_events(s, "batch_applied")
        assert line["rows"] == 1
        assert isinstance(line["batch_ms"], float) and line["batch_ms"] < 2000, line
        total = ("cdc_sync_batch_duration_seconds_sum", frozenset({("pipeline", p)}))
        assert scrape(base)[total] < 2.0
    finally:
        assert kill(proc, signal.SIGTERM) == 0, s.log.read_text()[-3000:]


def test_metrics_port_in_use_is_one_line_and_exit_1(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    sql(source_dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    s = Setup(tmp_path, source_dsn, target_dsn, {"public.t": None})
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with s.config.open("a") as f:
            f.write(f"metrics: {{listen: 127.0.0.1:{port}}}\n")
        res = subprocess.run(
            [sys.executable, "-m", "cdc_sync", "run", "-c", str(s.config)],
            env=s.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert res.returncode == 1
    assert res.stderr.splitlines() == [
        f"error: metrics.listen: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]
