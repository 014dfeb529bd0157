"""A DBA's open transaction holds a target row the daemon must write: the wait is reported
with the blocking session, a stop cancels it (exit 0 within seconds, not a SIGKILL later),
and the change arrives on the next run: nothing lost, nothing applied twice."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.harness import wait_until
from tests.integration.routes import Route, execute, fetch, my_connect

pytestmark = pytest.mark.integration


def events(log: Path, name: str) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text().splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            out.append(json.loads(line))
    return out


def wait_for(log: Path, name: str, timeout: float = 40) -> list[dict[str, Any]]:
    wait_until(lambda: events(log, name), timeout=timeout, every=0.2)
    return events(log, name)


@pytest.mark.parametrize("target", ["postgres", "mariadb"])
def test_blocked_write_is_reported_and_a_stop_cancels_it(
    target: str, source_dsn: str, target_dsn: str, my_target_dsn: str, tmp_path: Path
) -> None:
    tgt = target_dsn if target == "postgres" else my_target_dsn
    table = "public.people" if target == "postgres" else f"{my_target_dsn.rsplit('/', 1)[1]}.people"
    execute(source_dsn, "CREATE TABLE people (id int PRIMARY KEY, name text NOT NULL)")
    execute(source_dsn, "INSERT INTO people VALUES (1, 'a'), (2, 'b')")
    route = Route(tmp_path, source_dsn, tgt, {"public.people": table})
    assert route.cli("snapshot").returncode == 0

    # The DBA's session: a row lock held in an open transaction.
    if target == "postgres":
        dba: Any = psycopg.connect(tgt)
        dba.execute("SELECT * FROM people WHERE id = 1 FOR UPDATE")
        dba_pid = dba.info.backend_pid
    else:
        dba = my_connect(tgt)
        dba.autocommit(False)
        with dba.cursor() as cur:
            cur.execute("SELECT * FROM people WHERE id = 1 FOR UPDATE")
        dba_pid = dba.thread_id()
    try:
        execute(source_dsn, "UPDATE people SET name = 'a2' WHERE id = 1")
        execute(source_dsn, "INSERT INTO people VALUES (3, 'c')")
        daemon = route.start()
        try:
            waiting = wait_for(route.log, "target_write_waiting")[0]
            assert waiting["seconds"] >= 10
            if target == "postgres":
                assert [b["pid"] for b in waiting["blocked_by"]] == [dba_pid]
                assert waiting["blocked_by"][0]["state"] == "idle in transaction"
            assert "a2" not in route.log.read_text()  # no row value in any line
            t0 = time.monotonic()
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(30)
            took = time.monotonic() - t0
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
        assert code == 0
        assert took < 15, took  # the 5 s grace, then the cancel
        assert wait_for(route.log, "stop_cancelled_target_statement")
    finally:
        dba.rollback()
        dba.close()
    assert dba_pid
    # The cut batch was rolled back with its checkpoint: the next run applies it, once.
    route.drain()
    assert fetch(tgt, "people", "id, name", order_by="id") == fetch(
        source_dsn, "people", "id, name", order_by="id"
    )
    audit = fetch(tgt, "cdc_sync_audit", "op, pk", order_by="id")
    assert [a for a in audit if a[0] != "snapshot"] == [
        ("update", '{"id":1}'),
        ("insert", '{"id":3}'),
    ]


def test_an_earlier_owner_idle_in_its_transaction_is_ended(
    source_dsn: str, target_dsn: str, tmp_path: Path
) -> None:
    """A session of this pipeline older than the running daemon (an earlier owner, paused
    mid-statement when the new one started, idle in its transaction only later) blocks a
    write: it is ended, as a start ends those already idle. A DBA's session never is (above)."""
    execute(source_dsn, "CREATE TABLE people (id int PRIMARY KEY, name text NOT NULL)")
    execute(source_dsn, "INSERT INTO people VALUES (1, 'a'), (2, 'b')")
    route = Route(tmp_path, source_dsn, target_dsn, {"public.people": None})
    assert route.cli("snapshot").returncode == 0
    old = psycopg.connect(target_dsn, application_name=f"cdc-sync:{route.pipeline}")
    old.execute("SELECT 1")
    old.rollback()  # idle, not in a transaction, when the daemon starts
    daemon = route.start()
    try:
        wait_for(route.log, "pipeline_started")
        old.execute("SELECT * FROM people WHERE id = 1 FOR UPDATE")
        old_pid = old.info.backend_pid
        execute(source_dsn, "UPDATE people SET name = 'a2' WHERE id = 1")
        # Blocked until the watch's first look (>= 10 s in) ends the earlier owner.
        wait_until(
            lambda: fetch(target_dsn, "people", "name", order_by="id") == [("a2",), ("b",)],
            timeout=40,
            every=0.2,
        )
        ended = [e["pid"] for e in events(route.log, "stalled_writer_ended")]
        assert ended == [old_pid]
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        old.close()
    assert fetch(target_dsn, "people", order_by="id") == fetch(source_dsn, "people", order_by="id")
