"""MySQL/MariaDB → PostgreSQL drain: the same 125k-change backlog written to a MariaDB source."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pymysql

from bench.env import PIPELINE, TABLE, BenchEnv
from bench.lag import Probe, percentiles
from bench.report import RESULTS, Result
from bench.verify import Check, audit_check, audit_counts
from bench.workload import Backlog, BacklogSpec, PacedWriter
from cdc_sync.testing.myserver import MyServer, running_mariadb
from cdc_sync.testing.pgserver import running_pg

MY_DDL = f"""
CREATE TABLE {TABLE} (
    id bigint PRIMARY KEY,
    name varchar(200) NOT NULL,
    phone varchar(32),
    email varchar(320),
    status smallint NOT NULL DEFAULT 0,
    do_not_call tinyint(1) NOT NULL DEFAULT 0,
    balance decimal(12,2) NOT NULL DEFAULT 0,
    updated_at timestamp(6) NOT NULL DEFAULT current_timestamp(6)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
"""
COLUMNS = "id, name, phone, email, status, do_not_call, balance, updated_at"

CONFIG = """\
sources:
  src: {{type: mysql, dsn: "${{BENCH_SRC_DSN}}", server_id: 4242}}
targets:
  tgt: {{type: postgres, dsn: "${{BENCH_TGT_DSN}}"}}
pipelines:
  {pipeline}:
    source: src
    target: tgt
    audit: {audit}
{batch}    tables:
      crm.{table}: {{target: public.{table}}}
logging: {{level: INFO, format: json}}
"""


@dataclass
class MyBenchEnv(BenchEnv):
    source: MyServer  # type: ignore[assignment]  # the one field that differs


@contextlib.contextmanager
def my_bench_env(
    workdir: Path, logs: Path, audit: str, batch: dict[str, float] | None = None
) -> Iterator[MyBenchEnv]:
    with running_mariadb() as src, running_pg() as tgt:
        source_dsn = src.create_database("crm")
        target_dsn = tgt.create_database("hub")
        with src.connect("crm") as c, c.cursor() as cur:
            cur.execute(MY_DDL)
        b = ""
        if batch:
            b = "    batch: {" + ", ".join(f"{k}: {v}" for k, v in batch.items()) + "}\n"
        config = workdir / "bench.yaml"
        config.write_text(CONFIG.format(pipeline=PIPELINE, audit=audit, batch=b, table=TABLE))
        env = {**os.environ, "BENCH_SRC_DSN": source_dsn, "BENCH_TGT_DSN": target_dsn}
        yield MyBenchEnv(src, tgt, source_dsn, target_dsn, config, env, logs, audit)


def _row(rng: random.Random, i: int) -> tuple[object, ...]:
    phone = None if rng.random() < 0.1 else f"+44 20 7946 {rng.randrange(10_000):04d}"
    email = None if rng.random() < 0.1 else f"c.{i}@example.com"
    balance = Decimal(rng.randrange(-100_000, 10_000_000)) / 100
    name = rng.choice(["Ada Lovelace", "Zoë O'Brien", "José Müller", "美咲 Turing"])
    return (i, name, phone, email, rng.randrange(4), int(rng.random() < 0.05), balance)


def write_my_backlog(server: MyServer, spec: BacklogSpec, seed: int = 2) -> Backlog:
    """Inserts in transactions of ``tx_rows`` (one multi-row INSERT each), then single-row
    UPDATEs and DELETEs, ``tx_rows`` statements per transaction: the PG workload's shape."""
    rng = random.Random(seed)
    out = Backlog()
    t0 = time.monotonic()
    ids = list(range(1, spec.inserts + 1))
    ins = (
        f"INSERT INTO {TABLE} (id, name, phone, email, status, do_not_call, balance) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s)"
    )
    upd = (
        f"UPDATE {TABLE} SET status = %s, balance = balance + %s, phone = %s, "
        "updated_at = current_timestamp(6) WHERE id = %s"
    )
    with server.connect("crm", autocommit=False) as c, c.cursor() as cur:
        for k in range(0, len(ids), spec.tx_rows):
            out.inserts += cur.executemany(ins, [_row(rng, i) for i in ids[k : k + spec.tx_rows]])
            c.commit()
            out.transactions += 1
        targets = [rng.choice(ids) for _ in range(spec.updates)]
        for k in range(0, len(targets), spec.tx_rows):
            for i in targets[k : k + spec.tx_rows]:
                delta = Decimal(rng.randrange(-5000, 5000)) / 100
                phone = f"+1 202 555 {rng.randrange(10_000):04d}"
                # Affected = changed rows: an UPDATE that changes nothing logs no row event.
                out.updates += cur.execute(upd, (rng.randrange(4), delta, phone, i))
            c.commit()
            out.transactions += 1
        dels = rng.sample(ids, spec.deletes)
        for k in range(0, len(dels), spec.tx_rows):
            for i in dels[k : k + spec.tx_rows]:
                out.deletes += cur.execute(f"DELETE FROM {TABLE} WHERE id = %s", (i,))
            c.commit()
            out.transactions += 1
    out.seconds = time.monotonic() - t0
    return out


def _canon(row: tuple[Any, ...]) -> str:
    """One row as text both engines agree on: timestamps as UTC ISO, numbers as text."""

    def one(v: Any) -> str:
        if isinstance(v, datetime):
            return (v if v.tzinfo else v.replace(tzinfo=UTC)).astimezone(UTC).isoformat()
        if isinstance(v, bool):
            return str(int(v))
        return "\\N" if v is None else str(v)

    return "\t".join(one(v) for v in row)


def compare_cross(env: MyBenchEnv) -> Check:
    """Every row and column of source (MariaDB) and target (PostgreSQL), by key, sha256."""
    with env.source.connect("crm") as c, c.cursor() as cur:
        cur.execute("SET time_zone = '+00:00'")
        cur.execute(f"SELECT {COLUMNS} FROM {TABLE} ORDER BY id")
        src = [_canon(r) for r in cur.fetchall()]
    with psycopg.connect(env.target_dsn) as t:
        t.execute("SET TimeZone = 'UTC'")
        tgt = [_canon(r) for r in t.execute(f"SELECT {COLUMNS} FROM {TABLE} ORDER BY id")]
    hs = hashlib.sha256("\n".join(src).encode()).hexdigest()
    ht = hashlib.sha256("\n".join(tgt).encode()).hexdigest()
    if hs == ht:
        return Check("content", True, f"{len(src)} rows identical (sha256 {hs[:16]})")
    diff = [f"source {a} / target {b}" for a, b in zip(src, tgt, strict=False) if a != b][:3]
    return Check("content", False, f"source {len(src)} rows, target {len(tgt)}; {diff}")


def _pymysql_version() -> str:
    return str(getattr(pymysql, "__version__", "?"))


def mysql_drain(opts: Any, drain_figures: Any) -> Result:
    """Backlog written to MariaDB while the daemon is stopped, then one timed drain into PG."""
    r = Result("mysql-drain")
    spec = BacklogSpec().scaled(opts.scale)
    with (
        tempfile.TemporaryDirectory() as tmp,
        my_bench_env(Path(tmp), RESULTS / "mysql-drain", opts.audit, opts.batch) as env,
    ):
        d = env.daemon("prime")
        st = d.run("run", "--until-caught-up", timeout=180)
        r.figures["prime_s"] = round(st.wall_s, 2)
        if st.exit_code != 0:
            r.checks.append(Check("prime", False, f"exit {st.exit_code}: {d.log_tail(12)}"))
            return r
        b = write_my_backlog(env.source, spec)
        r.figures["row_changes"] = b.changes
        r.figures["source_transactions"] = b.transactions
        r.figures["workload_write_s"] = round(b.seconds, 2)
        d = env.daemon("drain")
        st = d.run("run", "--until-caught-up", timeout=opts.timeout)
        drain_figures(r, d, st, b.changes)
        r.checks.append(compare_cross(env))
        counts = audit_counts(env.target_dsn, PIPELINE)
        r.checks.append(audit_check(counts, env.audit, b.changes, b.transactions))
    r.notes.append(f"source MariaDB (PyMySQL {_pymysql_version()}), target PostgreSQL")
    return r


class MyPacedWriter(PacedWriter):
    """The PG paced writer's schedule and bookkeeping, writing to MariaDB instead."""

    def __init__(
        self, server: MyServer, rate: float, tx_rows: int, duration: float, first_id: int
    ) -> None:
        super().__init__(server.dsn("crm"), rate, tx_rows, duration, first_id)
        self.server = server

    def _write(self) -> None:
        interval = self.tx_rows / self.rate
        sql = f"INSERT INTO {TABLE} (id, name, phone, email, status) VALUES (%s, %s, %s, %s, 1)"
        next_id = self.first_id
        with self.server.connect("crm", autocommit=False) as c, c.cursor() as cur:
            t0 = time.monotonic()
            k = 0
            while time.monotonic() - t0 < self.duration:
                delay = t0 + k * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                ids = range(next_id, next_id + self.tx_rows)
                cur.executemany(
                    sql, [(i, f"Live {i}", "+1 202 555 0100", f"l{i}@x.org") for i in ids]
                )
                c.commit()
                self.commits.append((ids[-1], time.time()))
                next_id, k = ids[-1] + 1, k + 1
            self.seconds = time.monotonic() - t0


def mysql_live(opts: Any, daemon_figures: Any) -> Result:
    """Daemon running; paced MariaDB writer; commit-to-visible lag in PostgreSQL per source
    transaction (the PG live mode's probe); SIGTERM at the end; content and audit checked."""
    r = Result("mysql-live")
    with (
        tempfile.TemporaryDirectory() as tmp,
        my_bench_env(Path(tmp), RESULTS / "mysql-live", opts.audit, opts.batch) as env,
    ):
        d = env.daemon("prime")
        st = d.run("run", "--until-caught-up", timeout=180)
        if st.exit_code != 0:
            r.checks.append(Check("prime", False, f"exit {st.exit_code}: {d.log_tail(12)}"))
            return r
        d = env.daemon("live")
        d.start("run")
        probe = Probe(env.target_dsn)
        probe.start()
        time.sleep(1.0)  # the daemon's start-up is not lag
        w = MyPacedWriter(env.source, opts.rate, opts.tx_rows, opts.duration, first_id=1)
        w.start()
        w.join()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (
            not probe.samples or probe.samples[-1][1] < w.commits[-1][0]
        ):
            time.sleep(0.05)
        time.sleep(0.1)
        probe.stop()
        alive = d.alive()
        st, stop_s = d.terminate(60) if alive else (d.wait(5), 0.0)
        lags, unseen = probe.lags_ms(w.commits)
        p = percentiles(lags)
        r.figures.update(
            {
                "rows_written": w.rows,
                "write_rate_rows_per_s": round(w.rows / w.seconds) if w.seconds else None,
                "lag_p50_ms": round(p["p50"], 1),
                "lag_p99_ms": round(p["p99"], 1),
                "lag_max_ms": round(p["max"], 1),
                "stop_s": round(stop_s, 2),
            }
        )
        daemon_figures(r, d, st)
        r.checks.append(Check("caught up", unseen == 0, f"{unseen} transactions not seen"))
        r.checks.append(Check("SIGTERM exit code", st.exit_code == 0, f"{st.exit_code}"))
        if w.errors:
            r.checks.append(Check("writer", False, repr(w.errors[0])))
        r.checks.append(compare_cross(env))
        counts = audit_counts(env.target_dsn, PIPELINE)
        r.checks.append(audit_check(counts, env.audit, w.rows, len(w.commits)))
    return r
