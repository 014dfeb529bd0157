"""What the daemon cannot safely resume from, it refuses with the message that says what to
do: a slot dropped while stopped, the binlog purged past the checkpoint, and a source
replaced by another server (new system identifier / server_uuid) under the same DSN."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import psycopg
import pymysql
import pytest

from cdc_sync.testing.myserver import MyServer, running_mariadb
from cdc_sync.testing.pgserver import PgServer, running_pg
from tests.conftest import Report
from tests.integration.harness import Setup, rows_as_text, slot_names, sql
from tests.integration.routes import Route, execute, fetch
from tests.integration.test_mysql_positions import _purge_to_newest

pytestmark = [pytest.mark.integration]

DDL = "CREATE TABLE t (id int PRIMARY KEY, v text)"
S = TypeVar("S", PgServer, MyServer)


@contextlib.contextmanager
def _server_on(server: S) -> Iterator[S]:
    """A freshly initialised server on the port the first one had (same DSN)."""
    try:
        server.init()
        server.start()
        deadline = time.monotonic() + 30
        while True:
            try:
                if isinstance(server, PgServer):
                    psycopg.connect(server.dsn(), connect_timeout=2).close()
                else:
                    server.connect().close()
                break
            except (psycopg.OperationalError, pymysql.err.OperationalError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield server
    finally:
        server.destroy()


def _line(text: str) -> str:
    """The one-line error the CLI printed (the last ``error:`` line)."""
    errors = [ln for ln in text.splitlines() if ln.startswith("error:")]
    return (errors[-1] if errors else text.strip().splitlines()[-1])[:160]


def test_slot_dropped_while_stopped(
    tmp_path: Path, source_dsn: str, target_dsn: str, report: Report
) -> None:
    sql(source_dsn, DDL)
    s = Setup(tmp_path, source_dsn, target_dsn, {"public.t": None})
    s.drain()
    sql(source_dsn, "INSERT INTO t VALUES (1, 'a')")
    s.drain()
    sql(source_dsn, "INSERT INTO t VALUES (2, 'b')")  # unread when the slot goes
    sql(source_dsn, f"SELECT pg_drop_replication_slot('cdc_sync_{s.pipeline}')")
    res = s.cli("run", "--until-caught-up")
    report(rows=1, message=f"exit {res.returncode}: {_line(res.stderr)}")
    assert res.returncode == 1 and "does not exist" in res.stderr
    assert "snapshot" in res.stderr, "the message says what to do"
    assert f"cdc_sync_{s.pipeline}" not in slot_names(source_dsn)


def test_pg_source_replaced_by_another_server(
    tmp_path: Path, target_dsn: str, report: Report
) -> None:
    """The same DSN (host, port, database) now reaches a freshly initialised server."""
    with running_pg() as first:
        src = first.create_database("crm")
        sql(src, DDL, "INSERT INTO t VALUES (1, 'a')")
        s = Setup(tmp_path, src, target_dsn, {"public.t": None}, pipeline="replaced_pg")
        s.drain()
        sql(src, "INSERT INTO t VALUES (2, 'b')")
        s.drain()
        port = first.port
    with _server_on(PgServer(port=port)) as second:
        again = second.create_database("crm")
        assert again == src
        sql(again, DDL, "INSERT INTO t VALUES (1, 'a')")
        res = s.cli("run", "--until-caught-up")
    report(rows=2, message=f"exit {res.returncode}: {_line(res.stderr)}")
    assert res.returncode == 1, res.stderr
    assert "snapshot" in res.stderr and "source server changed" in res.stderr, res.stderr
    assert rows_as_text(target_dsn, "t") == ["(1,a)", "(2,b)"]


def test_binlog_purged_past_the_checkpoint(
    tmp_path: Path, my_private_server: MyServer, target_dsn: str, report: Report
) -> None:
    dsn = my_private_server.create_database("purged")
    execute(dsn, DDL)
    r = Route(tmp_path, dsn, target_dsn, {"purged.t": "public.t"}, pipeline="purged")
    r.drain()
    execute(dsn, "INSERT INTO t VALUES (1, 'a')")
    r.drain()
    execute(dsn, "INSERT INTO t VALUES (2, 'lost?')")
    _purge_to_newest(my_private_server)
    res = r.cli("run", "--until-caught-up")
    report(rows=1, message=f"exit {res.returncode}: {_line(res.stderr)}")
    assert res.returncode == 1 and "snapshot" in res.stderr, res.stderr[-2000:]
    assert fetch(target_dsn, "public.t") == [(1, "a")]


def test_mariadb_source_replaced_by_another_server(
    tmp_path: Path, target_dsn: str, report: Report
) -> None:
    """MariaDB has no server UUID: a replaced server is told by the checkpoint's GTIDs
    being past its binlog (a rebuilt server that wrote exactly as many transactions is
    not told apart; docs/operations.md)."""
    with running_mariadb() as first:
        dsn = first.create_database("dialer")
        execute(dsn, DDL, "INSERT INTO t VALUES (1, 'a')")
        r = Route(tmp_path, dsn, target_dsn, {"dialer.t": "public.t"}, pipeline="replaced_my")
        r.drain()
        for i in range(2, 12):
            execute(dsn, f"INSERT INTO t VALUES ({i}, 'x')")
        r.drain()
        port = first.port
    with _server_on(MyServer(port=port)) as second:
        again = second.create_database("dialer")
        assert again == dsn
        execute(again, DDL, "INSERT INTO t VALUES (5, 'new')")
        res = r.cli("run", "--until-caught-up")
    report(rows=11, message=f"exit {res.returncode}: {_line(res.stderr)}")
    assert res.returncode == 1, res.stderr
    assert "another server" in res.stderr and "snapshot" in res.stderr, res.stderr
    assert len(fetch(target_dsn, "public.t")) == 11
