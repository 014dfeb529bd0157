"""pg_chameleon (MySQL/MariaDB → PostgreSQL) as a contender: the same backlog and live workload."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bench.chameleon_run import (
    MARKER,
    RUNAS,
    STOP_GRACE_S,
    VERSION,
    Chameleon,
    Usage,
    config,
    ensure_venv,
)
from bench.env import TABLE
from bench.lag import Probe, percentiles
from bench.mysql import COLUMNS, MY_DDL, MyPacedWriter, _canon, write_my_backlog
from bench.procstat import server_cpu_s
from bench.report import RESULTS, Result
from bench.verify import Check
from bench.workload import BacklogSpec
from cdc_sync.testing.myserver import MyServer, running_mariadb
from cdc_sync.testing.pgserver import PgServer, running_pg

PG_TABLE = f"crm.{TABLE}"  # schema_mappings crm → crm in the target database hub
_TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    """CPU seconds of one process (all its threads: mariadbd is one process)."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(f[11]) + int(f[12])) / _TICK


@dataclass
class Env:
    my: MyServer
    pg: PgServer
    target_dsn: str
    ch: Chameleon

    def cpu(self) -> tuple[float, float]:
        pid = self.my._proc.pid if self.my._proc else -1
        return _cpu(pid), server_cpu_s(self.pg)


@contextlib.contextmanager
def chameleon_env(mode: str, r: Result) -> Iterator[Env | None]:
    """Venv, servers, the two source tables, and create_replica_schema, add_source and
    init_replica on the empty tables. Yields None (with a failed Check in ``r``) on failure."""
    why = ensure_venv()
    if why:
        r.checks.append(Check("pg_chameleon install", False, why))
        yield None
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    log = RESULTS / f"chameleon-{mode}.log"
    log.unlink(missing_ok=True)
    r.notes.append(f"pg_chameleon {VERSION} log: {log}")
    with tempfile.TemporaryDirectory() as tmp, running_mariadb() as my, running_pg() as pg:
        my.create_database("crm")
        target_dsn = pg.create_database("hub")
        with my.connect("crm") as c, c.cursor() as cur:
            cur.execute(MY_DDL)
            cur.execute(f"CREATE TABLE {MARKER} (id int PRIMARY KEY) ENGINE=InnoDB")
        ch = Chameleon(Path(tmp), log)
        ch.write_config(config(Path(tmp), my, pg))
        t0 = time.monotonic()
        for command in ("create_replica_schema", "add_source", "init_replica"):
            why = ch.run(command)
            if why:
                r.checks.append(Check(command, False, why))
                yield None
                return
        r.figures["init_s"] = round(time.monotonic() - t0, 2)
        env = Env(my, pg, target_dsn, ch)
        try:
            yield env
        finally:
            if ch.alive():
                ch.stop_replica(30)


def _wait_pg(dsn: str, sql: str, until: float, ch: Chameleon) -> float | None:
    """Seconds until ``sql`` returns a row (polled every 10 ms); None on timeout or when the
    replica process died."""
    t0 = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as c:
        while time.monotonic() < until:
            with contextlib.suppress(psycopg.errors.UndefinedTable):
                if c.execute(sql).fetchone():
                    return time.monotonic() - t0
            if not ch.alive():
                return None
            time.sleep(0.01)
    return None


def compare(my: MyServer, target_dsn: str) -> Check:
    """Every row and column of crm.customers in MariaDB and in PostgreSQL, by id, canonical
    text (``bench.mysql._canon``: timestamps as UTC, booleans as 0/1, numbers as text).
    pg_chameleon makes ``timestamp`` a ``timestamp without time zone`` holding the UTC value,
    which ``_canon`` reads as UTC, as it reads MariaDB's with ``time_zone = '+00:00'``."""
    with my.connect("crm") as c, c.cursor() as cur:
        cur.execute("SET time_zone = '+00:00'")
        cur.execute(f"SELECT {COLUMNS} FROM {TABLE} ORDER BY id")
        src = {int(row[0]): _canon(row) for row in cur.fetchall()}
    try:
        with psycopg.connect(target_dsn) as t:
            t.execute("SET TimeZone = 'UTC'")
            rows = t.execute(f"SELECT {COLUMNS} FROM {PG_TABLE} ORDER BY id").fetchall()
    except psycopg.Error as e:
        return Check("content", False, f"target {PG_TABLE}: {e}")
    tgt = {int(row[0]): _canon(row) for row in rows}
    missing = sorted(src.keys() - tgt.keys())
    extra = sorted(tgt.keys() - src.keys())
    diff = [k for k in sorted(src.keys() & tgt.keys()) if src[k] != tgt[k]]
    if not (missing or extra or diff):
        return Check("content", True, f"{len(src)} rows identical (every column, by id)")
    ex = [f"source {src[k]} / target {tgt[k]}" for k in diff[:3]]
    return Check(
        "content",
        False,
        f"source {len(src)} rows, target {len(tgt)}: missing {len(missing)} "
        f"{missing[:5]}, extra {len(extra)} {extra[:5]}, different {len(diff)} {ex}",
    )


def _target_types(dsn: str) -> str:
    """How pg_chameleon mapped the columns (for the report: the compare normalises these)."""
    with psycopg.connect(dsn) as c:
        rows = c.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (PG_TABLE,),
        ).fetchall()
    return f"target {PG_TABLE}: " + ", ".join(f"{n} {t}" for n, t in rows)


