"""What ``check``, ``run``, ``status`` and ``offsets show`` tell a DBA, against real servers."""

from __future__ import annotations

import json
import signal
import time
from itertools import count
from pathlib import Path

import psycopg
import pytest

from cdc_sync.testing.myserver import MyServer
from cdc_sync.testing.pgserver import PgServer
from tests.integration.harness import Cli, Setup, kill, sql, wait_until
from tests.integration.routes import my_connect, server_id_extra

pytestmark = pytest.mark.integration

_roles = count(1)


class _Route(Cli):
    """One pipeline ``p`` from any source to any target, from a config text."""

    def __init__(self, tmp: Path, text: str, source_dsn: str, target_dsn: str) -> None:
        self._configure(tmp, "p", text, source_dsn, target_dsn)


def _schemata(server: MyServer) -> set[str]:
    with server.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA")
        return {str(r[0]) for r in cur.fetchall()}


def test_pg_to_mariadb_default_name_never_creates_a_database(
    tmp_path: Path, source_dsn: str, my_target_server: MyServer, my_target_dsn: str
) -> None:
    sql(source_dsn, "CREATE TABLE customers (id int PRIMARY KEY, v text)")
    sql(source_dsn, "INSERT INTO customers VALUES (1, 'a')")
    db = my_target_dsn.rsplit("/", 1)[-1]
    text = (
        'sources: {src: {type: postgres, dsn: "${SRC_DSN}"}}\n'
        'targets: {tgt: {type: mysql, dsn: "${TGT_DSN}"}}\n'
        "pipelines: {p: {source: src, target: tgt, tables: {public.customers: {}}}}\n"
    )
    r = _Route(tmp_path, text, source_dsn, my_target_dsn)
    res = r.cli("check")
    assert res.returncode == 1, res.stdout + res.stderr
    assert (
        "pipelines.p.tables.public.customers: the target has no database 'public' (the default "
        f"target name is the source's schema.table); set target: {db}.customers" in res.stdout
    )
    assert "cannot connect" not in res.stdout
    res = r.cli("run", "--until-caught-up")
    assert res.returncode != 0
    assert "no database 'public'" in res.stderr
    assert "public" not in _schemata(my_target_server)


def test_mariadb_to_pg_default_name_names_the_missing_schema(
    tmp_path: Path, my_source_dsn: str, target_dsn: str
) -> None:
    db = my_source_dsn.rsplit("/", 1)[-1]
    with my_connect(my_source_dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE calls (id int PRIMARY KEY, v text)")
    text = (
        f'sources: {{src: {{type: mysql, dsn: "${{SRC_DSN}}"{server_id_extra(my_source_dsn)}}}}}\n'
        'targets: {tgt: {type: postgres, dsn: "${TGT_DSN}"}}\n'
        f"pipelines: {{p: {{source: src, target: tgt, tables: {{{db}.calls: {{}}}}}}}}\n"
    )
    r = _Route(tmp_path, text, my_source_dsn, target_dsn)
    res = r.cli("check")
    assert res.returncode == 1, res.stdout + res.stderr
    problems = [line.strip() for line in res.stdout.splitlines() if line.lstrip().startswith("- ")]
    assert problems == [
        f"- target: pipelines.p.tables.{db}.calls: the target has no schema '{db}' (the "
        f"default target name is the source's schema.table); set target: public.calls (or, "
        f"if the table belongs in '{db}', CREATE SCHEMA \"{db}\";)"
    ], res.stdout
    res = r.cli("run", "--until-caught-up")
    assert res.returncode != 0
    assert f"no schema '{db}'" in res.stderr
    with psycopg.connect(target_dsn) as conn:
        assert (
            conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (db,)).fetchone() is None
        )


