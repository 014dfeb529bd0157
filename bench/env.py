"""Two throwaway servers (source, target), the CRM table and the daemon's YAML config."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench.daemon import Daemon
from cdc_sync.testing.pgserver import PgServer, running_pg

PIPELINE = "bench"
TABLE = "customers"

DDL = f"""
CREATE TABLE {TABLE} (
    id bigint PRIMARY KEY,
    name text NOT NULL,
    phone varchar(32),
    email text,
    status smallint NOT NULL DEFAULT 0,
    do_not_call boolean NOT NULL DEFAULT false,
    balance numeric(12,2) NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""

# The example rule set on the CRM table: rename + hash, phone normalisation + partial
# mask, e-mail cleansing + validation, a value map, a cast, a dropped and a constant column.
RULES = """\
        columns:
          name: {target: contact_name, transforms: [{hash: {key: "${BENCH_HASH_KEY}"}}]}
          phone:
            target: contact_phone
            transforms: [{phone: {region: GB, format: e164}}, {mask: {keep_first: 3, keep_last: 4}}]
          email: {transforms: [lower, trim, {validate: email}]}
          status: {map: {0: new, 1: active, 2: dormant, 3: do_not_call}, default: unknown}
          balance: {cast: "decimal(14,2)"}
          do_not_call: {drop: true}
          source_system: {value: crm}
"""
HASH_KEY = "bench-hash-key-0123456789abcdef"

CONFIG = """\
sources:
  src: {{type: postgres, dsn: "${{BENCH_SRC_DSN}}"}}
targets:
  tgt: {{type: postgres, dsn: "${{BENCH_TGT_DSN}}"}}
pipelines:
  {pipeline}:
    source: src
    target: tgt
    audit: {audit}
{batch}    tables:
      public.{table}:{rules}
logging: {{level: INFO, format: json}}
"""


@dataclass
class BenchEnv:
    source: PgServer
    target: PgServer
    source_dsn: str
    target_dsn: str
    config: Path
    env: dict[str, str]
    logs: Path
    audit: str
    rules: bool = False

    def daemon(self, step: str) -> Daemon:
        """A daemon whose output goes to ``<logs>-<step>.log`` (overwritten)."""
        log = self.logs.with_name(f"{self.logs.name}-{step}.log")
        log.unlink(missing_ok=True)
        return Daemon(self.config, self.env, log)

    def source_conn(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.source_dsn)

    def target_conn(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.target_dsn)


def config_text(audit: str, batch: dict[str, float] | None = None, rules: bool = False) -> str:
    b = ""
    if batch:
        inner = ", ".join(f"{k}: {v}" for k, v in batch.items())
        b = f"    batch: {{{inner}}}\n"
    r = "\n" + RULES.rstrip("\n") if rules else " {}"
    return CONFIG.format(pipeline=PIPELINE, audit=audit, batch=b, table=TABLE, rules=r)


@contextlib.contextmanager
def bench_env(
    workdir: Path,
    logs: Path,
    audit: str,
    batch: dict[str, float] | None = None,
    rules: bool = False,
) -> Iterator[BenchEnv]:
    """Source and target servers with databases ``crm`` / ``hub`` and the empty CRM table."""
    with running_pg() as src, running_pg() as tgt:
        source_dsn = src.create_database("crm")
        target_dsn = tgt.create_database("hub")
        with psycopg.connect(source_dsn, autocommit=True) as c:
            c.execute(DDL)
        config = workdir / "bench.yaml"
        config.write_text(config_text(audit, batch, rules))
        env = {**os.environ, "BENCH_SRC_DSN": source_dsn, "BENCH_TGT_DSN": target_dsn}
        env["BENCH_HASH_KEY"] = HASH_KEY
        yield BenchEnv(src, tgt, source_dsn, target_dsn, config, env, logs, audit, rules)
