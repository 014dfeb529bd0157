"""Native PostgreSQL logical replication draining the same backlog: the yardstick for PG→PG."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import psycopg

from bench.env import DDL, TABLE, bench_env
from bench.procstat import server_cpu_s
from bench.report import RESULTS, Result
from bench.verify import Check, compare_tables, content_check
from bench.workload import BacklogSpec, write_backlog

_SLOT = "native_bench"
_MARKER = "bench_marker"


def native(opts: object, scale: float = 1.0, timeout: float = 1800.0) -> Result:
    """The backlog is written while the subscription does not exist yet (its slot does, so
    nothing is lost), then ``CREATE SUBSCRIPTION`` starts the apply worker and the clock.
    Done = a marker row committed after the backlog is visible in the target: the apply
    worker commits in source commit order, so everything before it is applied too."""
    r = Result("native")
    spec = BacklogSpec().scaled(scale)
    with (
        tempfile.TemporaryDirectory() as tmp,
        bench_env(Path(tmp), RESULTS / "native", "off") as env,
    ):
        with psycopg.connect(env.source_dsn, autocommit=True) as c:
            c.execute(f"CREATE TABLE {_MARKER} (id int PRIMARY KEY)")
            c.execute(f"CREATE PUBLICATION {_SLOT} FOR TABLE {TABLE}, {_MARKER}")
            c.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (_SLOT,))
            b = write_backlog(c, spec)
            c.execute(f"INSERT INTO {_MARKER} VALUES (1)")
        r.figures["row_changes"] = b.changes
        r.figures["source_transactions"] = b.transactions
        with psycopg.connect(env.target_dsn, autocommit=True) as t:
            t.execute(DDL)
            t.execute(f"CREATE TABLE {_MARKER} (id int PRIMARY KEY)")
            cpu0 = server_cpu_s(env.source), server_cpu_s(env.target)
            t0 = time.monotonic()
            t.execute(
                f"CREATE SUBSCRIPTION {_SLOT} CONNECTION '{env.source_dsn}' "
                f"PUBLICATION {_SLOT} WITH (create_slot = false, slot_name = '{_SLOT}', "
                "copy_data = false)"
            )
            done = None
            while time.monotonic() - t0 < timeout:
                if t.execute(f"SELECT 1 FROM {_MARKER}").fetchone():
                    done = time.monotonic() - t0
                    break
                time.sleep(0.005)
            r.figures["wall_s"] = round(done, 2) if done else None
            r.figures["rows_per_s"] = round(b.changes / done) if done else None
            r.figures["source_pg_cpu_s"] = round(server_cpu_s(env.source) - cpu0[0], 2)
            r.figures["target_pg_cpu_s"] = round(server_cpu_s(env.target) - cpu0[1], 2)
            t.execute(f"ALTER SUBSCRIPTION {_SLOT} DISABLE")
            t.execute(f"ALTER SUBSCRIPTION {_SLOT} SET (slot_name = NONE)")
            t.execute(f"DROP SUBSCRIPTION {_SLOT}")
        r.checks.append(Check("caught up", done is not None, f"within {timeout:.0f} s"))
        r.checks.append(content_check(compare_tables(env.source_dsn, env.target_dsn)))
        r.notes.append(
            "native = CREATE SUBSCRIPTION (pgoutput, one apply worker) on a pre-created slot; "
            "wall time from CREATE SUBSCRIPTION to the marker row being visible"
        )
    return r
