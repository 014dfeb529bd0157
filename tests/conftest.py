"""Shared fixtures: throwaway PostgreSQL servers (session-wide) and a fresh database per test."""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from cdc_sync.testing.myserver import MyServer, running_mariadb
from cdc_sync.testing.pgserver import PgServer, running_pg

_counter = itertools.count()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long scenarios (marked ``faults_full``) run only when asked for, with -m faults_full or
    CDC_SYNC_FAULTS_FULL=1: the default run stays within CI's 20-minute budget."""
    asked = (
        "faults_full" in (config.getoption("-m") or "")
        or os.environ.get("CDC_SYNC_FAULTS_FULL") == "1"
    )
    if asked:
        return
    for item in items:
        if item.get_closest_marker("faults_full") is not None:
            item.add_marker(pytest.mark.skip(reason="long scenario: -m faults_full"))


def revived(server: PgServer | MyServer, role: str) -> PgServer | MyServer:
    """``server`` running: a session server that died (a crash, seen once in CI with no log
    left) is started again, so that one crash fails the test it hit, not every later test of
    that worker. Its log tail is kept in a file and shown as a warning in the summary."""
    if server.alive():
        return server
    said = server.revive()
    keep = Path(tempfile.gettempdir()) / "cdc-sync-crashed-servers"
    keep.mkdir(exist_ok=True)
    slug = role.lower().replace(" ", "-")
    path = keep / f"{slug}-{os.getpid()}-{time.strftime('%Y%m%dT%H%M%S')}.log"
    path.write_text(said)
    warnings.warn(
        f"the {role} server had died and was restarted; log kept in {path}:\n{said}",
        stacklevel=2,
    )
    return server


@pytest.fixture(scope="session")
def pg_source_server() -> Iterator[PgServer]:
    with running_pg() as server:
        yield server


@pytest.fixture(scope="session")
def pg_target_server() -> Iterator[PgServer]:
    with running_pg() as server:
        yield server


@pytest.fixture
def source_dsn(pg_source_server: PgServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database on the source server; its replication slots are dropped
    afterwards (the server has a fixed number of them, and each one holds WAL back)."""
    name = f"src_{next(_counter)}"
    yield revived(pg_source_server, "PostgreSQL source").create_database(name)
    drop_slots(pg_source_server, name)


def drop_slots(server: PgServer, database: str) -> None:
    """Drop every slot of ``database``, ending the walsenders of daemons a test left behind."""
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        for _ in range(50):
            rows = conn.execute(
                "SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = %s",
                (database,),
            ).fetchall()
            if not rows:
                return
            for slot, pid in rows:
                if pid is not None:
                    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                    continue
                with contextlib.suppress(
                    psycopg.errors.ObjectInUse, psycopg.errors.UndefinedObject
                ):
                    conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            time.sleep(0.1)


@pytest.fixture
def target_dsn(pg_target_server: PgServer) -> str:
    """A fresh, empty database on the target server."""
    return revived(pg_target_server, "PostgreSQL target").create_database(f"tgt_{next(_counter)}")


@pytest.fixture
def pg_private_server() -> Iterator[PgServer]:
    """A server of the test's own, for tests that restart or crash it."""
    with running_pg() as server:
        yield server


# -- MariaDB ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def my_source_server() -> Iterator[MyServer]:
    with running_mariadb() as server:
        yield server


@pytest.fixture(scope="session")
def my_target_server() -> Iterator[MyServer]:
    with running_mariadb() as server:
        yield server


@pytest.fixture
def my_source_dsn(my_source_server: MyServer) -> str:
    """A fresh, empty database on the MariaDB source server (mysql://root@…/db)."""
    return revived(my_source_server, "MariaDB source").create_database(f"msrc_{next(_counter)}")


@pytest.fixture
def my_target_dsn(my_target_server: MyServer) -> str:
    """A fresh, empty database on the MariaDB target server."""
    return revived(my_target_server, "MariaDB target").create_database(f"mtgt_{next(_counter)}")


@pytest.fixture
def my_private_server() -> Iterator[MyServer]:
    """A MariaDB server of the test's own, for tests that restart, crash or purge it."""
    with running_mariadb() as server:
        yield server


# -- the fault and security summary --------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    scenario: str
    rows: int
    lost: int
    duplicated: int
    leaked: int
    message: str


RESULTS: list[Outcome] = []
Report = Callable[..., None]


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Report:
    """``report(rows=…, lost=…, duplicated=…, leaked=…, message=…, scenario=None)``: one line
    of the summary (scenario defaults to the test's id). Call it before asserting, so a
    failing scenario still shows its figures."""

    def add(
        *,
        rows: int,
        lost: int = 0,
        duplicated: int = 0,
        leaked: int = 0,
        message: str = "",
        scenario: str | None = None,
    ) -> None:
        name = scenario or request.node.name.removeprefix("test_")
        RESULTS.append(Outcome(name, rows, lost, duplicated, leaked, message))

    return add


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    tr = terminalreporter
    tr.section("fault suite summary (tests/faults; TLS and least privilege)")
    tr.write_line("| scenario | rows checked | lost | duplicated | leaked | message seen |")
    tr.write_line("|---|---:|---:|---:|---:|---|")
    for o in RESULTS:
        tr.write_line(
            f"| {o.scenario} | {o.rows} | {o.lost} | {o.duplicated} | {o.leaked} | {o.message} |"
        )
