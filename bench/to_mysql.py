"""cdc-sync into a MariaDB target: PG → MySQL and MySQL → MySQL, drain and live (issue #9)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from bench import logstats
from bench.daemon import ChildStats, Daemon
from bench.env import PIPELINE, TABLE
from bench.lag import Probe, percentiles
from bench.my_target import (
    MyTargetEnv,
    compare_rows,
    my_audit_counts,
    my_audit_lag_ms,
    my_rows,
    server_cpu_s,
    server_errors,
    source_rows,
    target_env,
    target_types,
)
from bench.mysql import MyPacedWriter, write_my_backlog
from bench.report import RESULTS, Result
from bench.verify import Check, audit_check, content_check
from bench.workload import Backlog, BacklogSpec, PacedWriter, write_backlog
from cdc_sync.testing.myserver import MyServer

DrainFigures = Callable[[Result, Daemon, ChildStats, int], None]
LiveFigures = Callable[[Result, Daemon, ChildStats], None]


def _verify(r: Result, env: MyTargetEnv, changes: int, transactions: int) -> None:
    t0 = time.monotonic()
    try:
        cmp = compare_rows(source_rows(env), my_rows(env.target, "hub"))
        r.checks.append(content_check(cmp))
        r.checks.append(
            Check(
                "caught up",
                cmp.target_rows == cmp.source_rows and not cmp.missing,
                f"target {cmp.target_rows} rows, source {cmp.source_rows}",
            )
        )
        counts = my_audit_counts(env.target, PIPELINE)
        r.checks.append(audit_check(counts, env.audit, changes, transactions))
        r.notes.append(f"target columns: {target_types(env.target)}")
    except Exception as e:  # a missing target table etc.: a failed check, not a crash
        r.checks.append(Check("verify", False, f"{type(e).__name__}: {e}"))
    r.figures["verify_s"] = round(time.monotonic() - t0, 2)


# --- figures -------------------------------------------------------------------------------


def _tail(d: Daemon, env: MyTargetEnv) -> str:
    tail = " ⏎ ".join(d.log_tail(12).splitlines())[-1500:]
    errors = server_errors(env)
    return f"{tail} | {errors}" if errors else tail


def _child(r: Result, st: ChildStats, rows: int) -> None:
    """bench.modes._child's keys: the daemon's own wall, CPU and peak RSS (os.wait4)."""
    r.figures["exit_code"] = st.exit_code
    r.figures["wall_s"] = round(st.wall_s, 2)
    if rows:
        r.figures["rows_per_s"] = round(rows / st.wall_s) if st.wall_s else None
    r.figures["peak_rss_mb"] = round(st.peak_rss_mb, 1)
    r.figures["cpu_s"] = round(st.cpu_s, 2)
    r.figures["cpu_user_s"] = round(st.cpu_user_s, 2)
    r.figures["cpu_sys_s"] = round(st.cpu_sys_s, 2)


def _log_figures(r: Result, d: Daemon, rows: int = 0) -> None:
    ls = logstats.read(d.log)
    r.figures["batches"] = ls.batches
    if ls.stream_s:
        r.figures["stream_s"] = round(ls.stream_s, 2)
        if rows and ls.stream_s > 0:
            r.figures["stream_rows_per_s"] = round(rows / ls.stream_s)
    r.figures["daemon_max_lag_s"] = round(ls.max_lag_s, 2)
    if ls.errors:
        r.notes.append(f"daemon logged {ls.errors} error/retry events, first: {ls.first_error}")
    r.notes.append(f"daemon log: {d.log}")


def default_drain_figures(r: Result, d: Daemon, st: ChildStats, changes: int) -> None:
    _child(r, st, changes)
    _log_figures(r, d, changes)


def default_live_figures(r: Result, d: Daemon, st: ChildStats) -> None:
    _child(r, st, 0)
    _log_figures(r, d)


def _cpu_figures(r: Result, env: MyTargetEnv, before: tuple[float, float]) -> None:
    src = "my" if isinstance(env.source, MyServer) else "pg"
    r.figures[f"source_{src}_cpu_s"] = round(server_cpu_s(env.source) - before[0], 2)
    r.figures["target_my_cpu_s"] = round(server_cpu_s(env.target) - before[1], 2)


def _cpu(env: MyTargetEnv) -> tuple[float, float]:
    return server_cpu_s(env.source), server_cpu_s(env.target)


# --- the runs ------------------------------------------------------------------------------


def _prime(env: MyTargetEnv, r: Result) -> bool:
    """First run on the empty table: slot/publication or binlog position, target table and
    the cdc_sync_* state tables in ``hub``."""
    d = env.daemon("prime")
    st = d.run("run", "--until-caught-up", timeout=180)
    r.figures["prime_s"] = round(st.wall_s, 2)
    if st.exit_code != 0:
        r.checks.append(Check("prime", False, f"exit {st.exit_code}: {_tail(d, env)}"))
        r.notes.append(f"daemon log: {d.log}")
    return st.exit_code == 0


def _backlog(env: MyTargetEnv, spec: BacklogSpec) -> Backlog:
    if isinstance(env.source, MyServer):
        return write_my_backlog(env.source, spec)
    with psycopg.connect(env.source_dsn, autocommit=True) as c:
        return write_backlog(c, spec)


def _drain(route: str, mode: str, opts: Any, figures: DrainFigures | None) -> Result:
    r = Result(mode)
    spec = BacklogSpec().scaled(opts.scale)
    with (
        tempfile.TemporaryDirectory() as tmp,
        target_env(route, Path(tmp), RESULTS / mode, opts.audit, opts.batch) as env,
    ):
        if not _prime(env, r):
            return r
        b = _backlog(env, spec)
        r.figures["row_changes"] = b.changes
        r.figures["source_transactions"] = b.transactions
        r.figures["inserts/updates/deletes"] = f"{b.inserts}/{b.updates}/{b.deletes}"
        r.figures["workload_write_s"] = round(b.seconds, 2)
        d = env.daemon("drain")
        cpu0 = _cpu(env)
        st = d.run("run", "--until-caught-up", timeout=opts.timeout)
        _cpu_figures(r, env, cpu0)
        (figures or default_drain_figures)(r, d, st, b.changes)
        ok = st.exit_code == 0
        r.checks.append(
            Check("exit code", ok, f"{st.exit_code}" + ("" if ok else f": {_tail(d, env)}"))
        )
        _verify(r, env, b.changes, b.transactions)
    return r


def _insert_one(env: MyTargetEnv, row_id: int) -> None:
    sql = f"INSERT INTO {TABLE} (id, name) VALUES (%s, 'warm-up')"
    if isinstance(env.source, MyServer):
        with env.source.connect("crm") as c, c.cursor() as cur:
            cur.execute(sql, (row_id,))
    else:
        with psycopg.connect(env.source_dsn, autocommit=True) as c:
            c.execute(sql, (row_id,))


def _wait_row(target: MyServer, row_id: int, timeout: float) -> float | None:
    """Seconds until a row with id >= ``row_id`` is visible in the target, None on timeout."""
    t0 = time.monotonic()
    with target.connect("hub") as c, c.cursor() as cur:
        while time.monotonic() - t0 < timeout:
            try:
                cur.execute(f"SELECT coalesce(max(id), -1) FROM {TABLE}")
                row = cur.fetchone()
                if row and int(row[0]) >= row_id:
                    return time.monotonic() - t0
            except Exception:  # the table does not exist yet
                pass
            time.sleep(0.01)
    return None


def _writer(env: MyTargetEnv, opts: Any) -> PacedWriter:
    if isinstance(env.source, MyServer):
        return MyPacedWriter(env.source, opts.rate, opts.tx_rows, opts.duration, first_id=1)
    return PacedWriter(env.source_dsn, opts.rate, opts.tx_rows, opts.duration, first_id=1)


def _live(route: str, mode: str, opts: Any, figures: LiveFigures | None) -> Result:
    r = Result(mode)
    with (
        tempfile.TemporaryDirectory() as tmp,
        target_env(route, Path(tmp), RESULTS / mode, opts.audit, opts.batch) as env,
    ):
        if not _prime(env, r):
            return r
        d = env.daemon("live")
        d.start("run")
        # A warm-up row (id 0) seen in the target: the daemon's start-up is not lag.
        _insert_one(env, 0)
        ready = _wait_row(env.target, 0, 60)
        if ready is None or not d.alive():
            st, _ = d.terminate(30) if d.alive() else (d.wait(5), 0.0)
            r.checks.append(
                Check("daemon ready", False, f"warm-up row not applied in 60 s: {_tail(d, env)}")
            )
            return r
        r.figures["first_change_visible_s"] = round(ready, 2)
        probe = Probe(env.target_dsn)
        probe.start()
        w = _writer(env, opts)
        since = time.time()
        cpu0 = _cpu(env)
        w.start()
        w.join()
        caught = _wait_row(env.target, w.last_id, 120)
        time.sleep(0.1)  # let the probe see the last row too
        probe.stop()
        _cpu_figures(r, env, cpu0)  # includes the writer's and the probe's sessions
        alive = d.alive()
        st, stop_s = d.terminate(60) if alive else (d.wait(5), 0.0)
        lags, unseen = probe.lags_ms(w.commits)
        p = percentiles(lags)
        r.figures.update(
            {
                "rows_written": w.rows,
                "transactions": len(w.commits),
                "write_rate_rows_per_s": round(w.rows / w.seconds) if w.seconds else None,
                "lag_p50_ms": round(p["p50"], 1),
                "lag_p99_ms": round(p["p99"], 1),
                "lag_max_ms": round(p["max"], 1),
                "probe_polls_per_s": round(probe.polls / max(w.seconds, 1e-9)),
                "catch_up_after_writer_s": round(caught, 2) if caught is not None else None,
                "stop_s": round(stop_s, 2),
            }
        )
        if isinstance(env.source, MyServer):
            # A binlog event's timestamp has whole seconds: committed_at is truncated, so
            # applied_at - committed_at would read ~500 ms high on average.
            r.notes.append("no audit lag: MariaDB commit times have 1 s resolution")
        elif env.audit != "off":
            a = my_audit_lag_ms(env.target, PIPELINE, since)
            if a:
                r.figures["audit_lag_p50_ms"] = round(a["p50"], 1)
                r.figures["audit_lag_p99_ms"] = round(a["p99"], 1)
        (figures or default_live_figures)(r, d, st)
        r.notes.append(
            "lag = first probe query (polling the MariaDB target's max(id)) that saw a source "
            "transaction's last row - the time its COMMIT returned at the source"
        )
        r.checks.append(Check("running until SIGTERM", alive, "" if alive else _tail(d, env)))
        r.checks.append(Check("probe", not probe.errors, repr(probe.errors[:1])))
        r.checks.append(
            Check("all seen", caught is not None and unseen == 0, f"{unseen} tx not seen")
        )
        r.checks.append(
            Check("SIGTERM exit code", st.exit_code == 0, f"{st.exit_code} after {stop_s:.2f} s")
        )
        if w.errors:
            r.checks.append(Check("writer", False, repr(w.errors[0])))
        _verify(r, env, w.rows + 1, len(w.commits) + 1)
    return r


def pg_drain(opts: Any, figures: DrainFigures | None = None) -> Result:
    """PostgreSQL backlog written while the daemon is stopped; one timed drain into MariaDB."""
    return _drain("pg", "pg-mysql-drain", opts, figures)


def pg_live(opts: Any, figures: LiveFigures | None = None) -> Result:
    """Daemon running; paced PostgreSQL writer; commit-to-visible lag in MariaDB."""
    return _live("pg", "pg-mysql-live", opts, figures)


def my_drain(opts: Any, figures: DrainFigures | None = None) -> Result:
    """MariaDB backlog written while the daemon is stopped; one timed drain into a second
    MariaDB server."""
    return _drain("my", "mysql-mysql-drain", opts, figures)


def my_live(opts: Any, figures: LiveFigures | None = None) -> Result:
    """Daemon running; paced MariaDB writer; commit-to-visible lag in a second MariaDB."""
    return _live("my", "mysql-mysql-live", opts, figures)
