"""Content check with rules on: the source rows through the configured rules equal the target."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from bench.env import PIPELINE, TABLE
from bench.verify import Comparison, _note
from cdc_sync.config import load_config
from cdc_sync.errors import RowLevelError
from cdc_sync.records import ChangeRecord, Op, PgLsn, TableId
from cdc_sync.sources.postgres.source import PostgresSource
from cdc_sync.transforms import compile_table


def compare_with_rules(
    source_dsn: str, target_dsn: str, config: Path, env: dict[str, str], examples: int = 5
) -> Comparison:
    """Every source row, as an INSERT through the compiled rules, must be in the target with
    exactly those values, and the target must hold nothing else (rows a rule refused must be
    dead letters instead). Values are compared as Python values, column by column."""
    saved = dict(os.environ)
    os.environ.update(env)  # the config's ${BENCH_*} references
    try:
        cfg = load_config(config)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    table = TableId("public", TABLE)
    src = PostgresSource(source_dsn, "unused", "unused", [table], may_create=False)
    try:
        schema = src.table_schemas()[table]
        keys = _keys(source_dsn)
        rows = src.fetch_rows(table, schema, keys)
    finally:
        src.close()
    tt = compile_table(table, cfg.pipelines[PIPELINE].tables[str(table)], schema, "bench")
    now = datetime.now(UTC)
    expected: dict[object, tuple[object, ...]] = {}
    refused = 0
    for row in rows:
        assert row is not None
        rec = ChangeRecord(Op.INSERT, table, schema, None, row, PgLsn(0), "0", now)
        try:
            applied = tt.apply(rec)
        except RowLevelError:
            refused += 1
            continue
        if applied is not None and applied.record.after is not None:
            after = applied.record.after
            expected[after[tt.schema.key_indexes[0]]] = after
    out = Comparison(source_rows=len(expected))
    names = ", ".join(f'"{c}"' for c in tt.schema.names)
    hs, ht = hashlib.sha256(), hashlib.sha256()
    with psycopg.connect(target_dsn) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        got = {r[0]: tuple(r) for r in conn.execute(f"SELECT {names} FROM {TABLE}")}  # type: ignore[arg-type]
        letters = conn.execute("SELECT count(*) FROM cdc_sync_dead_letters").fetchone()
    out.target_rows = len(got)
    for key in sorted(expected.keys() | got.keys()):  # type: ignore[type-var]
        e, g = expected.get(key), got.get(key)
        if g is None:
            out.missing += 1
            _note(out, examples, f"missing in target: key {key}")
        elif e is None:
            out.extra += 1
            _note(out, examples, f"extra in target: key {key}")
        elif e != g:
            out.different += 1
            _note(out, examples, f"different: key {key}")
        hs.update(repr(e).encode())
        ht.update(repr(g).encode())
    out.source_sha256, out.target_sha256 = hs.hexdigest(), ht.hexdigest()
    if letters and letters[0] != refused:
        out.column_problem = f"{refused} rows refused by the rules, {letters[0]} dead letters"
    return out


def _keys(dsn: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return [(r[0],) for r in conn.execute(f"SELECT id FROM {TABLE} ORDER BY id")]  # type: ignore[arg-type]
