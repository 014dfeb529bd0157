"""The running daemon's /metrics, /healthz and /readyz over HTTP, and ``cdc-sync status``."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.harness import Setup, kill, log_tail, sql, wait_until

pytestmark = pytest.mark.integration


def start_daemon(s: Setup) -> subprocess.Popen[bytes]:
    return s.start()  # `run` starts the metrics endpoint itself (runtime/observers.py)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""  # not listening yet


def scrape(base: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    code, text = get(base + "/metrics")
    if code != 200:
        return {}
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def rows_applied(base: str, pipeline: str) -> dict[tuple[str, str], float]:
    out = {}
    for (name, labels), v in scrape(base).items():
        lab = dict(labels)
        if name == "cdc_sync_rows_applied_total" and lab["pipeline"] == pipeline:
            out[(lab["table"], lab["op"])] = v
    return out


def test_daemon_serves_metrics_health_and_status(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    sql(source_dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    s = Setup(tmp_path, source_dsn, target_dsn, {"public.t": "public.t_copy"})
    port = free_port()
    with s.config.open("a") as f:
        f.write(f"metrics: {{listen: 127.0.0.1:{port}, ready_max_lag_seconds: 60}}\n")
    base, p = f"http://127.0.0.1:{port}", s.pipeline
    proc = start_daemon(s)
    try:
        up = ("cdc_sync_pipeline_up", frozenset({("pipeline", p)}))
        seen = lambda: f"metrics: {scrape(base)}\ndaemon log:\n{log_tail(s.log)}"  # noqa: E731
        wait_until(lambda: scrape(base).get(up) == 1, timeout=60, why=seen)
        # "up" is set before the initial copy (of the empty table): rows written before that
        # copy's snapshot arrive through it, not as the streamed changes counted below.
        done = ("cdc_sync_snapshot_done", frozenset({("pipeline", p), ("table", "public.t")}))
        wait_until(lambda: scrape(base).get(done) == 1, timeout=60, why=seen)
        sql(
            source_dsn,
            "INSERT INTO t SELECT g, 'x' FROM generate_series(1, 50) g",
            "UPDATE t SET v = 'y' WHERE id <= 7",
            "DELETE FROM t WHERE id > 47",
        )
        want = {
            ("public.t_copy", "insert"): 50,
            ("public.t_copy", "update"): 7,
            ("public.t_copy", "delete"): 3,
        }
        wait_until(lambda: rows_applied(base, p) == want, timeout=60, why=seen)
        metrics = scrape(base)
        lag = metrics[("cdc_sync_lag_seconds", frozenset({("pipeline", p)}))]
        assert 0 <= lag < 60
        assert metrics[("cdc_sync_batches_total", frozenset({("pipeline", p)}))] >= 1
        # The probe reads the checkpoint and the source head soon after the start.
        lag_bytes = ("cdc_sync_lag_bytes", frozenset({("pipeline", p)}))
        wait_until(lambda: lag_bytes in scrape(base), timeout=30)
        code, body = get(base + "/healthz")
        assert code == 200, body
        assert json.loads(body)["pipelines"][p]["ok"] is True
        code, body = get(base + "/readyz")
        assert code == 200, body

        res = s.cli("status", "--json")
        assert res.returncode == 0, res.stderr
        (st,) = json.loads(res.stdout)
        assert st["pipeline"] == p and st["errors"] == []
        assert st["position"].startswith("pg:") and st["source_head"].startswith("pg:")
        assert st["lease_owner"] and st["lease_held"] is True
        assert st["dead_letters_open"] == 0 and st["last_verify"] is None
        assert st["last_applied_at"] is not None
        res = s.cli("status")
        assert res.returncode == 0, res.stderr
        assert f"pipeline {p}" in res.stdout
        assert "dead letters  0 open" in res.stdout
        assert "last verify   never" in res.stdout
    finally:
        assert kill(proc, signal.SIGTERM) == 0
    assert get(base + "/healthz")[0] == 0  # the listener went with the process


def test_status_reports_an_unreachable_source_and_exits_zero(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    sql(source_dsn, "CREATE TABLE t (id int PRIMARY KEY)", "INSERT INTO t VALUES (1)")
    s = Setup(tmp_path, source_dsn, target_dsn, {"public.t": None})
    s.drain()
    s.env["SRC_DSN"] = source_dsn.rsplit("/", 1)[0] + "/no_such_database"
    res = s.cli("status", "--json")
    assert res.returncode == 0, res.stderr
    (st,) = json.loads(res.stdout)
    # The source part is missing and said so; the target's part is still there.
    assert len(st["errors"]) == 1 and st.get("source_head") is None
    assert st["dead_letters_open"] == 0 and "lease_owner" in st
    res = s.cli("status")
    assert res.returncode == 0 and "error:" in res.stdout
