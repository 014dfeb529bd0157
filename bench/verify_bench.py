"""``cdc-sync verify`` throughput: N identical rows PG→PG, rows/s per side (both sides read)."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import psycopg

from cdc_sync.config import load_config
from cdc_sync.runtime.verify import verify
from cdc_sync.testing.pgserver import running_pg

DDL = (
    "CREATE TABLE items (id bigint PRIMARY KEY, name text, amount numeric(12,2), "
    "at timestamptz, flag boolean)"
)
FILL = (
    "INSERT INTO items SELECT g, 'name ' || g, g * 1.25, "
    "timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second', mod(g, 2) = 0 "
    "FROM generate_series(1, %s) g"
)
CONFIG = """
sources:
  src: {type: postgres, dsn: "${SRC_DSN}"}
targets:
  tgt: {type: postgres, dsn: "${TGT_DSN}"}
pipelines:
  bench:
    source: src
    target: tgt
    verify: {chunk_rows: %d}
    tables:
      public.items: {}
logging: {level: WARNING, format: json}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=5_000)
    args = ap.parse_args()
    with running_pg() as src, running_pg() as tgt, tempfile.TemporaryDirectory() as tmp:
        sdsn, tdsn = src.create_database("vsrc"), tgt.create_database("vtgt")
        for dsn in (sdsn, tdsn):
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(DDL)
                conn.execute(FILL % args.rows)
                conn.execute("VACUUM ANALYZE items")
        os.environ.update(SRC_DSN=sdsn, TGT_DSN=tdsn)
        path = Path(tmp) / "bench.yaml"
        path.write_text(CONFIG % args.chunk)
        config = load_config(str(path))
        started = time.perf_counter()
        report = verify(config, "bench", settle=0)
        seconds = time.perf_counter() - started
        (t,) = report.tables
        print(
            f"status={report.status} mode={t.mode} rows={t.rows_checked} target_rows="
            f"{t.target_rows} seconds={seconds:.2f} "
            f"rows_per_s_per_side={t.rows_checked / seconds:,.0f}"
        )


if __name__ == "__main__":
    main()
