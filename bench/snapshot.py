"""Initial snapshot of a pre-filled 1M-row CRM table: PG → PG and MariaDB → PG, timed."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from bench.daemon import ChildStats, Daemon
from bench.env import TABLE, bench_env
from bench.mysql import compare_cross, my_bench_env
from bench.report import RESULTS, Result
from bench.verify import Check, compare_tables, content_check

PG_SEED = f"""
INSERT INTO {TABLE} (id, name, phone, email, status, do_not_call, balance, updated_at)
SELECT g, 'Customer ' || g, '+44 20 7946 ' || lpad((g %% 10000)::text, 4, '0'),
       'c.' || g || '@example.com', g %% 4, g %% 20 = 0, (g %% 100000) / 100.0,
       timestamptz '2026-01-01 00:00:00Z' + g * interval '1 second'
FROM generate_series(1, %s) g
"""
MY_SEED = f"""
INSERT INTO {TABLE} (id, name, phone, email, status, do_not_call, balance, updated_at)
SELECT seq, CONCAT('Customer ', seq), CONCAT('+44 20 7946 ', LPAD(seq % 10000, 4, '0')),
       CONCAT('c.', seq, '@example.com'), seq % 4, seq % 20 = 0, (seq % 100000) / 100,
       TIMESTAMP '2026-01-01 00:00:00' + INTERVAL seq SECOND
FROM seq_1_to_{{n}}
"""


def _snapshot_figures(r: Result, d: Daemon, st: ChildStats, rows: int) -> None:
    r.figures["exit_code"] = st.exit_code
    r.figures["wall_s"] = round(st.wall_s, 2)
    r.figures["rows_per_s_wall"] = round(rows / st.wall_s) if st.wall_s else None
    r.figures["peak_rss_mb"] = round(st.peak_rss_mb, 1)
    r.figures["cpu_s"] = round(st.cpu_s, 2)
    for line in d.log.read_text().splitlines():
        if '"snapshot_finished"' in line:
            ev: dict[str, Any] = json.loads(line)
            r.figures["copy_s"] = ev.get("seconds")
            r.figures["copy_rows_per_s"] = ev.get("rows_per_second")
    ok = st.exit_code == 0
    r.checks.append(Check("exit code", ok, str(st.exit_code) + ("" if ok else d.log_tail(12))))
    r.notes.append(f"daemon log: {d.log}")


def pg_snapshot(opts: Any) -> Result:
    """``cdc-sync snapshot`` of a pre-filled table into an empty PostgreSQL target."""
    r = Result("snapshot")
    rows = max(1000, int(1_000_000 * opts.scale))
    with (
        tempfile.TemporaryDirectory() as tmp,
        bench_env(Path(tmp), RESULTS / "snapshot", opts.audit, opts.batch) as env,
    ):
        with env.source_conn() as c:
            c.execute(PG_SEED, (rows,))  # type: ignore[arg-type]
            c.execute(f"ANALYZE {TABLE}")  # type: ignore[arg-type]
            c.commit()
        r.figures["rows"] = rows
        d = env.daemon("snapshot")
        st = d.run("snapshot", timeout=opts.timeout)
        _snapshot_figures(r, d, st, rows)
        r.checks.append(content_check(compare_tables(env.source_dsn, env.target_dsn)))
    return r


def mysql_snapshot(opts: Any) -> Result:
    """The same from a MariaDB source (consistent snapshot + binlog position)."""
    r = Result("mysql-snapshot")
    rows = max(1000, int(1_000_000 * opts.scale))
    with (
        tempfile.TemporaryDirectory() as tmp,
        my_bench_env(Path(tmp), RESULTS / "mysql-snapshot", opts.audit, opts.batch) as env,
    ):
        with env.source.connect("crm") as c, c.cursor() as cur:
            cur.execute(MY_SEED.format(n=rows))
            cur.execute(f"ANALYZE TABLE {TABLE}")
            c.commit()
        r.figures["rows"] = rows
        d = env.daemon("snapshot")
        st = d.run("snapshot", timeout=opts.timeout)
        _snapshot_figures(r, d, st, rows)
        r.checks.append(compare_cross(env))
    return r
