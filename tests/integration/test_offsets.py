"""``offsets reset`` and ``replay`` through the CLI, on PostgreSQL and MariaDB sources."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cdc_sync.records import Position
from tests.integration.harness import Setup, kill, sql, wait_until
from tests.integration.routes import Route, execute

pytestmark = pytest.mark.integration


def _checkpoint(dsn: str, pipeline: str) -> tuple[str | None, int]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT position, token FROM cdc_sync_checkpoints WHERE pipeline = %s", (pipeline,)
        ).fetchone()
    assert row is not None
    return row[0], int(row[1])


def _leased(dsn: str, pipeline: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT lease_expires_at > now() FROM cdc_sync_checkpoints WHERE pipeline = %s",
            (pipeline,),
        ).fetchone()
    return bool(row and row[0])


def _audit(dsn: str, pipeline: str, op: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT outcome, source_position, detail, pk FROM cdc_sync_audit "
            "WHERE pipeline = %s AND op = %s ORDER BY id",
            (pipeline, op),
        ).fetchall()
    return [{"outcome": o, "position": p, "detail": d, "pk": k} for o, p, d, k in rows]


def _replayed(dsn: str, pipeline: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT op, pk FROM cdc_sync_audit WHERE pipeline = %s AND outcome = 'replay' "
            "AND op <> 'replay' ORDER BY id",
            (pipeline,),
        ).fetchall()
    return [{"op": o, "pk": json.loads(k) if isinstance(k, str) else k} for o, k in rows]


def _ids(dsn: str, table: str) -> list[tuple[int, str]]:
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(f"SELECT id, v FROM {table} ORDER BY id")
        return [(r[0], r[1]) for r in cur]


def _slot(dsn: str) -> tuple[str, str]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT confirmed_flush_lsn::text, pg_current_wal_lsn()::text "
            "FROM pg_replication_slots WHERE database = current_database()"
        ).fetchone()
    assert row is not None
    return row[0], row[1]


# -- PostgreSQL source -----------------------------------------------------------------------


def test_pg_reset_dry_run_earliest_latest_and_refusals(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    sql(source_dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)", "INSERT INTO t VALUES (1, 'a')")
    s = Setup(tmp_path, source_dsn, target_dsn, {"public.t": None})
    s.drain()
    before = _checkpoint(target_dsn, s.pipeline)
    sql(source_dsn, "INSERT INTO t VALUES (2, 'b')")

    res = s.cli("offsets", "reset", "-p", s.pipeline, "--to", "latest", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert before[0] is not None
    assert res.stdout.startswith("dry run: ") and before[0] in res.stdout
    assert _checkpoint(target_dsn, s.pipeline) == before
    assert _audit(target_dsn, s.pipeline, "offsets_reset") == []

    # Earliest is the slot's confirmed point: the pending change is applied after it.
    res = s.cli("offsets", "reset", "-p", s.pipeline, "--to", "earliest", "--yes")
    assert res.returncode == 0, res.stderr
    confirmed, _ = _slot(source_dsn)
    assert _checkpoint(target_dsn, s.pipeline)[0] == f"pg:{confirmed}"
    s.drain()
    assert _ids(target_dsn, "public.t") == [(1, "a"), (2, "b")]

    # Latest skips what happened until now, and advances the slot to release the WAL.
    sql(source_dsn, "INSERT INTO t VALUES (3, 'skipped')")
    res = s.cli("offsets", "reset", "-p", s.pipeline, "--to", "latest", "--yes")
    assert res.returncode == 0, res.stderr
    confirmed, _ = _slot(source_dsn)
    assert _checkpoint(target_dsn, s.pipeline)[0] == f"pg:{confirmed}"
    sql(source_dsn, "INSERT INTO t VALUES (4, 'd')")
    s.drain()
    assert _ids(target_dsn, "public.t") == [(1, "a"), (2, "b"), (4, "d")]

    resets = _audit(target_dsn, s.pipeline, "offsets_reset")
    assert [r["outcome"] for r in resets] == ["reset", "reset"]
    assert resets[0]["detail"]["from"] == before[0]
    assert resets[1]["detail"]["to"] == f"pg:{confirmed}"
    assert "@" in resets[1]["detail"]["by"]

    res = s.cli("offsets", "reset", "-p", s.pipeline, "--to", "0/1", "--yes")
    assert res.returncode == 1
    assert "cannot go backwards" in res.stderr and "earliest possible" in res.stderr
    res = s.cli("offsets", "reset", "-p", s.pipeline, "--to", "2024-01-01T00:00:00", "--yes")
    assert res.returncode == 1
    assert "WAL has no timestamp index" in res.stderr
    res = s.cli("offsets", "reset", "-p", s.pipeline, "--to", "nonsense", "--yes")
    assert res.returncode == 2
    assert "expected an LSN" in res.stderr


def test_reset_and_replay_refused_while_daemon_runs(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    sql(source_dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    s = Setup(tmp_path, source_dsn, target_dsn, {"public.t": None})
    s.drain()
    position, _ = _checkpoint(target_dsn, s.pipeline)
    proc = s.start()
    try:
        wait_until(lambda: _leased(target_dsn, s.pipeline), timeout=60)
        res = s.cli("offsets", "reset", "-p", s.pipeline, "--to", "latest", "--yes")
        assert res.returncode == 1
        assert "is running (lease held by" in res.stderr
        assert position is not None
        res = s.cli("replay", "-p", s.pipeline, "--from", position)
        assert res.returncode == 1
        assert "is running" in res.stderr
    finally:
        kill(proc)
    assert _audit(target_dsn, s.pipeline, "offsets_reset") == []


def test_pg_replay_reapplies_retained_changes_checkpoint_unchanged(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    sql(source_dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)", "INSERT INTO t VALUES (1, 'a')")
    s = Setup(tmp_path, source_dsn, target_dsn, {"public.t": None})
    s.drain()
    checkpoint = _checkpoint(target_dsn, s.pipeline)
    confirmed, _ = _slot(source_dsn)
    sql(source_dsn, "INSERT INTO t VALUES (2, 'b')", "UPDATE t SET v = 'c' WHERE id = 2")
    _, head = _slot(source_dsn)

    res = s.cli("replay", "-p", s.pipeline, "--from", confirmed, "--to", head)
    assert res.returncode == 0, res.stderr
    assert "replayed 2 row(s) in 2 transaction(s)" in res.stdout
    assert _ids(target_dsn, "public.t") == [(1, "a"), (2, "c")]
    assert _checkpoint(target_dsn, s.pipeline) == checkpoint

    # Peeking does not consume: the same range can be replayed again after tampering.
    sql(target_dsn, "DELETE FROM t WHERE id = 2")
    res = s.cli("replay", "-p", s.pipeline, "--from", confirmed, "--to", head, "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["rows"] == 2
    assert _ids(target_dsn, "public.t") == [(1, "a"), (2, "c")]
    assert _checkpoint(target_dsn, s.pipeline) == checkpoint
    assert [r["op"] for r in _replayed(target_dsn, s.pipeline)] == ["insert", "update"] * 2
    summary = _audit(target_dsn, s.pipeline, "replay")
    assert len(summary) == 2 and summary[0]["detail"]["from"] == f"pg:{confirmed}"

    res = s.cli("replay", "-p", s.pipeline, "--from", "0/1", "--to", head)
    assert res.returncode == 1
    assert "cannot rewind" in res.stderr

    s.drain()  # the daemon then applies the same changes again: same content
    assert _ids(target_dsn, "public.t") == [(1, "a"), (2, "c")]


# -- MariaDB source --------------------------------------------------------------------------


def _show(r: Route) -> dict[str, Any]:
    res = r.cli("offsets", "show", "--json")
    assert res.returncode == 0, res.stderr
    (info,) = json.loads(res.stdout)
    return dict(info)


def test_mysql_replay_reset_earliest_and_time(
    tmp_path: Path, my_source_dsn: str, target_dsn: str
) -> None:
    db = my_source_dsn.rsplit("/", 1)[-1]
    execute(my_source_dsn, "CREATE TABLE t (id int PRIMARY KEY, v varchar(20))")
    r = Route(tmp_path, my_source_dsn, target_dsn, {f"{db}.t": "public.t"})
    r.drain()
    p0 = _checkpoint(target_dsn, r.pipeline)[0]
    assert p0 is not None
    time.sleep(1.1)  # binlog timestamps have second precision
    t0 = datetime.now(UTC).replace(microsecond=0)
    time.sleep(1.1)
    execute(
        my_source_dsn,
        "INSERT INTO t VALUES (1, 'a'), (2, 'b')",
        "UPDATE t SET v = 'c' WHERE id = 2",
    )
    r.drain()
    p1 = _checkpoint(target_dsn, r.pipeline)
    assert _ids(target_dsn, "public.t") == [(1, "a"), (2, "c")]

    # Tamper, then replay the applied range: restored, audited, checkpoint untouched.
    sql(target_dsn, "DELETE FROM public.t WHERE id = 2", "UPDATE public.t SET v = 'x'")
    res = r.cli("replay", "-p", r.pipeline, "--from", p0)
    assert res.returncode == 0, res.stderr
    assert "replayed 3 row(s) in 2 transaction(s)" in res.stdout
    assert _ids(target_dsn, "public.t") == [(1, "a"), (2, "c")]
    assert _checkpoint(target_dsn, r.pipeline) == p1
    assert len(_replayed(target_dsn, r.pipeline)) == 3

    res = r.cli("replay", "-p", r.pipeline, "--from", "gone-bin.000001:4")
    assert res.returncode == 1
    assert "no longer retained" in res.stderr

    # A time resolves to the boundary before the first of our transactions at or after it.
    res = r.cli("offsets", "reset", "-p", r.pipeline, "--to", t0.isoformat(), "--dry-run")
    assert res.returncode == 0, res.stderr
    to = Position.parse(res.stdout.strip().rsplit(" -> ", 1)[1])
    assert p1[0] is not None
    assert Position.parse(p0) <= to < Position.parse(p1[0])

    # Back to the oldest binlog: everything since is applied again; the target converges.
    sql(target_dsn, "DELETE FROM public.t")
    res = r.cli("offsets", "reset", "-p", r.pipeline, "--to", "earliest", "--yes")
    assert res.returncode == 0, res.stderr
    earliest = _show(r)["position"]
    assert earliest.split("|")[0].endswith(":4")
    r.drain()
    assert _ids(target_dsn, "public.t") == [(1, "a"), (2, "c")]
    (reset,) = _audit(target_dsn, r.pipeline, "offsets_reset")
    assert reset["detail"]["from"] == p1[0] and reset["detail"]["to"] == earliest