def _usage_figures(r: Result, u: Usage, stop_s: float, forced: int) -> None:
    r.figures["peak_rss_mb"] = round(max(u.peak_tree_pss_mb, u.max_rss_mb), 1)
    r.figures["max_process_rss_mb"] = round(u.max_rss_mb, 1)
    r.figures["cpu_s"] = round(u.cpu_s, 2)
    r.figures["cpu_sampled_s"] = round(u.sampled_cpu_s, 2)
    r.figures["stop_s"] = round(stop_s, 2)
    why = f", {forced} hung child process(es) killed after {STOP_GRACE_S:.0f} s" if forced else ""
    r.checks.append(
        Check("stop_replica", u.exit_code == 0 and not forced, f"exit {u.exit_code}{why}")
    )


def _server_figures(r: Result, env: Env, before: tuple[float, float]) -> None:
    my, pg = env.cpu()
    r.figures["source_mariadb_cpu_s"] = round(my - before[0], 2)
    r.figures["target_pg_cpu_s"] = round(pg - before[1], 2)


_NOTE = (
    "pg_chameleon: start_replica in the foreground (log_dest stdout) = a main process plus "
    "forked read (binlog → sch_chameleon log tables in PG) and replay (PL/pgSQL "
    "fn_replay_mysql in the target) processes; cpu_s = os.wait4 on the main process, which "
    "includes the read/replay children it reaps at stop_replica; peak_rss_mb = peak of the "
    "tree's summed PSS sampled every 0.2 s; the replay work inside PostgreSQL shows in "
    "target_pg_cpu_s. Settings: config-example defaults (replica_batch_size 10000, "
    "replay_max_rows 10000, sleep_loop 1 s, tinyint(1) → boolean) except on_error_read: "
    "exit (its default, continue, swallows stop_replica's SIGTERM in the read process). "
    f"Runs as {RUNAS} (it refuses root)"
)


def drain(opts: Any) -> Result:
    """Backlog and a marker row written to MariaDB after init_replica, while the replica is
    stopped; the clock runs from start_replica until the marker row is in PostgreSQL (replay
    applies events in binlog order across tables, so the backlog is in before it)."""
    r = Result("chameleon-drain")
    with chameleon_env("drain", r) as env:
        if env is None:
            return r
        b = write_my_backlog(env.my, BacklogSpec().scaled(opts.scale))
        with env.my.connect("crm") as c, c.cursor() as cur:
            cur.execute(f"INSERT INTO {MARKER} VALUES (1)")
        r.figures["row_changes"] = b.changes
        r.figures["source_transactions"] = b.transactions
        r.figures["workload_write_s"] = round(b.seconds, 2)
        before = env.cpu()
        env.ch.start_replica()
        done = _wait_pg(
            env.target_dsn,
            f"SELECT 1 FROM crm.{MARKER}",
            env.ch.started + opts.timeout,
            env.ch,
        )
        wall = time.monotonic() - env.ch.started if done is not None else None
        _server_figures(r, env, before)
        u, stop_s = env.ch.stop_replica()
        r.figures["wall_s"] = round(wall, 2) if wall else None
        r.figures["rows_per_s"] = round(b.changes / wall) if wall else None
        _usage_figures(r, u, stop_s, env.ch.forced)
        r.checks.insert(
            0, Check("caught up", wall is not None, f"marker row in PG within {opts.timeout} s")
        )
        r.checks.append(compare(env.my, env.target_dsn))
        r.notes.append(_target_types(env.target_dsn))
    r.notes.append(_NOTE)
    return r


def live(opts: Any) -> Result:
    """Replica running (a warm-up marker row seen in PG first); MyPacedWriter on MariaDB;
    the lag probe on crm.customers in PostgreSQL; stop_replica at the end."""
    r = Result("chameleon-live")
    with chameleon_env("live", r) as env:
        if env is None:
            return r
        env.ch.start_replica()
        with env.my.connect("crm") as c, c.cursor() as cur:
            cur.execute(f"INSERT INTO {MARKER} VALUES (0)")
        ready = _wait_pg(
            env.target_dsn, f"SELECT 1 FROM crm.{MARKER}", time.monotonic() + 120, env.ch
        )
        if ready is None:
            u, _ = env.ch.stop_replica(30)
            r.checks.append(
                Check("replica ready", False, f"warm-up row not in PG (exit {u.exit_code})")
            )
            return r
        r.figures["first_change_visible_s"] = round(ready, 2)
        probe = Probe(env.target_dsn, table=PG_TABLE)
        probe.start()
        w = MyPacedWriter(env.my, opts.rate, opts.tx_rows, opts.duration, first_id=1)
        before = env.cpu()
        w.start()
        w.join()
        caught = _wait_pg(
            env.target_dsn,
            f"SELECT 1 FROM {PG_TABLE} WHERE id = {w.last_id}",
            time.monotonic() + 120,
            env.ch,
        )
        time.sleep(0.1)  # let the probe see the last row too
        probe.stop()
        _server_figures(r, env, before)
        u, stop_s = env.ch.stop_replica()
        lags, unseen = probe.lags_ms(w.commits)
        p = percentiles(lags)
        r.figures.update(
            {
                "rows_written": w.rows,
                "write_rate_rows_per_s": round(w.rows / w.seconds) if w.seconds else None,
                "lag_p50_ms": round(p["p50"], 1),
                "lag_p99_ms": round(p["p99"], 1),
                "lag_max_ms": round(p["max"], 1),
                "catch_up_after_writer_s": round(caught, 2) if caught is not None else None,
            }
        )
        _usage_figures(r, u, stop_s, env.ch.forced)
        r.checks.insert(0, Check("caught up", unseen == 0, f"{unseen} transactions not seen"))
        if w.errors:
            r.checks.append(Check("writer", False, repr(w.errors[0])))
        if probe.errors:
            r.checks.append(Check("probe", False, repr(probe.errors[0])))
        r.checks.append(compare(env.my, env.target_dsn))
    r.notes.append(_NOTE)
    return r
