"""Conflict log of two-way links: migration, store and ``cdc-sync conflicts`` on PG and MariaDB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from cdc_sync.audit.conflicts import Conflict, ConflictStore
from cdc_sync.config.models import MysqlTarget
from cdc_sync.runtime.wiring import _mysql_engine
from cdc_sync.state.migrate import upgrade
from cdc_sync.state.tables import state_tables

pytestmark = pytest.mark.integration

WHEN = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
EARLIER = WHEN - timedelta(seconds=3)

BASE = Conflict(
    pipeline="crm_to_dialer",
    link="crm_dialer",
    source_table="public.customers",
    target_table="dialer.contacts",
    pk='{"id":7}',
    op="update",
    kind="update_update",
    rule="last_write_wins",
    winner="incoming",
    outcome="conflict_resolved",
    incoming={
        "id": 7,
        "name": "Zoë Ünïcødé 東京",
        "balance": Decimal("12.340"),
        "seen_at": WHEN,
        "photo": b"\x00\xff",
        "note": None,
    },
    current={"id": 7, "name": "Zoe", "balance": Decimal("1.5"), "seen_at": EARLIER, "note": "x"},
    before={"id": 7, "name": "Zo"},
    resolved={"id": 7, "name": "Zoë Ünïcødé 東京", "meta": {"at": WHEN, "n": Decimal("1")}},
    incoming_commit_time=WHEN,
    current_commit_time=EARLIER,
    incoming_position="0/16B3748",
    current_position=None,
)

INCOMING_JSON = {
    "id": 7,
    "name": "Zoë Ünïcødé 東京",
    "balance": "12.340",
    "seen_at": "2026-03-01T12:00:00.123456+00:00",
    "photo": "\\x00ff",
    "note": None,
}


def _engine(kind: str, dsn: str) -> sa.Engine:
    if kind == "mariadb":
        return _mysql_engine(MysqlTarget(type="mysql", dsn=SecretStr(dsn)), "test")
    return sa.create_engine(dsn.replace("postgresql://", "postgresql+psycopg://"))


@pytest.fixture(params=["postgres", "mariadb"])
def target(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(engine kind, DSN of a fresh, empty target database); only the servers used start."""
    kind = str(request.param)
    fixture = "my_target_dsn" if kind == "mariadb" else "target_dsn"
    return kind, str(request.getfixturevalue(fixture))


@pytest.fixture
def engine(target: tuple[str, str]) -> Iterator[sa.Engine]:
    eng = _engine(*target)
    with eng.connect() as conn:
        upgrade(conn)
        conn.commit()
    yield eng
    eng.dispose()


