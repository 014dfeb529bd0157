"""Shared fixtures: throwaway PostgreSQL servers (session-wide) and a fresh database per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from cdc_sync.testing.pgserver import PgServer, running_pg

_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_source_server() -> Iterator[PgServer]:
    with running_pg() as server:
        yield server


@pytest.fixture(scope="session")
def pg_target_server() -> Iterator[PgServer]:
    with running_pg() as server:
        yield server


@pytest.fixture
def source_dsn(pg_source_server: PgServer, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database on the source server."""
    return pg_source_server.create_database(f"src_{next(_counter)}")


@pytest.fixture
def target_dsn(pg_target_server: PgServer) -> str:
    """A fresh, empty database on the target server."""
    return pg_target_server.create_database(f"tgt_{next(_counter)}")


@pytest.fixture
def pg_private_server() -> Iterator[PgServer]:
    """A server of the test's own, for tests that restart or crash it."""
    with running_pg() as server:
        yield server
