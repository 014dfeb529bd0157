"""A MySQL / MariaDB target database whose default is latin1, case-insensitive: state tables
still hold any key exactly (migration 0007), and the audit tells 'ABC' from 'abc'."""

from __future__ import annotations

import itertools
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command

from cdc_sync.state.migrate import alembic_config, current_revision, upgrade
from cdc_sync.state.tables import metadata
from cdc_sync.testing.myserver import MyServer
from tests.integration.harness import Cli
from tests.integration.test_mysql_state import make_engine

pytestmark = pytest.mark.integration

_n = itertools.count()
KEYS = ("ABC", "abc", "Müller", "Straße ✓", "emoji 😀")
STATE_TABLES = {t.name for t in metadata.tables.values()}
CONFIG = """
sources:
  src: {type: postgres, dsn: "${SRC_DSN}"}
targets:
  tgt: {type: mysql, dsn: "${TGT_DSN}"}
pipelines:
  people:
    source: src
    target: tgt
    audit: row
    retry: {initial_seconds: 0.1, max_seconds: 1}
    tables:
      public.people: {target: hub.people}
logging: {level: INFO, format: json}
"""


class Pipeline(Cli):
    def __init__(self, tmp: Path, db: str, source_dsn: str, target_dsn: str) -> None:
        text = CONFIG.replace("hub.", f"{db}.")
        self._configure(tmp, "people", text, source_dsn, target_dsn)


def latin1_database(server: MyServer) -> tuple[str, str]:
    """A database made with the server's pre-utf8mb4 habits: latin1, case-insensitive."""
    name = f"legacy_{next(_n)}"
    with server.connect() as c, c.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET latin1 COLLATE latin1_swedish_ci")
    return name, server.dsn(name)


def collations(conn: sa.Connection, db: str) -> dict[str, str]:
    rows = conn.execute(
        sa.text(
            "SELECT table_name, table_collation FROM information_schema.tables "
            "WHERE table_schema = :db AND table_name LIKE 'cdc_sync_%'"
        ),
        {"db": db},
    )
    return {str(t): str(c) for t, c in rows}


def test_non_latin1_keys_replicate_and_audit_exactly(
    my_target_server: MyServer, source_dsn: str, tmp_path: Path
) -> None:
    db, dsn = latin1_database(my_target_server)
    with psycopg.connect(source_dsn, autocommit=True) as c:
        c.execute("CREATE TABLE people (code text PRIMARY KEY, name text NOT NULL)")
        for k in KEYS[:3]:
            c.execute("INSERT INTO people VALUES (%s, %s)", (k, f"name of {k}"))
    cli = Pipeline(tmp_path, db, source_dsn, dsn)
    snap = cli.cli("snapshot")
    assert snap.returncode == 0, snap.stderr[-2000:]
    with psycopg.connect(source_dsn, autocommit=True) as c:
        for k in KEYS[3:]:  # 3- and 4-byte UTF-8 keys arrive by the stream
            c.execute("INSERT INTO people VALUES (%s, %s)", (k, f"name of {k} ✓"))
        c.execute("UPDATE people SET name = name || ' (updated)' WHERE code = 'abc'")
        c.execute("DELETE FROM people WHERE code = 'ABC'")
    cli.drain()

    with psycopg.connect(source_dsn) as c:
        want = sorted(c.execute("SELECT code, name FROM people").fetchall())
    eng = make_engine(dsn)
    try:
        with eng.connect() as conn:
            got = sorted(
                tuple(r) for r in conn.execute(sa.text(f"SELECT code, name FROM `{db}`.people"))
            )
            audit = conn.execute(
                sa.text("SELECT pk, op FROM cdc_sync_audit WHERE pk = :pk ORDER BY id"),
                {"pk": '{"code":"abc"}'},
            ).all()
            pks = set(conn.execute(sa.text("SELECT pk FROM cdc_sync_audit")).scalars())
            state = collations(conn, db)
    finally:
        eng.dispose()
    assert got == want
    assert {k for k, _ in got} == {"abc", "Müller", "Straße ✓", "emoji 😀"}
    # Exact comparison: 'ABC' (snapshot, delete) is not a match for 'abc'.
    assert [op for _, op in audit] == ["snapshot", "update"]
    assert {f'{{"code":"{k}"}}' for k in KEYS} <= pks
    assert state == dict.fromkeys(STATE_TABLES, "utf8mb4_bin") | {
        "cdc_sync_alembic_version": "latin1_swedish_ci"
    }


def test_upgrade_converts_existing_tables_and_keeps_their_rows(
    my_target_server: MyServer,
) -> None:
    db, dsn = latin1_database(my_target_server)
    eng = make_engine(dsn)
    try:
        with eng.connect() as conn:
            command.upgrade(alembic_config(conn), "0006_drop_corrections")
            conn.commit()
            assert set(collations(conn, db).values()) == {"latin1_swedish_ci"}
            conn.execute(
                sa.text(
                    "INSERT INTO cdc_sync_audit (pipeline, target_table, op, pk, outcome) "
                    "VALUES ('p', 'crm.people', 'insert', :pk, 'applied')"
                ),
                {"pk": '{"code":"Müller"}'},
            )
            conn.commit()
            upgrade(conn)
            conn.commit()
            assert current_revision(conn) == "0007_exact_text"
            state = collations(conn, db)
            kept = conn.execute(sa.text("SELECT pk FROM cdc_sync_audit")).scalars().all()
            conn.execute(
                sa.text(
                    "INSERT INTO cdc_sync_audit (pipeline, target_table, op, pk, outcome) "
                    "VALUES ('p', 'crm.people', 'insert', :pk, 'applied')"
                ),
                {"pk": '{"code":"emoji 😀"}'},
            )
            conn.commit()
            both = conn.execute(sa.text("SELECT pk FROM cdc_sync_audit ORDER BY id")).scalars()
            assert list(both) == ['{"code":"Müller"}', '{"code":"emoji 😀"}']
    finally:
        eng.dispose()
    assert kept == ['{"code":"Müller"}']
    assert {t: c for t, c in state.items() if t in STATE_TABLES} == dict.fromkeys(
        STATE_TABLES, "utf8mb4_bin"
    )
