"""MariaDB's own replication (MariaDB→MariaDB) on the same backlog: the MySQL yardstick."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pymysql
import pymysql.cursors

from bench.lag import Probe, percentiles
from bench.mysql import COLUMNS, MY_DDL, MyPacedWriter, write_my_backlog
from bench.report import Result
from bench.verify import Check
from bench.workload import BacklogSpec
from cdc_sync.testing.myserver import MyServer, running_mariadb

DB = "crm"
TABLE = "customers"
_MARKER = "bench_marker"
_TICK = os.sysconf("SC_CLK_TCK")
_REPL_USER, _REPL_PASSWORD = "repl", "repl-bench"

# The replica: its own server_id, no binlog of its own (nothing chains from it, and the
# daemon-fed targets do not write one either), relay log named so the host name does not
# leak into file names. Parallel replication stays at MariaDB's default (serial,
# slave_parallel_threads=0); the figures report what the server ran with.
REPLICA = {
    "server_id": "2",
    "log_bin": "",
    "log_slave_updates": "",
    "relay_log": "replica-relay-bin",
}


def _one(server: MyServer, sql: str, args: tuple[object, ...] = ()) -> Any:
    """First column of the first row (None when there is none)."""
    with server.connect() as c, c.cursor() as cur:
        cur.execute(sql, args)
        row = cur.fetchone()
    return row[0] if row else None


def _pid(server: MyServer) -> int | None:
    try:
        return int((server.base / "mysqld.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def server_cpu_s(server: MyServer) -> float:
    """utime + stime of the mariadbd process: one process, every thread counted in it."""
    pid = _pid(server)
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / _TICK  # fields 14, 15 of stat(5)


def vm_hwm_mb(server: MyServer) -> float:
    """Peak RSS of the mariadbd process so far (VmHWM), MB."""
    try:
        for line in Path(f"/proc/{_pid(server)}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return float("nan")


def slave_status(replica: MyServer) -> dict[str, Any]:
    with replica.connect() as c, c.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute("SHOW SLAVE STATUS")
        row = cur.fetchone()
    return dict(row) if row else {}


def _replica_problem(replica: MyServer) -> str:
    """Empty while both replication threads run without errors, else what is wrong."""
    s = slave_status(replica)
    if not s:
        return "no replication configured"
    parts = [f"IO {s.get('Slave_IO_Running')}", f"SQL {s.get('Slave_SQL_Running')}"]
    for k in ("Last_IO_Error", "Last_SQL_Error"):
        if s.get(k):
            parts.append(f"{k}: {s[k]}")
    ok = s.get("Slave_IO_Running") == "Yes" and s.get("Slave_SQL_Running") == "Yes"
    return "" if ok and len(parts) == 2 else "; ".join(parts)


def _threads_check(replica: MyServer) -> Check:
    problem = _replica_problem(replica)
    return Check("replica threads", not problem, problem or "IO and SQL threads running")


def _binlog_bytes(server: MyServer) -> int:
    with server.connect() as c, c.cursor() as cur:
        cur.execute("SHOW BINARY LOGS")
        return sum(int(r[1]) for r in cur.fetchall())


def _catch_up(source: MyServer, replica: MyServer, timeout: float) -> str:
    """Waits until the replica applied everything the source has binlogged; '' when done."""
    pos = _one(source, "SELECT @@gtid_binlog_pos")
    got = _one(replica, "SELECT MASTER_GTID_WAIT(%s, %s)", (pos, timeout))
    if got == 0:
        return ""
    return f"not at source GTID {pos} after {timeout:.0f} s: {_replica_problem(replica)}"


@contextlib.contextmanager
def replicated_pair(timeout: float = 60.0) -> Iterator[tuple[MyServer, MyServer]]:
    """Source (the stock throwaway server: binlog ROW/FULL, server_id 1) and a replica
    following it by GTID from the start of its binlog, so database ``crm``, the CRM table and
    the marker table are created on the source and reach the replica by replication."""
    with running_mariadb() as src, running_mariadb(extra=REPLICA) as rep:
        src.create_user(_REPL_USER, _REPL_PASSWORD)
        with rep.connect() as c, c.cursor() as cur:
            # An empty gtid_slave_pos + slave_pos = from the first event of the source.
            cur.execute(
                "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = %s, "
                "MASTER_USER = %s, MASTER_PASSWORD = %s, MASTER_USE_GTID = slave_pos",
                (src.port, _REPL_USER, _REPL_PASSWORD),
            )
            cur.execute("START SLAVE")
        src.create_database(DB)
        with src.connect(DB) as c, c.cursor() as cur:
            cur.execute(MY_DDL)
            cur.execute(f"CREATE TABLE {_MARKER} (id int PRIMARY KEY) ENGINE=InnoDB")
        problem = _catch_up(src, rep, timeout)
        if problem:
            raise RuntimeError(f"replica setup: {problem}")
        yield src, rep


def _canon(v: Any) -> str:
    if v is None:
        return "\\N"
    return v.isoformat() if isinstance(v, datetime) else str(v)


def _rows(server: MyServer) -> Iterator[tuple[int, str]]:
    """(id, the row as text) in key order, streamed (unbuffered cursor), timestamps in UTC."""
    with server.connect(DB) as c, c.cursor(pymysql.cursors.SSCursor) as cur:
        cur.execute("SET time_zone = '+00:00'")
        cur.execute(f"SELECT {COLUMNS} FROM {TABLE} ORDER BY id")
        for row in cur:
            yield int(row[0]), "\t".join(_canon(v) for v in row)


def compare_my(source: MyServer, replica: MyServer, examples: int = 3) -> Check:
    """Every row and column of both MariaDB tables, merge-joined by id, sha256 of each side."""
    hs, ht = hashlib.sha256(), hashlib.sha256()
    n_src = n_tgt = missing = extra = different = 0
    notes: list[str] = []
    src, tgt = _rows(source), _rows(replica)
    a, b = next(src, None), next(tgt, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            assert a is not None
            missing, n_src = missing + 1, n_src + 1
            hs.update(a[1].encode() + b"\n")
            notes.append(f"missing in replica: {a[1]}")
            a = next(src, None)
        elif a is None or b[0] < a[0]:
            extra, n_tgt = extra + 1, n_tgt + 1
            ht.update(b[1].encode() + b"\n")
            notes.append(f"extra in replica: {b[1]}")
            b = next(tgt, None)
        else:
            if a[1] != b[1]:
                different += 1
                notes.append(f"differs: source {a[1]} / replica {b[1]}")
            hs.update(a[1].encode() + b"\n")
            ht.update(b[1].encode() + b"\n")
            n_src, n_tgt = n_src + 1, n_tgt + 1
            a, b = next(src, None), next(tgt, None)
    if not (missing or extra or different):
        return Check("content", True, f"{n_src} rows identical (sha256 {hs.hexdigest()[:16]})")
    detail = f"source {n_src} rows, replica {n_tgt}; missing {missing}, extra {extra}, "
    return Check("content", False, detail + f"different {different}; {notes[:examples]}")


def _replication_facts(r: Result, replica: MyServer) -> None:
    for v in ("slave_parallel_threads", "slave_parallel_mode", "slave_exec_mode"):
        r.figures[f"replica_{v}"] = _one(replica, f"SELECT @@{v}")
    r.notes.append(
        "MariaDB → MariaDB native replication (GTID, MASTER_USE_GTID=slave_pos), binlog ROW/FULL "
        "on the source; replica without a binlog of its own; parallel replication at MariaDB's "
        "defaults (slave_parallel_threads=0: one SQL thread)"
    )


def _cpu_figures(r: Result, src: MyServer, rep: MyServer, cpu0: tuple[float, float]) -> None:
    rep_cpu = server_cpu_s(rep) - cpu0[0]
    src_cpu = server_cpu_s(src) - cpu0[1]
    r.figures["cpu_s"] = round(rep_cpu, 2)
    r.figures["source_cpu_s"] = round(src_cpu, 2)
    r.figures["total_cpu_s"] = round(rep_cpu + src_cpu, 2)
    # mariadbd is one process holding the buffer pool: its RSS is not the replication's.
    r.figures["peak_rss_mb"] = None
    r.figures["replica_vm_hwm_mb"] = round(vm_hwm_mb(rep), 1)


def _cpu_note(r: Result) -> None:
    r.notes.append(
        "cpu_s = the replica mariadbd's CPU (/proc/<pid>/stat utime+stime) over the measured "
        "span, incl. the IO thread and the polling query; source_cpu_s = the source mariadbd's "
        "(binlog dump thread, plus the writer in live); peak_rss_mb: n/a (a server process, RSS "
        "is mostly the buffer pool), replica_vm_hwm_mb = the replica mariadbd's VmHWM at the end"
    )


def _drain(r: Result, src: MyServer, rep: MyServer, opts: Any) -> None:
    _replication_facts(r, rep)
    with rep.connect() as c, c.cursor() as cur:
        cur.execute("STOP SLAVE")
    log0 = _binlog_bytes(src)
    b = write_my_backlog(src, BacklogSpec().scaled(opts.scale))
    with src.connect(DB) as c, c.cursor() as cur:
        cur.execute(f"INSERT INTO {_MARKER} VALUES (1)")
    r.figures["row_changes"] = b.changes
    r.figures["source_transactions"] = b.transactions
    r.figures["inserts/updates/deletes"] = f"{b.inserts}/{b.updates}/{b.deletes}"
    r.figures["workload_write_s"] = round(b.seconds, 2)
    r.figures["source_binlog_mb"] = round((_binlog_bytes(src) - log0) / 1e6, 1)
    done: float | None = None
    problem = ""
    with rep.connect(DB) as c, c.cursor() as cur:
        cpu0 = server_cpu_s(rep), server_cpu_s(src)
        t0 = time.monotonic()
        cur.execute("START SLAVE")
        checked = t0
        while time.monotonic() - t0 < opts.timeout:
            cur.execute(f"SELECT 1 FROM {_MARKER} WHERE id = 1")
            if cur.fetchone():
                done = time.monotonic() - t0
                break
            if time.monotonic() - checked > 1.0:  # a stopped SQL thread would never finish
                checked = time.monotonic()
                problem = _replica_problem(rep)
                if problem:
                    break
            time.sleep(0.005)
    _cpu_figures(r, src, rep, cpu0)
    r.figures["wall_s"] = round(done, 2) if done else None
    r.figures["rows_per_s"] = round(b.changes / done) if done else None
    _cpu_note(r)
    r.notes.append("wall time from START SLAVE to the marker row (committed last) on the replica")
    detail = problem or f"within {opts.timeout:.0f} s"
    r.checks.append(Check("caught up", done is not None, detail))
    r.checks.append(_threads_check(rep))
    r.checks.append(compare_my(src, rep))


def _live(r: Result, src: MyServer, rep: MyServer, opts: Any) -> None:
    _replication_facts(r, rep)
    with src.connect(DB) as c, c.cursor() as cur:
        cur.execute(f"INSERT INTO {TABLE} (id, name) VALUES (0, 'warm-up')")
    problem = _catch_up(src, rep, 60)
    if problem:
        r.checks.append(Check("replica ready", False, problem))
        return
    probe = Probe(rep.dsn(DB))
    probe.start()
    w = MyPacedWriter(src, opts.rate, opts.tx_rows, opts.duration, first_id=1)
    cpu0 = server_cpu_s(rep), server_cpu_s(src)
    w.start()
    w.join()
    t_end = time.monotonic()
    caught_s: float | None = None
    while time.monotonic() - t_end < 120 and w.commits and probe.is_alive():
        if probe.samples and probe.samples[-1][1] >= w.commits[-1][0]:
            caught_s = time.monotonic() - t_end
            break
        time.sleep(0.02)
    time.sleep(0.1)
    probe.stop()
    _cpu_figures(r, src, rep, cpu0)
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
            "catch_up_after_writer_s": round(caught_s, 2) if caught_s is not None else None,
        }
    )
    _cpu_note(r)
    r.notes.append(
        "lag = first probe query (polling the replica's max(id)) that saw a source transaction's "
        "last row - the time its COMMIT returned at the source; resolution ~ poll interval"
    )
    ok = bool(w.commits) and unseen == 0
    r.checks.append(Check("caught up", ok, f"{unseen} of {len(w.commits)} transactions not seen"))
    r.checks.append(_threads_check(rep))
    if w.errors:
        r.checks.append(Check("writer", False, repr(w.errors[0])))
    if probe.errors:
        r.checks.append(Check("probe", False, repr(probe.errors[0])))
    r.checks.append(compare_my(src, rep))


def _run(name: str, body: Any, opts: Any) -> Result:
    r = Result(name)
    try:
        with replicated_pair() as (src, rep):
            body(r, src, rep, opts)
    except (pymysql.MySQLError, RuntimeError, OSError, subprocess.SubprocessError) as e:
        r.checks.append(Check("run", False, f"{type(e).__name__}: {e}"))
    return r


def drain(opts: Any) -> Result:
    """Backlog + marker written while the replica is stopped; clock from START SLAVE until the
    marker is visible on the replica (one SQL thread commits in source order)."""
    return _run("mariadb-native-drain", _drain, opts)


def live(opts: Any) -> Result:
    """Replication running; paced writer on the source; commit-to-visible lag on the replica."""
    return _run("mariadb-native-live", _live, opts)
