"""The three benchmarks. Each starts its own servers, primes the pipeline, measures, verifies."""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench import logstats
from bench.daemon import ChildStats, Daemon
from bench.env import PIPELINE, TABLE, BenchEnv, bench_env
from bench.lag import Probe, audit_lag_ms, percentiles
from bench.mysql import mysql_drain, mysql_live
from bench.native import native
from bench.peers import peers
from bench.procstat import server_cpu_s
from bench.report import RESULTS, Result
from bench.rules_verify import compare_with_rules
from bench.snapshot import mysql_snapshot, pg_snapshot
from bench.verify import Check, audit_check, audit_counts, compare_tables, content_check
from bench.workload import BacklogSpec, PacedWriter, write_backlog, write_big_transaction

RSS_LIMIT_MB = 300.0  # issue #2: RSS < 300 MB during a 1M-row transaction


@dataclass(frozen=True)
class Options:
    audit: str = "row"
    scale: float = 1.0
    rows: int | None = None  # bigtx
    rate: float = 2000.0  # live: rows/s
    tx_rows: int = 10  # live: rows per transaction
    duration: float = 20.0  # live: seconds
    timeout: float = 1800.0  # per daemon run
    batch: dict[str, float] | None = None  # pipeline batch settings (max_rows, max_seconds, ...)
    rounds: int = 2  # compare: alternating native / cdc-sync runs
    rules: bool = False  # drain: the example rule set on the table (bench/env.py RULES)
    contenders: tuple[str, ...] = ()  # peers: which (bench/peers.py keys); empty = all
    peer_modes: tuple[str, ...] = ("drain", "live")  # peers: which modes


def _tail(d: Daemon) -> str:
    return " ⏎ ".join(d.log_tail(12).splitlines())[-1500:]


def _lsn(conn: psycopg.Connection[tuple[object, ...]]) -> str:
    row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    return str(row[0]) if row else "0/0"


def _wal_mb(conn: psycopg.Connection[tuple[object, ...]], since: str) -> float:
    row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", (since,))
    got = row.fetchone()
    return float(got[0]) / 1e6 if got else 0.0  # type: ignore[arg-type]


def _prime(env: BenchEnv, r: Result) -> bool:
    """First run on the empty table: creates slot, publication, target table, state tables."""
    d = env.daemon("prime")
    st = d.run("run", "--until-caught-up", timeout=180)
    r.figures["prime_s"] = round(st.wall_s, 2)
    if st.exit_code != 0:
        r.checks.append(
            Check("prime", False, f"`run --until-caught-up` exited {st.exit_code}: {_tail(d)}")
        )
        r.notes.append(f"daemon log: {d.log}")
        return False
    return True


def _child(r: Result, st: ChildStats, rows: int, prefix: str = "") -> None:
    r.figures[f"{prefix}exit_code"] = st.exit_code
    r.figures[f"{prefix}wall_s"] = round(st.wall_s, 2)
    if rows:
        r.figures[f"{prefix}rows_per_s"] = round(rows / st.wall_s) if st.wall_s else None
    r.figures[f"{prefix}peak_rss_mb"] = round(st.peak_rss_mb, 1)
    r.figures[f"{prefix}cpu_s"] = round(st.cpu_s, 2)
    r.figures[f"{prefix}cpu_user_s"] = round(st.cpu_user_s, 2)
    r.figures[f"{prefix}cpu_sys_s"] = round(st.cpu_sys_s, 2)


def _servers_cpu(env: BenchEnv) -> tuple[float, float]:
    return server_cpu_s(env.source), server_cpu_s(env.target)


def _servers_cpu_figures(r: Result, env: BenchEnv, before: tuple[float, float]) -> None:
    """CPU the source (walsender: decoding) and target (backend: applying) servers spent."""
    src, tgt = _servers_cpu(env)
    r.figures["source_pg_cpu_s"] = round(src - before[0], 2)
    r.figures["target_pg_cpu_s"] = round(tgt - before[1], 2)


def _daemon_log(r: Result, d: Daemon, rows: int = 0) -> None:
    ls = logstats.read(d.log)
    r.figures["batches"] = ls.batches
    if ls.stream_s:
        r.figures["stream_s"] = round(ls.stream_s, 2)  # pipeline_started -> last batch
        if rows:
            r.figures["stream_rows_per_s"] = round(rows / ls.stream_s) if ls.stream_s > 0 else None
    r.figures["daemon_max_lag_s"] = round(ls.max_lag_s, 2)
    r.figures["daemon_last_lag_s"] = round(ls.last_lag_s, 2)
    if ls.errors:
        r.notes.append(f"daemon logged {ls.errors} error/retry events, first: {ls.first_error}")
    r.notes.append(f"daemon log: {d.log}")


