"""The daemon refuses to resume against another source server or a lost slot, and the
source watch reads retention without complaint on a healthy source."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from cdc_sync.config import load_config
from cdc_sync.runtime.source_watch import check_once
from tests.integration.harness import Setup, slot_names, sql

pytestmark = pytest.mark.integration

DDL = "CREATE TABLE t (id int PRIMARY KEY, v text)"


def _setup(tmp_path: Path, source_dsn: str, target_dsn: str) -> Setup:
    sql(source_dsn, DDL)
    s = Setup(tmp_path, source_dsn, target_dsn, {"public.t": None})
    s.drain()
    sql(source_dsn, "INSERT INTO t VALUES (1, 'a')")
    s.drain()
    return s


def test_another_source_server_is_refused(tmp_path: Path, source_dsn: str, target_dsn: str) -> None:
    s = _setup(tmp_path, source_dsn, target_dsn)
    with psycopg.connect(target_dsn, autocommit=True) as conn:
        (stored,) = conn.execute("SELECT source_id FROM cdc_sync_checkpoints").fetchone()  # type: ignore[misc]
        assert str(stored).startswith("postgres:")
        conn.execute("UPDATE cdc_sync_checkpoints SET source_id = 'postgres:1'")
    res = s.cli("run", "--until-caught-up")
    assert res.returncode == 1
    assert "postgres:1" in res.stderr and "snapshot" in res.stderr


def test_dropped_slot_is_refused_not_recreated(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    s = _setup(tmp_path, source_dsn, target_dsn)
    sql(source_dsn, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
        f"WHERE slot_name = 'cdc_sync_{s.pipeline}'")  # fmt: skip
    res = s.cli("run", "--until-caught-up")
    assert res.returncode == 1 and "does not exist" in res.stderr
    # refused before prepare: no fresh slot left behind holding WAL
    assert f"cdc_sync_{s.pipeline}" not in slot_names(source_dsn)


def test_source_watch_on_a_healthy_source(
    tmp_path: Path, source_dsn: str, target_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = _setup(tmp_path, source_dsn, target_dsn)
    for k, v in s.env.items():
        monkeypatch.setenv(k, v)
    config = load_config(str(s.config))
    assert check_once(config, s.pipeline) == []
