"""The throwaway server fixture itself: logical WAL and a usable database."""

from __future__ import annotations

import psycopg
import pytest

pytestmark = pytest.mark.integration


def test_source_has_logical_wal(source_dsn: str) -> None:
    with psycopg.connect(source_dsn) as conn:
        row = conn.execute("SHOW wal_level").fetchone()
    assert row == ("logical",)
