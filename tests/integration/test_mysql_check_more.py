"""``cdc-sync check`` on MariaDB: exact fixes for SELECT, server_id and row settings (#3)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pymysql
import pytest
from pymysqlreplication import BinLogStreamReader

from cdc_sync.testing.myserver import MyServer, running_mariadb
from tests.integration.routes import Route, execute, my_connect

pytestmark = pytest.mark.integration

TABLE = "CREATE TABLE calls (id int PRIMARY KEY, outcome text)"


def _as(dsn: str, user: str) -> str:
    """The same database, connecting as ``user`` (created without a password)."""
    return re.sub(r"//[^@/]*@", f"//{user}@", dsn, count=1)


def _problems(r: Route) -> tuple[int, list[str]]:
    """``cdc-sync check``'s exit code and its problems, one string each."""
    res = r.cli("check")
    lines = [ln.strip()[2:] for ln in res.stdout.splitlines() if ln.strip().startswith("- ")]
    return res.returncode, lines


def _connect(**kw: Any) -> pymysql.connections.Connection:
    if "db" in kw:  # the library still passes PyMySQL's deprecated name (a warning)
        kw["database"] = kw.pop("db")
    return pymysql.connect(**kw)


def _replica_ids(dsn: str) -> list[int]:
    with my_connect(dsn) as c, c.cursor() as cur:
        cur.execute("SHOW SLAVE HOSTS")
        return [int(row[0]) for row in cur.fetchall()]


@contextmanager
def _replica(srv: MyServer, server_id: int) -> Iterator[None]:
    """A binlog client registered with ``server_id`` (COM_REGISTER_SLAVE), as a replica is,
    reading from the first binlog (so that the first event is there at once)."""
    with srv.connect() as c, c.cursor() as cur:
        cur.execute("SHOW BINARY LOGS")
        first = str(cur.fetchone()[0])
    stream = BinLogStreamReader(
        connection_settings={"host": "127.0.0.1", "port": srv.port, "user": "root", "password": ""},
        server_id=server_id,
        report_slave="replica-of-test",
        log_file=first,
        log_pos=4,
        blocking=True,
        pymysql_wrapper=_connect,
    )
    try:
        stream.fetchone()  # connects, registers and starts the dump
        yield
    finally:
        with srv.connect() as c, c.cursor() as cur:  # ends the dump thread and registration
            cur.execute(f"KILL {stream._stream_connection.thread_id()}")
        stream.close()


def _without_select(tmp: Path, dsn: str, target_dsn: str) -> tuple[Route, str, str]:
    """A route as a user with the binlog privileges and SELECT on ``agents`` but not ``calls``."""
    db = dsn.rsplit("/", 1)[-1]
    user = f"cdc_{db}"
    execute(
        dsn,
        TABLE,
        "CREATE TABLE agents (id int PRIMARY KEY, name text)",
        f"CREATE USER '{user}'@'%'",
        f"GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '{user}'@'%'",
        f"GRANT SELECT ON `{db}`.`agents` TO '{user}'@'%'",
    )
    tables: dict[str, str | None] = {f"{db}.calls": "public.calls", f"{db}.agents": "public.agents"}
    return Route(tmp, _as(dsn, user), target_dsn, tables), db, user


def test_missing_select_names_the_table_and_the_grant(
    tmp_path: Path, my_source_dsn: str, target_dsn: str
) -> None:
    r, db, user = _without_select(tmp_path, my_source_dsn, target_dsn)
    code, problems = _problems(r)
    grant = (
        f"source: no SELECT on table {db}.calls; fix: GRANT SELECT ON `{db}`.`calls` "
        f"TO '{user}'@'%';"
    )
    assert code != 0 and grant in problems, problems
    assert not any("agents" in p for p in problems), problems  # granted: no complaint
    # The printed statement, naming the user, is the whole fix.
    fix = grant.split("; fix: ", 1)[1]
    execute(my_source_dsn, fix.rstrip(";"))
    code, problems = _problems(r)
    assert (code, problems) == (0, []), problems


def test_missing_select_is_not_reported_as_a_missing_table(
    tmp_path: Path, my_source_dsn: str, target_dsn: str
) -> None:
    r, _, _ = _without_select(tmp_path, my_source_dsn, target_dsn)
    _, problems = _problems(r)
    assert not any("does not exist" in p for p in problems), problems


def test_server_id_of_a_connected_replica(
    tmp_path: Path, my_source_server: MyServer, my_source_dsn: str, target_dsn: str
) -> None:
    db = my_source_dsn.rsplit("/", 1)[-1]
    execute(my_source_dsn, TABLE)
    server_id = 40000 + int(db.rsplit("_", 1)[-1])
    r = Route(
        tmp_path, my_source_dsn, target_dsn, {f"{db}.calls": "public.calls"},
        source_extra=f", server_id: {server_id}",
    )  # fmt: skip
    with _replica(my_source_server, server_id):
        listed = _replica_ids(my_source_dsn)
        taken = _problems(r)
    for _ in range(50):  # the killed dump thread unregisters as it ends
        if server_id not in _replica_ids(my_source_dsn):
            break
        time.sleep(0.1)
    free = _problems(r)
    assert server_id in listed, listed  # the precondition: the server lists the replica
    assert taken == (
        1,
        [
            f"source: server_id {server_id} is already used by a replica of the source "
            "(SHOW SLAVE HOSTS); choose another value"
        ],
    ), taken
    assert free == (0, []), free  # gone with the replica's connection


def test_row_image_and_metadata_print_the_exact_fix(tmp_path: Path, target_dsn: str) -> None:
    extra = {"binlog_row_image": "MINIMAL", "binlog_row_metadata": "NO_LOG"}
    with running_mariadb(extra=extra) as srv:
        dsn = srv.create_database("rows")
        execute(dsn, TABLE)
        r = Route(tmp_path, dsn, target_dsn, {"rows.calls": "public.calls"})
        code, problems = _problems(r)
        assert code != 0
        assert problems == [
            "source: binlog_row_image is MINIMAL, must be FULL; fix: SET GLOBAL "
            "binlog_row_image = 'FULL'; and in my.cnf binlog_row_image = FULL",
            "source: binlog_row_metadata is NO_LOG, must be FULL; fix: SET GLOBAL "
            "binlog_row_metadata = 'FULL'; and in my.cnf binlog_row_metadata = FULL",
        ], problems
        # The SET GLOBAL halves of the printed fixes are enough for check to pass.
        execute(dsn, *(p.split("fix: ", 1)[1].split(";", 1)[0] for p in problems))
        code, problems = _problems(r)
        assert (code, problems) == (0, []), problems
