"""The MariaDB target side of bench/to_mysql.py: servers, config, content and audit checks."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bench.daemon import Daemon
from bench.env import DDL, PIPELINE, TABLE
from bench.lag import percentiles
from bench.mysql import COLUMNS, MY_DDL, _canon
from bench.procstat import server_cpu_s as pg_cpu_s
from bench.verify import Comparison
from cdc_sync.testing.myserver import MyServer, running_mariadb
from cdc_sync.testing.pgserver import PgServer, running_pg

# The daemon's replica server_id differs from both MariaDB servers' (1, the default).
CONFIG = """\
sources:
  src: {{type: {source_type}, dsn: "${{BENCH_SRC_DSN}}"{server_id}}}
targets:
  tgt: {{type: mysql, dsn: "${{BENCH_TGT_DSN}}"}}
pipelines:
  {pipeline}:
    source: src
    target: tgt
    audit: {audit}
{batch}    tables:
      {source_table}: {{target: hub.{table}}}
logging: {{level: INFO, format: json}}
"""


@dataclass
class MyTargetEnv:
    """A source server (PostgreSQL or MariaDB) with ``crm.customers``, a MariaDB target with
    the empty database ``hub``, and the daemon's config."""

    source: PgServer | MyServer
    target: MyServer
    source_dsn: str
    target_dsn: str
    config: Path
    env: dict[str, str]
    logs: Path
    audit: str

    def daemon(self, step: str) -> Daemon:
        log = self.logs.with_name(f"{self.logs.name}-{step}.log")
        log.unlink(missing_ok=True)
        return Daemon(self.config, self.env, log)


@contextlib.contextmanager
def target_env(
    route: str, workdir: Path, logs: Path, audit: str, batch: dict[str, float] | None = None
) -> Iterator[MyTargetEnv]:
    """``route`` "pg": PostgreSQL source; "my": a second MariaDB server as the source."""
    with contextlib.ExitStack() as stack:
        tgt = stack.enter_context(running_mariadb())
        src: PgServer | MyServer
        if route == "pg":
            src = stack.enter_context(running_pg())
            source_dsn = src.create_database("crm")
            with psycopg.connect(source_dsn, autocommit=True) as c:
                c.execute(DDL)
            kind, server_id, source_table = "postgres", "", f"public.{TABLE}"
        else:
            src = stack.enter_context(running_mariadb())
            source_dsn = src.create_database("crm")
            with src.connect("crm") as c, c.cursor() as cur:
                cur.execute(MY_DDL)
            kind, server_id, source_table = "mysql", ", server_id: 4242", f"crm.{TABLE}"
        target_dsn = tgt.create_database("hub")
        b = ""
        if batch:
            b = "    batch: {" + ", ".join(f"{k}: {v}" for k, v in batch.items()) + "}\n"
        config = workdir / "bench.yaml"
        config.write_text(
            CONFIG.format(
                source_type=kind,
                server_id=server_id,
                pipeline=PIPELINE,
                audit=audit,
                batch=b,
                source_table=source_table,
                table=TABLE,
            )
        )
        env = {**os.environ, "BENCH_SRC_DSN": source_dsn, "BENCH_TGT_DSN": target_dsn}
        yield MyTargetEnv(src, tgt, source_dsn, target_dsn, config, env, logs, audit)


def source_rows(env: MyTargetEnv) -> Iterator[tuple[Any, ...]]:
    if isinstance(env.source, MyServer):
        yield from my_rows(env.source, "crm")
        return
    with psycopg.connect(env.source_dsn) as c:
        c.execute("SET TimeZone = 'UTC'")
        with c.cursor(name="bench_to_mysql") as cur:
            cur.itersize = 20_000
            cur.execute(f"SELECT {COLUMNS} FROM {TABLE} ORDER BY id")
            yield from cur


def my_rows(server: MyServer, db: str) -> Iterator[tuple[Any, ...]]:
    # A session in UTC: TIMESTAMP values come back as the UTC wall time (naive), which
    # _canon reads as UTC; the server's own time zone never enters.
    with server.connect(db) as c, c.cursor() as cur:
        cur.execute("SET time_zone = '+00:00'")
        cur.execute(f"SELECT {COLUMNS} FROM {TABLE} ORDER BY id")
        yield from cur.fetchall()