def test_check_names_the_state_grants_missing_after_migrate(
    tmp_path: Path, source_dsn: str, target_dsn: str, pg_target_server: PgServer
) -> None:
    n = next(_roles)
    owner, user = f"cdc_owner_{n}_{time.time_ns() % 10**6}", f"cdc_tgt_{n}_{time.time_ns() % 10**6}"
    db = target_dsn.rsplit("/", 1)[-1]
    sql(source_dsn, "CREATE TABLE customers (id int PRIMARY KEY, phone text)")
    sql(
        target_dsn,
        f"CREATE ROLE {owner} LOGIN",
        f"CREATE ROLE {user} LOGIN",
        f"CREATE SCHEMA cdc_sync AUTHORIZATION {owner}",
        f"GRANT USAGE ON SCHEMA cdc_sync TO {user}",
        f"GRANT USAGE ON SCHEMA public TO {user}",
        "CREATE TABLE public.customers (id int PRIMARY KEY, phone text)",
        f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON public.customers TO {user}",
    )
    base = f"postgresql://{{}}@127.0.0.1:{pg_target_server.port}/{db}"
    text = (
        'sources: {src: {type: postgres, dsn: "${SRC_DSN}"}}\n'
        'targets: {tgt: {type: postgres, dsn: "${TGT_DSN}", state_schema: cdc_sync}}\n'
        "pipelines: {p: {source: src, target: tgt, tables: {public.customers: {}}}}\n"
    )
    r = _Route(tmp_path, text, source_dsn, base.format(user))
    r.env["OWNER_DSN"] = base.format(owner)
    res = r.cli("migrate", "--owner-dsn-env", "OWNER_DSN")
    assert res.returncode == 0, res.stderr
    res = r.cli("check")
    assert res.returncode == 1
    assert "cannot connect" not in res.stdout, res.stdout
    assert (
        "- target: user lacks SELECT on cdc_sync_alembic_version; fix: GRANT SELECT ON "
        '"cdc_sync".cdc_sync_alembic_version TO <cdc user>;' in res.stdout
    ), res.stdout
    assert 'GRANT SELECT, INSERT, UPDATE ON "cdc_sync".cdc_sync_checkpoints' in res.stdout
    # The GRANTs of docs/security.md, run by the owner: then check passes.
    grants = {
        "cdc_sync_alembic_version": "SELECT",
        "cdc_sync_checkpoints": "SELECT, INSERT, UPDATE",
        "cdc_sync_audit": "INSERT",
        "cdc_sync_dead_letters": "SELECT, INSERT, UPDATE",
        "cdc_sync_snapshots": "SELECT, INSERT, UPDATE",
        "cdc_sync_verify_runs": "SELECT, INSERT",
        "cdc_sync_conflicts": "SELECT, INSERT",
    }
    sql(base.format(owner), *(f"GRANT {p} ON cdc_sync.{t} TO {user}" for t, p in grants.items()))
    res = r.cli("check")
    assert res.returncode == 0, res.stdout + res.stderr


def test_idle_pipeline_lag_is_zero_with_other_wal(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    sql(source_dsn, "CREATE TABLE customers (id int PRIMARY KEY)", "CREATE TABLE other (n int)")
    s = Setup(tmp_path, source_dsn, target_dsn, {"public.customers": None})
    s.drain()
    sql(source_dsn, "INSERT INTO customers VALUES (1)")
    daemon = s.start()
    try:
        with psycopg.connect(target_dsn, autocommit=True) as conn:
            wait_until(
                lambda: conn.execute("SELECT count(*) FROM customers").fetchone() == (1,),
                timeout=60,
            )
        time.sleep(4)
        # WAL the pipeline has nothing to do with: the source head moves past the checkpoint.
        sql(source_dsn, "INSERT INTO other SELECT generate_series(1, 100)")
        res = s.cli("offsets", "show", "-p", s.pipeline, "--json")
        assert res.returncode == 0, res.stderr
        (row,) = json.loads(res.stdout)
        assert row["lag_seconds"] == 0.0, row
        assert row["lag_bytes"] == 0, row
    finally:
        assert kill(daemon, signal.SIGTERM) == 0


def test_status_with_unreachable_target_states_nothing_as_fact(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    sql(source_dsn, "CREATE TABLE customers (id int PRIMARY KEY)")
    s = Setup(tmp_path, source_dsn, target_dsn, {"public.customers": None})
    s.env["TGT_DSN"] = "postgresql://postgres@127.0.0.1:1/hub"
    res = s.cli("status")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    for fact in ("none yet", "0 open", "snapshots     none", "never"):
        assert fact not in out, out
    assert "dead letters  unknown (target unreachable)" in out, out
    assert "last verify   unknown (target unreachable)" in out, out
    assert len([line for line in out.splitlines() if "error:" in line]) == 1, out
