"""Native PostgreSQL logical replication on the same workloads: the yardstick for PG→PG."""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from bench.env import DDL, TABLE, BenchEnv, bench_env
from bench.lag import Probe, percentiles
from bench.procstat import server_cpu_s
from bench.report import RESULTS, Result
from bench.verify import Check, compare_tables, content_check
from bench.workload import BacklogSpec, PacedWriter, write_backlog
from cdc_sync.testing.pgserver import PgServer

_SLOT = "native_bench"
_MARKER = "bench_marker"
Conn = psycopg.Connection[tuple[object, ...]]


def _children(server: PgServer, word: str) -> list[int]:
    """Pids of the postmaster's children whose title contains ``word``."""
    try:
        pm = (server.datadir / "postmaster.pid").read_text().split()[0]
    except (OSError, IndexError):
        return []
    out = []
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit():
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[1] != pm:
                continue
            if word in (entry / "cmdline").read_bytes().decode(errors="replace"):
                out.append(int(entry.name))
        except (OSError, IndexError):
            continue
    return out


def _hwm_mb(pids: list[int]) -> float | None:
    """Sum of the processes' VmHWM (peak RSS, incl. the shared buffers they touched), MB."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            return None
    return round(total / 1024, 1) if pids else None


def _publish(env: BenchEnv, tables: str) -> None:
    """Publication and slot before any workload, so the subscription misses nothing."""
    with psycopg.connect(env.source_dsn, autocommit=True) as c:
        c.execute(f"CREATE PUBLICATION {_SLOT} FOR TABLE {tables}")
        c.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (_SLOT,))


def _subscribe(t: Conn, env: BenchEnv) -> None:
    t.execute(
        f"CREATE SUBSCRIPTION {_SLOT} CONNECTION '{env.source_dsn}' "
        f"PUBLICATION {_SLOT} WITH (create_slot = false, slot_name = '{_SLOT}', "
        "copy_data = false)"
    )


def _unsubscribe(r: Result, t: Conn, env: BenchEnv) -> None:
    """Reads the workers' peak RSS while they still exist, then drops the subscription
    (keeping the slot: the source server is thrown away anyway)."""
    r.figures["peak_rss_mb"] = None
    r.figures["apply_worker_vm_hwm_mb"] = _hwm_mb(_children(env.target, "logical replication"))
    r.figures["walsender_vm_hwm_mb"] = _hwm_mb(_children(env.source, "walsender"))
    t.execute(f"ALTER SUBSCRIPTION {_SLOT} DISABLE")
    t.execute(f"ALTER SUBSCRIPTION {_SLOT} SET (slot_name = NONE)")
    t.execute(f"DROP SUBSCRIPTION {_SLOT}")


def _cpu_figures(r: Result, env: BenchEnv, cpu0: tuple[float, float]) -> None:
    src = server_cpu_s(env.source) - cpu0[0]
    tgt = server_cpu_s(env.target) - cpu0[1]
    r.figures["source_pg_cpu_s"] = round(src, 2)
    r.figures["target_pg_cpu_s"] = round(tgt, 2)
    r.figures["cpu_s"] = round(src + tgt, 2)


_NOTE_CPU = (
    "cpu_s = source + target PostgreSQL servers' CPU over the measured span (postmaster and "
    "children, /proc), incl. the polling query; peak_rss_mb: n/a (server processes); "
    "apply_worker_vm_hwm_mb / walsender_vm_hwm_mb = their VmHWM, which counts the shared "
    "buffers they touched"
)


def _drain(name: str, scale: float, timeout: float) -> Result:
    """The backlog is written while the subscription does not exist yet (its slot does, so
    nothing is lost), then ``CREATE SUBSCRIPTION`` starts the apply worker and the clock.
    Done = a marker row committed after the backlog is visible in the target: the apply
    worker commits in source commit order, so everything before it is applied too."""
    r = Result(name)
    spec = BacklogSpec().scaled(scale)
    with (
        tempfile.TemporaryDirectory() as tmp,
        bench_env(Path(tmp), RESULTS / name, "off") as env,
    ):
        with psycopg.connect(env.source_dsn, autocommit=True) as c:
            c.execute(f"CREATE TABLE {_MARKER} (id int PRIMARY KEY)")
        _publish(env, f"{TABLE}, {_MARKER}")
        with psycopg.connect(env.source_dsn, autocommit=True) as c:
            b = write_backlog(c, spec)
            c.execute(f"INSERT INTO {_MARKER} VALUES (1)")
        r.figures["row_changes"] = b.changes
        r.figures["source_transactions"] = b.transactions
        with psycopg.connect(env.target_dsn, autocommit=True) as t:
            t.execute(DDL)
            t.execute(f"CREATE TABLE {_MARKER} (id int PRIMARY KEY)")
            cpu0 = server_cpu_s(env.source), server_cpu_s(env.target)
            t0 = time.monotonic()
            _subscribe(t, env)
            done = None
            while time.monotonic() - t0 < timeout:
                if t.execute(f"SELECT 1 FROM {_MARKER}").fetchone():
                    done = time.monotonic() - t0
                    break
                time.sleep(0.005)
            r.figures["wall_s"] = round(done, 2) if done else None
            r.figures["rows_per_s"] = round(b.changes / done) if done else None
            _cpu_figures(r, env, cpu0)
            _unsubscribe(r, t, env)
        r.checks.append(Check("caught up", done is not None, f"within {timeout:.0f} s"))
        r.checks.append(content_check(compare_tables(env.source_dsn, env.target_dsn)))
        r.notes.append(
            "native = CREATE SUBSCRIPTION (pgoutput, one apply worker) on a pre-created slot; "
            "wall time from CREATE SUBSCRIPTION to the marker row being visible"
        )
        r.notes.append(_NOTE_CPU)
    return r


def native(opts: object, scale: float = 1.0, timeout: float = 1800.0) -> Result:
    """The ``native`` mode of bench.modes (result named ``native``)."""
    return _drain("native", scale, timeout)


def _guarded(name: str, fn: Callable[[], Result]) -> Result:
    """A failure of the servers or of replication becomes a failed check, not an exception."""
    try:
        return fn()
    except (psycopg.Error, OSError, RuntimeError, subprocess.SubprocessError) as e:
        r = Result(name)
        r.checks.append(Check("run", False, f"{type(e).__name__}: {e}"))
        return r


def drain(opts: Any) -> Result:
    return _guarded("pg-native-drain", lambda: _drain("pg-native-drain", opts.scale, opts.timeout))


def _wait(t: Conn, sql: str, want: int, timeout: float) -> float | None:
    """Seconds until ``sql`` returns at least ``want``, None on timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        row = t.execute(sql).fetchone()
        if row and row[0] is not None and int(str(row[0])) >= want:
            return time.monotonic() - t0
        time.sleep(0.01)
    return None


