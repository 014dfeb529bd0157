"""Migrations, checkpoint store and audit writer on a MariaDB target: one transaction."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from cdc_sync.audit.writer import AuditWriter
from cdc_sync.checkpoint.store import CheckpointStore
from cdc_sync.config.models import MysqlTarget
from cdc_sync.errors import FencedError, PermanentError
from cdc_sync.records import (
    BinlogPosition,
    ChangeRecord,
    Column,
    ColumnType,
    Kind,
    Op,
    TableId,
    TableSchema,
)
from cdc_sync.runtime.wiring import _mysql_engine
from cdc_sync.sinks.sql.sink import SqlSink
from cdc_sync.state.migrate import HEAD_REVISION, current_revision, upgrade

pytestmark = pytest.mark.integration

SRC = TableId("crm", "items")
SCHEMA = TableSchema(
    SRC,
    (Column("id", ColumnType(Kind.BIGINT), False), Column("name", ColumnType(Kind.TEXT))),
    ("id",),
)
WHEN = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def pos(n: int) -> BinlogPosition:
    return BinlogPosition("mariadb-bin.000001", n)


def rec(op: Op, id_: int, at: int = 100, old: int | None = None) -> ChangeRecord:
    after = None if op is Op.DELETE else (id_, "n")
    before = (id_, None) if op is Op.DELETE else ((old, None) if old is not None else None)
    return ChangeRecord(
        op,
        SRC,
        SCHEMA,
        before,
        after,
        pos(at),
        "750",
        WHEN,
        before_is_key_only=True,
        changed=("name",) if op is Op.UPDATE else (),
    )


def make_engine(dsn: str) -> sa.Engine:
    return _mysql_engine(MysqlTarget(type="mysql", dsn=SecretStr(dsn)), "test")


@pytest.fixture
def engine(my_target_dsn: str) -> Iterator[sa.Engine]:
    eng = make_engine(my_target_dsn)
    with eng.connect() as conn:
        upgrade(conn)
        conn.commit()
    yield eng
    eng.dispose()


def tables(conn: sa.Connection) -> set[str]:
    return set(conn.exec_driver_sql("SHOW TABLES").scalars())


def test_upgrade_creates_tables_and_is_idempotent(my_target_dsn: str) -> None:
    eng = make_engine(my_target_dsn)
    try:
        with eng.connect() as conn:
            assert current_revision(conn) is None
            upgrade(conn)
            conn.commit()
            assert current_revision(conn) == HEAD_REVISION
            upgrade(conn)
            conn.commit()
            assert tables(conn) == {
                "cdc_sync_checkpoints",
                "cdc_sync_audit",
                "cdc_sync_dead_letters",
                "cdc_sync_snapshots",
                "cdc_sync_verify_runs",
                "cdc_sync_conflicts",
                "cdc_sync_row_clock",
                "cdc_sync_alembic_version",
            }
            ddl = conn.exec_driver_sql("SHOW CREATE TABLE cdc_sync_audit").one()[1]
            idx = conn.exec_driver_sql("SHOW INDEX FROM cdc_sync_audit").all()
    finally:
        eng.dispose()
    assert "AUTO_INCREMENT" in ddl and "datetime(6)" in ddl
    names = {r[2] for r in idx}
    assert {"ix_cdc_sync_audit_applied_at", "ix_cdc_sync_audit_table_pk"} <= names
    assert any(r[2] == "ix_cdc_sync_audit_table_pk" and r[4] == "pk" and r[7] == 255 for r in idx)


def test_concurrent_first_upgrades_do_not_collide(my_target_dsn: str) -> None:
    eng = make_engine(my_target_dsn)
    eng.pool.dispose()
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def run() -> None:
        try:
            with make_engine(my_target_dsn).connect() as conn:
                barrier.wait()
                upgrade(conn)
                conn.commit()
        except BaseException as e:  # reported to the test below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    with eng.connect() as conn:
        assert current_revision(conn) == HEAD_REVISION
        assert conn.exec_driver_sql("SELECT count(*) FROM cdc_sync_alembic_version").scalar() == 1
    eng.dispose()


def test_state_in_another_database(my_target_dsn: str) -> None:
    eng = make_engine(my_target_dsn)
    state = my_target_dsn.rsplit("/", 1)[-1] + "_state"
    try:
        with eng.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE `{state}`")
            upgrade(conn, schema=state)
            store = CheckpointStore("p", schema=state)
            token = store.acquire(conn, "me", 60)
            store.save(conn, pos(5), "1", WHEN, token)
            conn.commit()
            cp = store.load(conn)
            assert "cdc_sync_audit" not in tables(conn)
            conn.exec_driver_sql(f"DROP DATABASE `{state}`")
    finally:
        eng.dispose()
    assert cp is not None and cp.position == pos(5)


def test_checkpoint_round_trip_monotonic_and_fenced(engine: sa.Engine) -> None:
    store, other = CheckpointStore("p1"), CheckpointStore("p1")
    with engine.connect() as conn:
        assert store.load(conn) is None
        token = store.acquire(conn, "host:1", 60)
        conn.commit()
        assert store.load(conn) is None
        store.save(conn, pos(400), "750", WHEN, token)
        conn.commit()
        cp = store.load(conn)
        assert cp is not None
        assert (cp.position, cp.source_tx, cp.committed_at, cp.token) == (
            pos(400),
            "750",
            WHEN,
            token,
        )
        assert cp.updated_at.tzinfo is not None and cp.lease_expires_at is not None
        assert cp.lease_expires_at > cp.updated_at
        store.save(conn, pos(400), "750", WHEN, token)  # same again, same second: fine
        store.save(conn, pos(400), "750", WHEN, token)
        with pytest.raises(PermanentError, match="backwards"):
            store.save(conn, pos(399), "749", WHEN, token)
        conn.rollback()
        t2 = other.acquire(conn, "new", 60)
        conn.commit()
        assert t2 == token + 1
        with pytest.raises(FencedError):
            store.save(conn, pos(500), "2", WHEN, token)
        conn.rollback()
        other.save(conn, pos(500), "2", WHEN, t2)
        conn.commit()
        new_token = other.reset(conn, pos(4))
        conn.commit()
        assert new_token > t2
        assert [c.pipeline for c in store.list_all(conn)] == ["p1"]


def test_rows_checkpoint_and_audit_commit_or_roll_back_together(
    engine: sa.Engine, my_target_dsn: str
) -> None:
    sink, store, writer = SqlSink(), CheckpointStore("p1"), AuditWriter("p1", "row")
    target = TableId(my_target_dsn.rsplit("/", 1)[-1], "items_copy")
    with engine.connect() as conn:
        sink.ensure_table(conn, SCHEMA, target)
        token = store.acquire(conn, "me", 60)
        conn.commit()
        items = [(rec(Op.INSERT, 1), target), (rec(Op.INSERT, 2), target)]

        def batch() -> None:
            sink.apply(conn, items)
            for r, t in items:
                writer.add(r, t)
            writer.flush(conn)
            store.save(conn, pos(200), "750", WHEN, token)

        batch()
        conn.rollback()  # e.g. the commit failed: nothing of the batch may remain
        writer.discard()
        assert store.load(conn) is None
        assert conn.exec_driver_sql("SELECT count(*) FROM items_copy").scalar() == 0
        assert conn.exec_driver_sql("SELECT count(*) FROM cdc_sync_audit").scalar() == 0
        batch()
        conn.commit()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM items_copy").scalar() == 2
        cp = store.load(conn)
        assert cp is not None and cp.position == pos(200)
        assert conn.exec_driver_sql("SELECT count(*) FROM cdc_sync_audit").scalar() == 2


def test_audit_rows(engine: sa.Engine, my_target_dsn: str) -> None:
    w = AuditWriter("p1", "row")
    target = TableId("hub", "items_copy")
    w.add(rec(Op.INSERT, 1, at=10), target)
    w.add(rec(Op.UPDATE, 2, at=11, old=1), target)
    w.add(rec(Op.DELETE, 2, at=12), target, outcome="skipped")
    with engine.connect() as conn:
        w.flush(conn)
        conn.commit()
        rows = conn.exec_driver_sql(
            "SELECT pipeline, source_table, target_table, op, pk, source_position, source_tx, "
            "committed_at, outcome, detail, applied_at FROM cdc_sync_audit ORDER BY id"
        ).all()
    assert [tuple(r[:9]) for r in rows] == [
        (
            "p1",
            "crm.items",
            "hub.items_copy",
            op,
            pk,
            pos(at).to_text(),
            "750",
            WHEN.replace(tzinfo=None),
            out,
        )
        for op, pk, at, out in [
            ("insert", '{"id":1}', 10, "applied"),
            ("update", '{"id":2}', 11, "applied"),
            ("delete", '{"id":2}', 12, "skipped"),
        ]
    ]
    assert [None if r[9] is None else json.loads(r[9]) for r in rows] == [
        None,
        {"changed": ["name"], "old_pk": {"id": 1}},
        None,
    ]
    # applied_at: the server's UTC time (the session runs in UTC)
    assert abs((rows[0][10] - datetime.now(UTC).replace(tzinfo=None)).total_seconds()) < 60
