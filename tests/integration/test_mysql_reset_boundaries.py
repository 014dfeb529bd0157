"""MariaDB offsets: reset / replay refuse positions inside a transaction; GTID resets work."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cdc_sync.records import BinlogPosition, Position
from tests.integration.routes import Route, execute, my_connect

pytestmark = pytest.mark.integration


def _checkpoint(dsn: str, pipeline: str) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT position FROM cdc_sync_checkpoints WHERE pipeline = %s", (pipeline,)
        ).fetchone()
    assert row is not None
    return str(row[0])


def _ids(dsn: str) -> list[tuple[int, str]]:
    with psycopg.connect(dsn) as conn:
        return [(r[0], r[1]) for r in conn.execute("SELECT id, v FROM public.t ORDER BY id")]


def _audited(dsn: str, pipeline: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT pk FROM cdc_sync_audit WHERE pipeline = %s AND op = 'insert' ORDER BY id",
            (pipeline,),
        ).fetchall()
    return [json.dumps(json.loads(r[0]) if isinstance(r[0], str) else r[0]) for r in rows]


def _events(dsn: str) -> tuple[str, list[tuple[Any, ...]]]:
    conn = my_connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW MASTER STATUS")
            row = cur.fetchone()
            assert row is not None
            cur.execute(f"SHOW BINLOG EVENTS IN '{row[0]}'")
            return str(row[0]), list(cur.fetchall())
    finally:
        conn.close()


def _gtid(dsn: str, sql: str) -> str:
    conn = my_connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            cur.execute("SELECT @@last_gtid")
            row = cur.fetchone()
            assert row is not None
            return str(row[0])
    finally:
        conn.close()


def _route(tmp_path: Path, source: str, target: str) -> Route:
    db = source.rsplit("/", 1)[-1]
    execute(source, "CREATE TABLE t (id int PRIMARY KEY, v varchar(20))")
    execute(source, "INSERT INTO t VALUES (1, 'one')")
    r = Route(tmp_path, source, target, {f"{db}.t": "public.t"})
    r.drain()
    return r


def test_reset_and_replay_refuse_a_position_inside_a_transaction(
    tmp_path: Path, my_source_dsn: str, target_dsn: str
) -> None:
    r = _route(tmp_path, my_source_dsn, target_dsn)
    execute(my_source_dsn, "INSERT INTO t VALUES (2, 'two')", "INSERT INTO t VALUES (3, 'three')")
    before = _checkpoint(target_dsn, r.pipeline)
    file, events = _events(my_source_dsn)
    # The shared server's binlog also holds earlier tests' `t` tables: this test's statement
    # is the one whose next Table_map names this database (a match in another database put
    # the reset position before id 1 in some full runs, and id 1 was re-applied).
    mine = f"({my_source_dsn.rsplit('/', 1)[-1]}.t)"
    at = next(
        i
        for i, e in enumerate(events)
        if str(e[5]).startswith("INSERT INTO t VALUES (2")
        and any(mine in str(x[5]) for x in events[i : i + 3])
    )
    rows_event = next(e for e in events[at:] if str(e[2]).startswith("Write_rows"))
    begin = [e for e in events[:at] if e[2] == "Gtid"][-1]
    after = next(e for e in events[at:] if e[2] == "Gtid")  # id 3's transaction

    # Inside id 2's transaction: was accepted, and id 2 never reached the target.
    for args in (("--dry-run",), ("--yes",)):
        res = r.cli("offsets", "reset", "-p", r.pipeline, "--to", f"{file}:{rows_event[1]}", *args)
        assert res.returncode == 1, res.stdout
        assert "is inside a transaction (a Write_rows" in res.stderr
        assert f"the next transaction starts at {file}:{after[1]}" in res.stderr
    # Not the start of an event at all: was accepted, then the run said "binlogs purged".
    res = r.cli("offsets", "reset", "-p", r.pipeline, "--to", f"{file}:{int(begin[1]) + 7}")
    assert res.returncode == 1
    assert "is not the start of an event" in res.stderr
    end = f"{file}:{events[-1][4]}"
    res = r.cli("replay", "-p", r.pipeline, "--from", f"{file}:{rows_event[1]}", "--to", end)
    assert res.returncode == 1
    assert "--from" in res.stderr and "inside a transaction" in res.stderr
    assert _checkpoint(target_dsn, r.pipeline) == before

    # A transaction's start is a boundary: resetting there re-applies id 2 and id 3 once.
    res = r.cli("offsets", "reset", "-p", r.pipeline, "--to", f"{file}:{begin[1]}", "--yes")
    assert res.returncode == 0, res.stderr
    r.drain()
    assert _ids(target_dsn) == [(1, "one"), (2, "two"), (3, "three")]
    assert _audited(target_dsn, r.pipeline) == ['{"id": 2}', '{"id": 3}']  # id 1: snapshot

    # An audit row's source_position names its transaction: `replay --to` it includes that
    # transaction (it was left out: the position is its commit event's, before its end).
    with psycopg.connect(target_dsn) as conn:
        row = conn.execute(
            "SELECT source_position FROM cdc_sync_audit WHERE op = 'insert' AND pk LIKE '%2%'"
        ).fetchone()
        assert row is not None
        conn.execute("DELETE FROM public.t WHERE id > 1")
    res = r.cli("replay", "-p", r.pipeline, "--from", before, "--to", str(row[0]))
    assert res.returncode == 0, res.stderr
    assert "replayed 1 row(s) in 1 transaction(s)" in res.stdout
    assert _ids(target_dsn) == [(1, "one"), (2, "two")]


def test_reset_to_a_gtid_and_to_earliest_keep_gtid_positions(
    tmp_path: Path, my_source_dsn: str, target_dsn: str
) -> None:
    r = _route(tmp_path, my_source_dsn, target_dsn)
    gtids = [_gtid(my_source_dsn, f"INSERT INTO t VALUES ({i}, 'v{i}')") for i in (2, 3, 4)]
    r.drain()
    head = Position.parse(_checkpoint(target_dsn, r.pipeline))

    # Was "GTID set 0-1-N was not found in the source's binlogs" for every GTID.
    res = r.cli("offsets", "reset", "-p", r.pipeline, "--to", gtids[0], "--dry-run")
    assert res.returncode == 0, res.stderr
    to = Position.parse(res.stdout.strip().rsplit(" -> ", 1)[1])
    assert isinstance(to, BinlogPosition) and isinstance(head, BinlogPosition)
    assert to.gtid == gtids[0] and to < head

    # Back to the oldest binlog (a position with no GTID state): the checkpoints written
    # from there on carry GTIDs again, so a later GTID reset finds them.
    execute(my_source_dsn, "DELETE FROM t WHERE id = 4")
    res = r.cli("offsets", "reset", "-p", r.pipeline, "--to", "earliest", "--yes")
    assert res.returncode == 0, res.stderr
    r.drain()
    assert _ids(target_dsn) == [(1, "one"), (2, "v2"), (3, "v3")]
    now = Position.parse(_checkpoint(target_dsn, r.pipeline))
    assert isinstance(now, BinlogPosition) and now.gtid, now

    # Resume after id 3's transaction: ids 4's insert and delete are applied again.
    res = r.cli("offsets", "reset", "-p", r.pipeline, "--to", gtids[1], "--yes")
    assert res.returncode == 0, res.stderr
    r.drain()
    assert _ids(target_dsn) == [(1, "one"), (2, "v2"), (3, "v3")]
    audited = _audited(target_dsn, r.pipeline)
    assert audited.count('{"id": 4}') == 3 and audited.count('{"id": 3}') == 2
