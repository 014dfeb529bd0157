"""A source transaction larger than a batch streams into one target transaction."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.integration.harness import Setup, audit_rows, rows_as_text, sql

pytestmark = pytest.mark.integration


def test_one_big_transaction_is_applied_whole(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    sql(source_dsn, "CREATE TABLE big (id int PRIMARY KEY, v text)")
    # flush_rows and max_rows far below the transaction size: chunks go into the open target
    # transaction, and the checkpoint moves only once the whole source transaction is in.
    s = Setup(
        tmp_path,
        source_dsn,
        target_dsn,
        {"public.big": None},
        audit="transaction",
        max_rows=1000,
        flush_rows=997,
    )
    s.drain()
    sql(
        source_dsn,
        "INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 60000) g",
        "UPDATE big SET v = 'small tx' WHERE id = 1",
    )
    s.drain()
    assert rows_as_text(target_dsn, "big") == rows_as_text(source_dsn, "big")
    audit = audit_rows(target_dsn, s.pipeline)
    assert len(audit) == 2  # transaction level: one row per source transaction
    with psycopg.connect(target_dsn) as conn:
        (detail,) = conn.execute("SELECT detail FROM cdc_sync_audit ORDER BY id LIMIT 1").fetchone()  # type: ignore[misc]
    assert "60000" in str(detail)