def compare_rows(src: Iterable[tuple[Any, ...]], tgt: Iterable[tuple[Any, ...]]) -> Comparison:
    """Merge-join two id-ordered row streams on their engine-neutral text (bench.mysql._canon:
    UTC ISO timestamps, booleans as 0/1, decimals as text); sha256 over each side."""
    out = Comparison()
    hs, ht = hashlib.sha256(), hashlib.sha256()

    def canon(rows: Iterable[tuple[Any, ...]], h: Any) -> Iterator[tuple[int, str]]:
        for row in rows:
            text = _canon(row)
            h.update(text.encode() + b"\n")
            yield int(row[0]), text

    a_it, b_it = canon(src, hs), canon(tgt, ht)
    a, b = next(a_it, None), next(b_it, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            assert a is not None
            out.missing += 1
            out.source_rows += 1
            _note(out, f"missing in target: {a[1]}")
            a = next(a_it, None)
        elif a is None or b[0] < a[0]:
            out.extra += 1
            out.target_rows += 1
            _note(out, f"extra in target: {b[1]}")
            b = next(b_it, None)
        else:
            if a[1] != b[1]:
                out.different += 1
                _note(out, f"differs: source {a[1]} / target {b[1]}")
            out.source_rows += 1
            out.target_rows += 1
            a, b = next(a_it, None), next(b_it, None)
    out.source_sha256, out.target_sha256 = hs.hexdigest(), ht.hexdigest()
    return out


def _note(out: Comparison, text: str, limit: int = 5) -> None:
    if len(out.examples) < limit:
        out.examples.append(text)


def my_audit_counts(target: MyServer, pipeline: str) -> dict[str, int]:
    """``bench.verify.audit_counts`` for a MariaDB target (the state tables live in ``hub``)."""
    with target.connect("hub") as c, c.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema = DATABASE() AND table_name = 'cdc_sync_audit'"
        )
        row = cur.fetchone()
        if not row or not row[0]:
            return {}
        cur.execute(
            "SELECT op, outcome, count(*) FROM cdc_sync_audit WHERE pipeline = %s "
            "GROUP BY op, outcome ORDER BY op, outcome",
            (pipeline,),
        )
        return {f"{op}/{outcome}": int(n) for op, outcome, n in cur.fetchall()}


def my_audit_lag_ms(target: MyServer, pipeline: str, since: float) -> dict[str, float] | None:
    """applied_at - committed_at (both DATETIME(6) in UTC) of audit rows committed since
    ``since`` (epoch seconds); None when there are none."""
    with target.connect("hub") as c, c.cursor() as cur:
        cur.execute("SET time_zone = '+00:00'")
        cur.execute(
            "SELECT TIMESTAMPDIFF(MICROSECOND, committed_at, applied_at) / 1000 "
            "FROM cdc_sync_audit WHERE pipeline = %s AND committed_at >= FROM_UNIXTIME(%s)",
            (pipeline, since),
        )
        lags = [float(r[0]) for r in cur.fetchall() if r[0] is not None]
    return percentiles(lags) if lags else None


def target_types(target: MyServer) -> str:
    """The column types the daemon chose for the target table (a note: the DDL mapping)."""
    with target.connect("hub") as c, c.cursor() as cur:
        cur.execute(
            "SELECT column_name, column_type FROM information_schema.columns "
            "WHERE table_schema = 'hub' AND table_name = %s ORDER BY ordinal_position",
            (TABLE,),
        )
        return ", ".join(f"{n} {t}" for n, t in cur.fetchall())


def server_cpu_s(server: PgServer | MyServer) -> float:
    """CPU seconds of the server so far: MariaDB is one multi-threaded process (its pid file);
    PostgreSQL is counted by bench.procstat (postmaster, children, reaped children)."""
    if isinstance(server, PgServer):
        return pg_cpu_s(server)
    try:
        pid = int((server.base / "mysqld.pid").read_text().split()[0])
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return float("nan")
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def server_errors(env: MyTargetEnv, lines: int = 3) -> str:
    """The last ERROR lines of both servers' logs: the daemon logs a MySQL error by number
    only (the server's text may carry row values), so a failed run's cause may be here."""
    out = []
    for name, server in (("source", env.source), ("target", env.target)):
        try:
            text = (server.base / "server.log").read_text(errors="replace")
        except OSError:
            continue
        errors = [ln for ln in text.splitlines() if "ERROR" in ln][-lines:]
        if errors:
            out.append(f"{name} server log: " + " ⏎ ".join(errors))
    return "; ".join(out)