def _verify(r: Result, env: BenchEnv, changes: int, transactions: int) -> None:
    t0 = time.monotonic()
    if env.rules:
        cmp = compare_with_rules(env.source_dsn, env.target_dsn, env.config, env.env)
    else:
        cmp = compare_tables(env.source_dsn, env.target_dsn)
    r.checks.append(content_check(cmp))
    counts = audit_counts(env.target_dsn, PIPELINE)
    r.checks.append(audit_check(counts, env.audit, changes, transactions))
    r.figures["verify_s"] = round(time.monotonic() - t0, 2)


def drain(opts: Options) -> Result:
    """Backlog written while the daemon is stopped, then one timed ``--until-caught-up``."""
    r = Result("drain")
    spec = BacklogSpec().scaled(opts.scale)
    with (
        tempfile.TemporaryDirectory() as tmp,
        bench_env(Path(tmp), RESULTS / "drain", opts.audit, opts.batch, opts.rules) as env,
    ):
        r.figures["rules"] = "example set" if opts.rules else "none"
        if not _prime(env, r):
            return r
        with env.source_conn() as c:
            c.autocommit = True
            lsn0 = _lsn(c)
            b = write_backlog(c, spec)
            r.figures["row_changes"] = b.changes
            r.figures["source_transactions"] = b.transactions
            r.figures["inserts/updates/deletes"] = f"{b.inserts}/{b.updates}/{b.deletes}"
            r.figures["workload_write_s"] = round(b.seconds, 2)
            r.figures["source_wal_mb"] = round(_wal_mb(c, lsn0), 1)
        d = env.daemon("drain")
        cpu0 = _servers_cpu(env)
        st = d.run("run", "--until-caught-up", timeout=opts.timeout)
        _child(r, st, b.changes)
        _servers_cpu_figures(r, env, cpu0)
        _daemon_log(r, d, b.changes)
        r.checks.append(
            Check(
                "exit code",
                st.exit_code == 0,
                f"{st.exit_code}" + ("" if st.exit_code == 0 else f": {_tail(d)}"),
            )
        )
        _verify(r, env, b.changes, b.transactions)
    return r


def _wait_target(env: BenchEnv, sql: str, want: int, timeout: float) -> float | None:
    """Seconds until ``sql`` returns at least ``want`` on the target, None on timeout."""
    t0 = time.monotonic()
    with psycopg.connect(env.target_dsn, autocommit=True) as c:
        while time.monotonic() - t0 < timeout:
            try:
                row = c.execute(sql).fetchone()
                if row and row[0] is not None and int(row[0]) >= want:
                    return time.monotonic() - t0
            except psycopg.errors.UndefinedTable:
                pass
            time.sleep(0.01)
    return None


def live(opts: Options) -> Result:
    """Daemon running; a paced writer; lag per source transaction; SIGTERM at the end."""
    r = Result("live")
    duration = opts.duration
    with (
        tempfile.TemporaryDirectory() as tmp,
        bench_env(Path(tmp), RESULTS / "live", opts.audit, opts.batch) as env,
    ):
        if not _prime(env, r):
            return r
        d = env.daemon("live")
        d.start("run")
        with psycopg.connect(env.source_dsn, autocommit=True) as c:
            c.execute(f"INSERT INTO {TABLE} (id, name) VALUES (0, 'warm-up')")
        ready = _wait_target(env, f"SELECT count(*) FROM {TABLE} WHERE id = 0", 1, 60)
        if ready is None or not d.alive():
            st, _ = d.terminate(30) if d.alive() else (d.wait(5), 0.0)
            r.checks.append(
                Check(
                    "daemon ready",
                    False,
                    f"warm-up row not applied in 60 s (exit {st.exit_code}): {_tail(d)}",
                )
            )
            return r
        r.figures["first_change_visible_s"] = round(ready, 2)
        probe = Probe(env.target_dsn)
        probe.start()
        w = PacedWriter(env.source_dsn, opts.rate, opts.tx_rows, duration, first_id=1)
        since = time.time()
        cpu0 = _servers_cpu(env)
        w.start()
        w.join()
        caught = _wait_target(env, f"SELECT max(id) FROM {TABLE}", w.last_id, 120)
        time.sleep(0.1)  # let the probe see the last row too
        probe.stop()
        _servers_cpu_figures(r, env, cpu0)  # includes the writer's and the probe's backends
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
            }
        )
        audit = audit_lag_ms(env.target_dsn, PIPELINE, since) if env.audit != "off" else None
        if audit:
            a, expr = audit
            r.figures.update(
                {
                    "audit_lag_p50_ms": round(a["p50"], 1),
                    "audit_lag_p99_ms": round(a["p99"], 1),
                    "audit_lag_max_ms": round(a["max"], 1),
                }
            )
            r.notes.append(f"audit lag = cdc_sync_audit.{expr} (same machine clock)")
        else:
            r.notes.append("audit lag not computed: no applied/commit time columns in the audit")
        r.figures["stop_s"] = round(stop_s, 2)
        _child(r, st, 0, prefix="daemon_")
        _daemon_log(r, d)
        r.notes.append(
            "lag = first probe query (polling target max(id)) that saw a source transaction's "
            "last row - the time its COMMIT returned at the source; resolution ~ poll interval"
        )
        r.checks.append(Check("running until SIGTERM", alive, "" if alive else _tail(d)))
        r.checks.append(
            Check(
                "caught up",
                caught is not None and unseen == 0,
                f"{unseen} transactions not seen by the probe",
            )
        )
        r.checks.append(
            Check("SIGTERM exit code", st.exit_code == 0, f"{st.exit_code} after {stop_s:.2f} s")
        )
        if w.errors:
            r.checks.append(Check("writer", False, repr(w.errors[0])))
        _verify(r, env, w.rows + 1, len(w.commits) + 1)
    return r