def test_migration_creates_conflicts_and_row_clock(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        insp = sa.inspect(conn)
        names = set(insp.get_table_names())
        assert {"cdc_sync_conflicts", "cdc_sync_row_clock"} <= names
        idx = {i["name"]: i["column_names"] for i in insp.get_indexes("cdc_sync_conflicts")}
        assert idx["ix_cdc_sync_conflicts_pipeline"] == ["pipeline", "detected_at"]
        assert idx["ix_cdc_sync_conflicts_table"] == ["target_table", "detected_at"]
        pk = insp.get_pk_constraint("cdc_sync_row_clock")["constrained_columns"]
        assert pk == ["link", "table_name", "key_hash"]
        cols = {c["name"] for c in insp.get_columns("cdc_sync_conflicts")}
        assert cols == set(state_tables().conflicts.c.keys())
        cols = {c["name"] for c in insp.get_columns("cdc_sync_row_clock")}
        assert cols == set(state_tables().row_clock.c.keys())


def test_row_clock_key_is_link_table_and_key_hash(engine: sa.Engine) -> None:
    t = state_tables().row_clock
    row = {"link": "l", "table_name": "public.t", "key_hash": "a" * 40, "updated_at": WHEN}
    with engine.connect() as conn:
        conn.execute(sa.insert(t), [row, {**row, "key_hash": "b" * 40}])
        with pytest.raises(sa.exc.IntegrityError):
            conn.execute(sa.insert(t), row)
        conn.rollback()


def test_write_list_get_round_trip(engine: sa.Engine) -> None:
    store = ConflictStore(None)
    other = replace(
        BASE,
        pipeline="dialer_to_crm",
        source_table="dialer.contacts",
        target_table="public.customers",
        kind="update_delete",
        winner="none",
        outcome="conflict_dead_letter",
        op="delete",
        incoming=None,
        resolved=None,
        current_commit_time=None,
    )
    before = datetime.now(UTC)
    with engine.connect() as conn:
        store.write(conn, [BASE, other])
        store.write(conn, [])
        conn.commit()
    with engine.connect() as conn:
        assert store.count(conn, "crm_to_dialer") == 1
        assert store.count(conn, "nobody") == 0
        listed = store.list(conn)
        assert [s.pipeline for s in listed] == ["dialer_to_crm", "crm_to_dialer"]  # newest first
        assert [s.kind for s in store.list(conn, pipeline="crm_to_dialer")] == ["update_update"]
        assert [s.pipeline for s in store.list(conn, table="dialer.contacts")] == [
            "dialer_to_crm",  # its source table
            "crm_to_dialer",  # its target table
        ]
        assert len(store.list(conn, limit=1)) == 1
        first = listed[1]
        assert (first.target_table, first.pk, first.rule, first.winner, first.outcome) == (
            "dialer.contacts",
            '{"id":7}',
            "last_write_wins",
            "incoming",
            "conflict_resolved",
        )
        assert before - timedelta(seconds=1) <= first.detected_at <= datetime.now(UTC)

        row = store.get(conn, first.id)
        assert row is not None
        assert set(row) == set(state_tables().conflicts.c.keys())
        assert row["incoming"] == INCOMING_JSON
        assert row["current"] == {
            "id": 7,
            "name": "Zoe",
            "balance": "1.5",
            "seen_at": "2026-03-01T11:59:57.123456+00:00",
            "note": "x",
        }
        assert row["before"] == {"id": 7, "name": "Zo"}
        assert row["resolved"] == {
            "id": 7,
            "name": "Zoë Ünïcødé 東京",
            "meta": {"at": "2026-03-01T12:00:00.123456+00:00", "n": "1"},
        }
        assert row["incoming_commit_time"] == WHEN
        assert row["current_commit_time"] == EARLIER
        assert row["incoming_position"] == "0/16B3748"
        assert row["current_position"] is None
        assert (row["link"], row["op"], row["source_table"]) == (
            "crm_dialer",
            "update",
            "public.customers",
        )

        dead = store.get(conn, listed[0].id)
        assert dead is not None
        assert dead["incoming"] is None and dead["resolved"] is None
        assert dead["current_commit_time"] is None
        assert store.get(conn, listed[0].id + 1000) is None


def test_write_stays_in_the_callers_transaction(engine: sa.Engine) -> None:
    store = ConflictStore(None)
    with engine.connect() as conn:
        store.write(conn, [BASE])
        assert store.count(conn, BASE.pipeline) == 1
        conn.rollback()
    with engine.connect() as conn:
        assert store.count(conn, BASE.pipeline) == 0


# -- CLI ---------------------------------------------------------------------------------------

CONFIG = """
sources:
  src: {{type: postgres, dsn: "postgresql://cdc@127.0.0.1:1/none"}}
targets:
  tgt: {{type: {target_type}, dsn: "${{TGT_DSN}}"}}
pipelines:
  crm_to_dialer: {{source: src, target: tgt, tables: {{public.customers: {{}}}}}}
  dialer_to_crm: {{source: src, target: tgt, tables: {{public.contacts: {{}}}}}}
logging: {{level: WARNING, format: json}}
"""


def _cli(tmp_path: Path, target: tuple[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    kind, dsn = target
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CONFIG.format(target_type="mysql" if kind == "mariadb" else "postgres"))
    return subprocess.run(
        [sys.executable, "-m", "cdc_sync", "conflicts", *args, "-c", str(cfg)],
        env={**os.environ, "TGT_DSN": dsn},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_list_and_show(tmp_path: Path, target: tuple[str, str], engine: sa.Engine) -> None:
    store = ConflictStore(None)
    with engine.connect() as conn:
        store.write(conn, [BASE, replace(BASE, pipeline="dialer_to_crm", kind="insert_insert")])
        store.write(conn, [replace(BASE, pk='{"id":8}')])
        conn.commit()
        ids = [s.id for s in store.list(conn)]

    res = _cli(tmp_path, target, "list", "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert [r["id"] for r in rows] == ids
    assert rows[0] == {
        "id": ids[0],
        "detected_at": rows[0]["detected_at"],
        "pipeline": "crm_to_dialer",
        "table": "dialer.contacts",
        "pk": '{"id":8}',
        "kind": "update_update",
        "rule": "last_write_wins",
        "winner": "incoming",
        "outcome": "conflict_resolved",
    }
    datetime.fromisoformat(rows[0]["detected_at"])

    res = _cli(tmp_path, target, "list", "--json", "-p", "dialer_to_crm", "--limit", "5")
    assert [r["kind"] for r in json.loads(res.stdout)] == ["insert_insert"]
    res = _cli(tmp_path, target, "list", "--json", "--limit", "2", "--table", "dialer.contacts")
    assert [r["id"] for r in json.loads(res.stdout)] == ids[:2]
    res = _cli(tmp_path, target, "list")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == [
        "id", "detected_at", "pipeline", "table", "pk", "kind", "rule", "winner", "outcome"
    ]  # fmt: skip
    assert len(lines) == 4
    assert lines[1].split()[0] == str(ids[0])

    res = _cli(tmp_path, target, "show", "-p", "crm_to_dialer", str(ids[2]), "--json")
    assert res.returncode == 0, res.stderr
    shown = json.loads(res.stdout)
    assert shown["incoming"] == INCOMING_JSON
    assert shown["kind"] == "update_update"
    assert datetime.fromisoformat(shown["incoming_commit_time"]) == WHEN

    res = _cli(tmp_path, target, "show", "-p", "crm_to_dialer", str(ids[2]))
    assert res.returncode == 0, res.stderr
    name_line = next(x for x in res.stdout.splitlines() if x.split()[:2] == ["*", "name"])
    assert '"Zoë Ünïcødé 東京"' in name_line and '"Zoe"' in name_line and '"Zo"' in name_line
    assert any(x.split()[:2] == ["*", "photo"] for x in res.stdout.splitlines())

    res = _cli(tmp_path, target, "show", "-p", "crm_to_dialer", str(ids[0] + 1000))
    assert res.returncode == 1
    assert f"no conflict with id {ids[0] + 1000}" in res.stderr
    res = _cli(tmp_path, target, "show", "-p", "nope", "1")
    assert res.returncode == 2
    assert "no pipeline named 'nope'" in res.stderr


def test_cli_on_a_target_without_the_conflict_log(tmp_path: Path, target: tuple[str, str]) -> None:
    """Never migrated (no daemon ran there yet): no conflicts, and the command leaves the
    target as it was (read-only)."""
    res = _cli(tmp_path, target, "list", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == []
    res = _cli(tmp_path, target, "list")
    assert res.stdout.strip() == "no conflicts"
    res = _cli(tmp_path, target, "show", "-p", "crm_to_dialer", "1")
    assert res.returncode == 1
    assert "no conflict with id 1" in res.stderr
    eng = _engine(*target)
    try:
        with eng.connect() as conn:
            assert not sa.inspect(conn).has_table("cdc_sync_conflicts")
    finally:
        eng.dispose()


def test_cli_unreachable_target_is_one_clear_line(tmp_path: Path) -> None:
    res = _cli(tmp_path, ("postgres", "postgresql://cdc@127.0.0.1:1/none"), "list")
    assert res.returncode == 1
    assert res.stderr.startswith("error: pipeline crm_to_dialer: target")
    assert "Traceback" not in res.stderr
