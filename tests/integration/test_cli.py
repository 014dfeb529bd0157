"""The CLI as a DBA meets it: exit codes, messages, signals, offsets."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests.integration.harness import Setup, kill, rows_as_text, slot_names, sql, wait_until

pytestmark = pytest.mark.integration


def test_bad_config_exits_2_with_one_line_per_problem(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "sources: {crm: {type: postgres, dsn: 'postgresql://u:topsecret@h/db'}}\n"
        "targets: {hub: {type: postgres, dsn: '${CDC_TEST_UNSET}'}}\n"
        "pipelines: {p: {source: crmm, target: hub, tables: {public.t: {}}}}\n"
    )
    res = subprocess.run(
        [sys.executable, "-m", "cdc_sync", "check", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert "error: pipelines.p.source: no source named 'crmm'" in lines
    assert "error: targets.hub.dsn: environment variable CDC_TEST_UNSET is not set" in lines
    assert any(line.startswith("error: sources.crm.dsn: a literal password") for line in lines)
    assert "topsecret" not in res.stderr + res.stdout


def test_config_from_environment_variable(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "cdc_sync", "offsets", "show"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"CDC_SYNC_CONFIG": str(tmp_path / "missing.yaml"), "PATH": "/usr/bin:/bin"},
    )
    assert res.returncode == 2
    assert "missing.yaml: cannot read config" in res.stderr


def test_table_without_key_is_refused_by_check_and_run(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    sql(source_dsn, "CREATE TABLE nokey (a int, b text)", "CREATE TABLE ok (id int PRIMARY KEY)")
    s = Setup(tmp_path, source_dsn, target_dsn, {"public.nokey": None, "public.ok": None})
    res = s.cli("check")
    assert res.returncode == 1
    assert "public.nokey" in res.stdout
    res = s.cli("run", "--until-caught-up")
    assert res.returncode == 1
    assert "public.nokey" in res.stderr


def test_missing_table_is_refused(tmp_path: Path, source_dsn: str, target_dsn: str) -> None:
    s = Setup(tmp_path, source_dsn, target_dsn, {"public.nothere": None})
    res = s.cli("run", "--until-caught-up")
    assert res.returncode == 1
    assert "public.nothere" in res.stderr


def test_sigterm_drains_and_exits_zero(tmp_path: Path, source_dsn: str, target_dsn: str) -> None:
    sql(source_dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    s = Setup(tmp_path, source_dsn, target_dsn, {"public.t": None})
    proc = s.start()
    try:
        wait_until(lambda: f"cdc_sync_{s.pipeline}" in slot_names(source_dsn), timeout=60)
        sql(source_dsn, "INSERT INTO t SELECT g, 'x' FROM generate_series(1, 1000) g")
        wait_until(
            lambda: len(rows_as_text(target_dsn, "t")) == 1000 if _has(target_dsn, "t") else False,
            timeout=60,
        )
    finally:
        t0 = time.monotonic()
        code = kill(proc, signal.SIGTERM)
        took = time.monotonic() - t0
    assert code == 0
    assert took < 10
    res = s.cli("offsets", "show", "--json")
    assert res.returncode == 0, res.stderr
    (info,) = json.loads(res.stdout)
    assert info["pipeline"] == s.pipeline
    assert info["position"].startswith("pg:")
    assert info["lag_bytes"] is not None
    assert info["last_applied_at"]


def _has(dsn: str, table: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone() == (True,)
