"""Malformed configs: exit 2 before connecting, the key path in the message, no secret
echoed (the DSNs carry a canary password and point at a port where nothing listens)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Report
from tests.faults.checks import CANARY_PASSWORD
from tests.integration.harness import sql

pytestmark = [pytest.mark.integration]

BASE = """
sources:
  src: {{type: postgres, dsn: "{src}"}}
targets:
  tgt: {{type: postgres, dsn: "${{TGT_DSN}}"}}
pipelines:
  p1:
    source: src
    target: tgt
{extra}
    tables:
      {table}: {{{columns}}}
"""
NOWHERE = f"postgresql://cdc:{CANARY_PASSWORD}@127.0.0.1:1/crm"
ENV_SRC = "${SRC_DSN}"

CASES = {
    "unknown_key": (
        {"extra": "    batch: {max_rowz: 10}"},
        "pipelines.p1.batch.max_rowz: unknown key",
    ),
    "wrong_type": (
        {"extra": "    batch: {max_rows: many}"},
        "pipelines.p1.batch.max_rows: Input should be a valid integer",
    ),
    "sql_injection_table_name": (
        {"table": '"public.crm\\"; DROP TABLE x; --"'},
        "pipelines.p1.tables: expected schema.table names",
    ),
    "literal_password": (
        {"src": NOWHERE},
        "sources.src.dsn: a literal password in the config file is refused",
    ),
    "missing_ca_file": (
        {"src": ENV_SRC + "?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"},
        "sources.src.dsn: sslrootcert file /nonexistent/ca.pem does not exist",
    ),
    "bad_mask_rule": (
        {"columns": "columns: {phone: {transforms: [{mask: {keep_lats: 4}}]}}"},
        "pipelines.p1.tables.public.customers.columns.phone.transforms",
    ),
}


def _run(tmp: Path, text: str, env: dict[str, str]) -> tuple[int, str, float]:
    cfg = tmp / "c.yaml"
    cfg.write_text(text)
    t = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "cdc_sync", "run", "-c", str(cfg)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return res.returncode, res.stdout + res.stderr, time.monotonic() - t


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_config_exits_2_naming_the_key(tmp_path: Path, case: str, report: Report) -> None:
    parts, expected = CASES[case]
    fields = {"src": ENV_SRC, "extra": "", "table": "public.customers", "columns": ""} | parts
    env = {"SRC_DSN": NOWHERE, "TGT_DSN": NOWHERE}
    code, out, seconds = _run(tmp_path, BASE.format(**fields), env)
    leaked = int(CANARY_PASSWORD in out)
    report(rows=0, leaked=leaked, message=f"exit {code} in {seconds:.1f} s: {out.strip()[:90]}")
    assert code == 2, out
    assert expected in out, out
    assert "connection" not in out.lower(), "a config problem must be found before connecting"
    assert not leaked


def test_a_column_missing_from_the_catalog_exits_2_naming_it(
    tmp_path: Path, source_dsn: str, target_dsn: str, report: Report
) -> None:
    sql(source_dsn, "CREATE TABLE customers (id int PRIMARY KEY, phone text)")
    fields = {
        "src": ENV_SRC,
        "extra": "",
        "table": "public.customers",
        "columns": "columns: {phon: {transforms: [{mask: {keep_last: 4}}]}}",
    }
    env = {"SRC_DSN": source_dsn, "TGT_DSN": target_dsn}
    code, out, seconds = _run(tmp_path, BASE.format(**fields), env)
    report(rows=0, message=f"exit {code} in {seconds:.1f} s: {out.strip()[-90:]}")
    assert code == 2, out
    assert "pipelines.p1.tables.public.customers.columns.phon" in out, out