def live(opts: Any) -> Result:
    """Subscription running; a paced writer on the source; commit-to-visible lag in the target
    per source transaction (the probe of the other live modes); content checked."""
    return _guarded("pg-native-live", lambda: _live(opts))


def _live(opts: Any) -> Result:
    r = Result("pg-native-live")
    with (
        tempfile.TemporaryDirectory() as tmp,
        bench_env(Path(tmp), RESULTS / "pg-native-live", "off") as env,
    ):
        _publish(env, TABLE)
        with psycopg.connect(env.target_dsn, autocommit=True) as t:
            t.execute(DDL)
            _subscribe(t, env)
            with psycopg.connect(env.source_dsn, autocommit=True) as c:
                c.execute(f"INSERT INTO {TABLE} (id, name) VALUES (0, 'warm-up')")
            ready = _wait(t, f"SELECT count(*) FROM {TABLE} WHERE id = 0", 1, 60)
            if ready is None:
                r.checks.append(Check("subscription ready", False, "warm-up row not seen in 60 s"))
                _unsubscribe(r, t, env)
                return r
            r.figures["first_change_visible_s"] = round(ready, 2)
            probe = Probe(env.target_dsn)
            probe.start()
            w = PacedWriter(env.source_dsn, opts.rate, opts.tx_rows, opts.duration, first_id=1)
            cpu0 = server_cpu_s(env.source), server_cpu_s(env.target)
            w.start()
            w.join()
            caught = _wait(t, f"SELECT max(id) FROM {TABLE}", w.last_id, 120)
            time.sleep(0.1)  # let the probe see the last row too
            probe.stop()
            _cpu_figures(r, env, cpu0)
            _unsubscribe(r, t, env)
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
        ok = caught is not None and unseen == 0 and bool(w.commits)
        r.checks.append(Check("caught up", ok, f"{unseen} of {len(w.commits)} not seen"))
        if w.errors:
            r.checks.append(Check("writer", False, repr(w.errors[0])))
        if probe.errors:
            r.checks.append(Check("probe", False, repr(probe.errors[0])))
        r.checks.append(content_check(compare_tables(env.source_dsn, env.target_dsn)))
        r.notes.append(
            "native = CREATE SUBSCRIPTION (pgoutput, one apply worker, streaming off: PG 15 "
            "defaults) on a pre-created slot; lag = first probe query (target max(id)) that saw "
            "a source transaction's last row - the time its COMMIT returned at the source"
        )
        r.notes.append(_NOTE_CPU.replace("polling query", "writer's backend and the probe"))
    return r
