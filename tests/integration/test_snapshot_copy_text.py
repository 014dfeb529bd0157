"""Snapshot chunks loaded as COPY text (PG → PG, no rules): the same rows and audit rows as
typed rows give, and the typed path wherever the text path cannot be trusted."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from cdc_sync.errors import PermanentError
from cdc_sync.records import TableId, TableSchema
from cdc_sync.sources.postgres.catalog import lookup_type, read_schema
from cdc_sync.sources.postgres.copytext import copy_chunk
from cdc_sync.sources.postgres.fetch import SETTINGS_ARGS, SETTINGS_SQL
from cdc_sync.sources.postgres.liveness import WatchedConnection
from cdc_sync.sources.postgres.snapshot import chunk_sql
from cdc_sync.sources.postgres.types import TypeResolver
from cdc_sync.testing.pgserver import PgServer
from tests.integration.harness import Cli, sql, table_lines
from tests.integration.test_snapshot import CONFIG as SNAP_CONFIG

pytestmark = pytest.mark.integration


# A composite key with a text part that needs COPY escapes (tab, newline, backslash, quote,
# non-ASCII), and values of many kinds, NULLs among them.
DDL = (
    "CREATE TABLE odd (k text, n int, t text, num numeric(12,3), f double precision, "
    "b bytea, j jsonb, a int[], i interval, ts timestamptz, d date, ok boolean, "
    "PRIMARY KEY (k, n))"
)
SEED = r"""
INSERT INTO odd
SELECT (ARRAY[E'tab\there', E'new\nline', E'back\\slash', 'quo"te', 'zürich', 'plain'])[g % 6 + 1],
       g,
       CASE WHEN g % 7 = 0 THEN NULL ELSE E'v\t' || g || E'\\\n' END,
       g / 7.0, g / 3.0, decode(lpad(to_hex(g), 8, '0'), 'hex'),
       jsonb_build_object('g', g, 's', E'x\ty'), ARRAY[g, NULL, -g],
       make_interval(months => g % 13, days => g % 5, secs => g / 1000.0),
       timestamptz '2026-01-01 00:00:00Z' + g * interval '1 minute',
       date '2026-01-01' + g, g % 2 = 0
FROM generate_series(1, 1500) g
"""


class Pipe(Cli):
    def __init__(self, tmp: Path, name: str, source_dsn: str, target_dsn: str, audit: str) -> None:
        text = SNAP_CONFIG.format(
            stype="postgres", ttype="postgres", sextra="", pipeline=name, mode="initial",
            chunk=400, extra="", tables=table_lines({"public.odd": None}),
        ).replace("audit: row", f"audit: {audit}")  # fmt: skip
        self._configure(tmp, name, text, source_dsn, target_dsn)

    def snapshot(self) -> list[dict[str, object]]:
        """Run ``cdc-sync snapshot``; its progress events."""
        res = self.cli("snapshot")
        assert res.returncode == 0, res.stderr[-3000:]
        return [
            ev
            for line in res.stderr.splitlines()
            if line.startswith("{") and (ev := json.loads(line))["event"] == "snapshot_progress"
        ]


def _rows(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [
            str(r[0]) for r in conn.execute("SELECT row_to_json(o)::text FROM odd o ORDER BY k, n")
        ]


def _audit(dsn: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT source_table, target_table, op, outcome, pk, source_tx, detail "
            "FROM cdc_sync_audit WHERE op = 'snapshot' ORDER BY pk"
        ).fetchall()


@pytest.mark.parametrize("audit", ["row", "transaction"])
def test_copy_text_gives_the_rows_and_audit_of_typed_rows(
    tmp_path: Path, source_dsn: str, pg_target_server: PgServer, audit: str
) -> None:
    sql(source_dsn, DDL, SEED)
    fast_dsn = pg_target_server.create_database(f"fast_{audit}_{tmp_path.name[-8:]}")
    typed_dsn = pg_target_server.create_database(f"typed_{audit}_{tmp_path.name[-8:]}")
    # A row already in the target makes that copy take the typed path (upserts).
    sql(typed_dsn, DDL, "INSERT INTO odd (k, n) VALUES ('~ sentinel', 0)")
    fast = Pipe(tmp_path, "ct_fast", source_dsn, fast_dsn, audit).snapshot()
    typed = Pipe(tmp_path, "ct_typed", source_dsn, typed_dsn, audit).snapshot()
    assert {e["path"] for e in fast} == {"copy_text"}
    assert {e["path"] for e in typed} == {"rows"}
    source = _rows(source_dsn)
    assert len(source) == 1500
    assert _rows(fast_dsn) == source
    assert [r for r in _rows(typed_dsn) if "~ sentinel" not in r] == source
    assert _audit(fast_dsn) == _audit(typed_dsn)
    if audit == "row":
        assert len(_audit(fast_dsn)) == 1500


def test_a_row_the_target_refuses_is_dead_lettered_not_the_chunk(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    """A target constraint the source does not have: the COPY of that chunk fails, the table
    goes on row by row, and only the row that breaks it becomes a dead letter."""
    sql(source_dsn, DDL, SEED)
    sql(target_dsn, DDL.replace("PRIMARY KEY", "CHECK (n <> 1000), PRIMARY KEY"))
    events = Pipe(tmp_path, "ct_refuse", source_dsn, target_dsn, "row").snapshot()
    paths = [e["path"] for e in events]
    assert paths[0] == "copy_text" and paths[-1] == "rows"
    with psycopg.connect(target_dsn) as conn:
        letters = conn.execute("SELECT pk, error_code FROM cdc_sync_dead_letters").fetchall()
    assert len(letters) == 1 and letters[0][1] == "23514", letters
    assert "1000" in str(letters[0][0])
    source = [r for r in _rows(source_dsn) if '"n":1000,' not in r]
    assert _rows(target_dsn) == source


def test_copy_chunk_reads_what_psycopg_copy_reads_and_errors_leave_the_session_usable(
    source_dsn: str,
) -> None:
    """The libpq-level COPY reader: the same bytes as psycopg's Copy, keys typed, and a
    refused statement a classified error after which the connection takes statements."""
    sql(source_dsn, DDL, SEED)
    schema = _odd_schema(source_dsn)
    query = chunk_sql(ODD, schema, True, 700, None)
    with WatchedConnection.open(source_dsn, autocommit=True) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.execute(SETTINGS_SQL, SETTINGS_ARGS)
        chunk = copy_chunk(conn, ODD, schema, query, ("new\nline", 1))
        assert chunk is not None and chunk.rows == 700
        cur = psycopg.ClientCursor(conn)
        with cur.copy(f"COPY ({query}) TO STDOUT", ["new\nline", "1"]) as cp:
            assert chunk.data == b"".join(cp)
        assert chunk.keys[0] == ("new\nline", 7) and chunk.last_key == chunk.keys[-1]
        gone = TableId("public", "gone")
        with pytest.raises(PermanentError, match="SQLSTATE 42P01"):
            copy_chunk(conn, gone, schema, chunk_sql(gone, schema, False, 10, None), None)
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone() == (1,)


ODD = TableId("public", "odd")


def _odd_schema(dsn: str) -> TableSchema:
    with psycopg.connect(dsn) as conn:
        return read_schema(conn, ODD, TypeResolver(lambda oid: lookup_type(conn, oid)))
