"""End-to-end helpers: configs, the daemon as a subprocess, exact content comparison."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

CONFIG = """
sources:
  src: {{type: postgres, dsn: "${{SRC_DSN}}"}}
targets:
  tgt: {{type: postgres, dsn: "${{TGT_DSN}}"}}
pipelines:
  {pipeline}:
    source: src
    target: tgt
    audit: {audit}
    batch: {{max_rows: {max_rows}, max_seconds: {max_seconds}, flush_rows: {flush_rows}}}
    retry: {{initial_seconds: 0.1, max_seconds: 1}}
    tables:
{tables}
logging: {{level: {level}, format: json}}
"""


def table_lines(tables: dict[str, str | None]) -> str:
    """The ``tables:`` entries of a pipeline (indented for the CONFIG templates)."""
    return "\n".join(
        f"      {t}: {{target: {tgt}}}" if tgt else f"      {t}: {{}}" for t, tgt in tables.items()
    )


class Cli:
    """The daemon CLI on ``self.config`` with ``self.env``; run stderr goes to ``self.log``."""

    config: Path
    env: dict[str, str]
    log: Path
    pipeline: str
    source_dsn: str
    target_dsn: str

    def _configure(
        self, tmp: Path, pipeline: str, text: str, source_dsn: str, target_dsn: str
    ) -> None:
        """Write the pipeline's config; the DSNs reach it through SRC_DSN / TGT_DSN."""
        self.config = tmp / f"{pipeline}.yaml"
        self.config.write_text(text)
        self.pipeline = pipeline
        self.source_dsn, self.target_dsn = source_dsn, target_dsn
        self.env = {**os.environ, "SRC_DSN": source_dsn, "TGT_DSN": target_dsn}
        self.log = tmp / f"{pipeline}.log"

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cdc_sync", *args, "-c", str(self.config)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def drain(self) -> subprocess.CompletedProcess[str]:
        res = self.cli("run", "--until-caught-up")
        with self.log.open("a") as f:
            f.write(res.stderr)
        assert res.returncode == 0, res.stderr[-3000:]
        return res

    def start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as f:
            return subprocess.Popen(
                [sys.executable, "-m", "cdc_sync", "run", "-c", str(self.config)],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=f,
            )


class Setup(Cli):
    """One pipeline between a source and a target database, driven through the CLI."""

    def __init__(
        self,
        tmp: Path,
        source_dsn: str,
        target_dsn: str,
        tables: dict[str, str | None],
        pipeline: str | None = None,
        audit: str = "row",
        max_rows: int = 20_000,
        max_seconds: float = 0.2,
        flush_rows: int = 5_000,
        level: str = "INFO",
    ) -> None:
        # Slots are per cluster: name the pipeline after the (per-test) source database.
        pipeline = pipeline or "p_" + source_dsn.rsplit("/", 1)[-1]
        text = CONFIG.format(
            pipeline=pipeline,
            audit=audit,
            max_rows=max_rows,
            max_seconds=max_seconds,
            flush_rows=flush_rows,
            tables=table_lines(tables),
            level=level,
        )
        self._configure(tmp, pipeline, text, source_dsn, target_dsn)


def sql(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for s in statements:
            conn.execute(s)  # type: ignore[arg-type]


def rows_as_text(dsn: str, table: str, order_by: str = "1") -> list[str]:
    """Each row as PostgreSQL's own text of the row: exact for every type, NaN included."""
    with psycopg.connect(dsn) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute("SET extra_float_digits = 3")
        conn.execute("SET IntervalStyle = 'postgres'")
        cur = conn.execute(f"SELECT t::text FROM {table} t ORDER BY {order_by}")  # type: ignore[arg-type]
        return [r[0] for r in cur.fetchall()]


def column_types(dsn: str, table: str) -> list[tuple[str, str, bool]]:
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (table,),
        )
        return [(r[0], r[1], r[2]) for r in cur.fetchall()]


def audit_rows(dsn: str, pipeline: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(
            "SELECT source_table, target_table, op, pk, source_tx, outcome "
            "FROM cdc_sync_audit WHERE pipeline = %s ORDER BY id",
            (pipeline,),
        )
        out = []
        for st, tt, op, pk, tx, outcome in cur.fetchall():
            out.append(
                {
                    "source_table": st,
                    "target_table": tt,
                    "op": op,
                    "pk": json.loads(pk) if isinstance(pk, str) else pk,
                    "source_tx": str(tx),
                    "outcome": outcome,
                }
            )
        return out


def wait_until(predicate: Any, timeout: float = 30, every: float = 0.1, why: Any = None) -> None:
    """``why``: called on a timeout; what it returns (the state seen, a log's tail) goes into
    the failure, so that a run on another machine can be read without rerunning it."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting" + (f"\n{why()}" if why else ""))
        time.sleep(every)


def log_tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout=30)


def slot_names(dsn: str) -> Sequence[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT slot_name FROM pg_replication_slots")]
