"""Target disk full: the target database lives on a small tmpfs tablespace that fills up
mid-stream. No checkpoint moves past what was committed, an alert goes out, and once there
is room again the daemon catches up with nothing lost or applied twice."""

from __future__ import annotations

import os
import pwd
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cdc_sync.testing.pgserver import PgServer
from tests.conftest import Report
from tests.integration.harness import Cli, audit_rows, kill, rows_as_text, sql, wait_until

pytestmark = [pytest.mark.integration]

CONFIG = """
sources:
  src: {{type: postgres, dsn: "${{SRC_DSN}}"}}
targets:
  tgt: {{type: postgres, dsn: "${{TGT_DSN}}"}}
pipelines:
  {pipeline}:
    source: src
    target: tgt
    audit: row
    snapshot: never
    batch: {{max_rows: 500, max_seconds: 0.1}}
    retry: {{initial_seconds: 0.1, max_seconds: 1}}
    tables:
      public.blobs: {{}}
alerts: {{command: "sh -c 'cat >> {alerts}'", after_attempts: 3, min_interval_seconds: 0}}
logging: {{level: INFO, format: json}}
"""
ROW = "INSERT INTO blobs SELECT g, (SELECT string_agg(md5(random()::text || x || g), '') FROM generate_series(1, 100) x) FROM generate_series(%s::int, %s::int) g"  # noqa: E501


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """An 8 MB tmpfs for the target's tablespace (needs root, as the sandbox and CI have);
    outside pytest's private temp dir, which the server's OS user cannot enter."""
    path = Path(tempfile.mkdtemp(prefix="cdc-sync-small-"))
    path.chmod(0o755)
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        path.rmdir()
        pytest.skip(f"cannot mount a small tmpfs here ({res.stderr.strip()}): see docs")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
        path.rmdir()


def _grow(path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,size=512m", str(path)], check=True)


def test_target_disk_full_then_room_again(
    tmp_path: Path,
    source_dsn: str,
    pg_private_server: PgServer,
    small_disk: Path,
    report: Report,
) -> None:
    os_user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    if os_user is not None:
        os.chown(small_disk, os_user.pw_uid, os_user.pw_gid)
    with psycopg.connect(pg_private_server.dsn(), autocommit=True) as c:
        c.execute(f"CREATE TABLESPACE small LOCATION '{small_disk}'")
        c.execute("CREATE DATABASE tgt_small TABLESPACE small")
    target = pg_private_server.dsn("tgt_small")
    sql(source_dsn, "CREATE TABLE blobs (id int PRIMARY KEY, payload text NOT NULL)")
    alerts = tmp_path / "alerts.jsonl"
    d = Cli()
    pipeline = "disk_" + source_dsn.rsplit("/", 1)[-1]
    d._configure(
        tmp_path, pipeline, CONFIG.format(pipeline=pipeline, alerts=alerts), source_dsn, target
    )
    d.drain()
    proc = d.start()
    try:
        with psycopg.connect(source_dsn, autocommit=True) as c:
            for lo in range(1, 6001, 500):  # ~19 MB of payload into an 8 MB disk
                c.execute(ROW, (lo, lo + 499))
        wait_until(lambda: "failing" in _alerts(alerts), timeout=120, every=0.5)
        log = d.log.read_text()
        assert "53100" in log or "No space left" in log, log[-3000:]
        stuck = _checkpointed(target, pipeline)
        held = len(rows_as_text(target, "blobs"))
        time.sleep(3)  # still full: nothing is committed, the checkpoint stays
        assert _checkpointed(target, pipeline) == stuck
        assert len(rows_as_text(target, "blobs")) == held
        _grow(small_disk)
        wait_until(lambda: len(rows_as_text(target, "blobs")) == 6000, timeout=180, every=1)
        wait_until(lambda: "recovered" in _alerts(alerts), timeout=60, every=0.5)
    finally:
        kill(proc, signal.SIGTERM)
    want, got = rows_as_text(source_dsn, "blobs"), rows_as_text(target, "blobs")
    audited = [r["pk"]["id"] for r in audit_rows(target, pipeline) if r["outcome"] == "applied"]
    lost = len(set(want) - set(got))
    dup = len(audited) - len(set(audited))
    report(
        rows=len(want),
        lost=lost,
        duplicated=dup,
        message=f"disk full at {held} rows (checkpoint held), alerts {_alerts(alerts)}, "
        "caught up after growing the disk",
    )
    assert held < 6000
    assert want == got
    assert sorted(audited) == list(range(1, 6001))


def _alerts(path: Path) -> list[str]:
    if not path.exists():
        return []
    # one JSON document per alert, concatenated by `cat >>`
    return re.findall(r'"kind":\s*"(\w+)"', path.read_text())


def _checkpointed(dsn: str, pipeline: str) -> str | None:
    with psycopg.connect(dsn) as c:
        row = c.execute(
            "SELECT position FROM cdc_sync_checkpoints WHERE pipeline = %s", (pipeline,)
        ).fetchone()
    return None if row is None else str(row[0])