def bigtx(opts: Options) -> Result:
    """One source transaction of ``rows`` inserts, drained with ``--until-caught-up``."""
    r = Result("bigtx")
    rows = opts.rows or max(1, round(1_000_000 * opts.scale))
    with (
        tempfile.TemporaryDirectory() as tmp,
        bench_env(Path(tmp), RESULTS / "bigtx", opts.audit, opts.batch) as env,
    ):
        if not _prime(env, r):
            return r
        with env.source_conn() as c:
            c.autocommit = True
            lsn0 = _lsn(c)
            r.figures["rows"] = rows
            r.figures["workload_write_s"] = round(write_big_transaction(c, rows), 2)
            r.figures["source_wal_mb"] = round(_wal_mb(c, lsn0), 1)
        d = env.daemon("bigtx")
        cpu0 = _servers_cpu(env)
        st = d.run("run", "--until-caught-up", timeout=opts.timeout)
        _child(r, st, rows)
        _servers_cpu_figures(r, env, cpu0)
        _daemon_log(r, d, rows)
        r.checks.append(
            Check(
                "exit code",
                st.exit_code == 0,
                f"{st.exit_code}" + ("" if st.exit_code == 0 else f": {_tail(d)}"),
            )
        )
        r.checks.append(
            Check(
                f"peak RSS < {RSS_LIMIT_MB:.0f} MB",
                st.peak_rss_mb < RSS_LIMIT_MB,
                f"{st.peak_rss_mb:.1f} MB for a {rows:,}-row transaction",
            )
        )
        _verify(r, env, rows, 1)
    return r


def _drain_figures(r: Result, d: Daemon, st: ChildStats, changes: int) -> None:
    _child(r, st, changes)
    _daemon_log(r, d, changes)
    r.checks.append(
        Check(
            "exit code",
            st.exit_code == 0,
            f"{st.exit_code}" + ("" if st.exit_code == 0 else f": {_tail(d)}"),
        )
    )


def mysql_drain_mode(opts: Options) -> Result:
    return mysql_drain(opts, _drain_figures)


def mysql_live_mode(opts: Options) -> Result:
    def figures(r: Result, d: Daemon, st: ChildStats) -> None:
        _child(r, st, 0, prefix="daemon_")
        _daemon_log(r, d)

    return mysql_live(opts, figures)


def native_drain(opts: Options) -> Result:
    return native(opts, opts.scale, opts.timeout)


def compare(opts: Options) -> Result:
    """Alternating runs of native logical replication and cdc-sync on the same backlog, so
    both see the same machine state; the ratio of medians is the machine-independent figure."""
    r = Result("compare")
    ours: list[float] = []
    theirs: list[float] = []
    for i in range(opts.rounds):
        for name, fn, out in (("native", native_drain, theirs), ("cdc-sync", drain, ours)):
            one = fn(opts)
            rate = one.figures.get("rows_per_s")
            r.figures[f"{name}_{i + 1}_rows_per_s"] = rate
            if one.mode == "drain":
                r.figures[f"{name}_{i + 1}_stream_rows_per_s"] = one.figures.get(
                    "stream_rows_per_s"
                )
            for ch in one.checks:
                r.checks.append(Check(f"{name} {i + 1}: {ch.name}", ch.ok, ch.detail))
            if isinstance(rate, int | float):
                out.append(float(rate))
    if ours and theirs:
        a, b = statistics.median(ours), statistics.median(theirs)
        r.figures["cdc_sync_median_rows_per_s"] = round(a)
        r.figures["native_median_rows_per_s"] = round(b)
        r.figures["ratio_cdc_sync_to_native"] = round(a / b, 2)
    return r


MODES = {
    "drain": drain,
    "live": live,
    "bigtx": bigtx,
    "native": native_drain,
    "compare": compare,
    "mysql-drain": mysql_drain_mode,
    "mysql-live": mysql_live_mode,
    "snapshot": pg_snapshot,
    "mysql-snapshot": mysql_snapshot,
    "peers": peers,
}
