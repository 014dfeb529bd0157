"""Migrations, checkpoint store (monotonic, fenced) and audit writer against a real target."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
import sqlalchemy as sa

from cdc_sync.audit.writer import AuditWriter
from cdc_sync.checkpoint.store import CheckpointStore
from cdc_sync.errors import FencedError, PermanentError
from cdc_sync.records import ChangeRecord, Column, ColumnType, Kind, Op, PgLsn, TableId, TableSchema
from cdc_sync.sinks.sql.sink import SqlSink
from cdc_sync.state.migrate import HEAD_REVISION, current_revision, head_revision, upgrade

pytestmark = pytest.mark.integration

T = TableId("public", "items")
SCHEMA = TableSchema(
    T,
    (Column("id", ColumnType(Kind.BIGINT), False), Column("name", ColumnType(Kind.TEXT))),
    ("id",),
)
WHEN = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def rec(op: Op, id_: int, lsn: int = 100, xid: str = "750", old: int | None = None) -> ChangeRecord:
    after = None if op is Op.DELETE else (id_, "n")
    before = (id_, None) if op is Op.DELETE else ((old, None) if old is not None else None)
    return ChangeRecord(
        op,
        T,
        SCHEMA,
        before,
        after,
        PgLsn(lsn),
        xid,
        WHEN,
        before_is_key_only=True,
        changed=("name",) if op is Op.UPDATE else (),
    )


@pytest.fixture
def engine(target_dsn: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(target_dsn.replace("postgresql://", "postgresql+psycopg://"))
    with eng.connect() as conn:
        upgrade(conn)
        conn.commit()
    yield eng
    eng.dispose()


def tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as c:
        rows = c.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r[0] for r in rows}


def test_upgrade_creates_tables_and_is_idempotent(target_dsn: str) -> None:
    eng = sa.create_engine(target_dsn.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with eng.connect() as conn:
            assert current_revision(conn) is None
            upgrade(conn)
            conn.commit()
            assert current_revision(conn) == head_revision() == HEAD_REVISION
            upgrade(conn)  # second run: no-op
            conn.commit()
    finally:
        eng.dispose()
    assert tables(target_dsn) == {
        "cdc_sync_checkpoints",
        "cdc_sync_audit",
        "cdc_sync_dead_letters",
        "cdc_sync_snapshots",
        "cdc_sync_verify_runs",
        "cdc_sync_conflicts",
        "cdc_sync_row_clock",
        "cdc_sync_alembic_version",
    }


def test_concurrent_first_upgrades_do_not_collide(target_dsn: str) -> None:
    eng = sa.create_engine(target_dsn.replace("postgresql://", "postgresql+psycopg://"))
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def run() -> None:
        try:
            with eng.connect() as conn:
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
    eng.dispose()
    assert not errors
    assert "cdc_sync_audit" in tables(target_dsn)


def test_upgrade_in_a_separate_schema(target_dsn: str) -> None:
    with psycopg.connect(target_dsn, autocommit=True) as c:
        c.execute("CREATE SCHEMA cdc")
    eng = sa.create_engine(target_dsn.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with eng.connect() as conn:
            upgrade(conn, schema="cdc")
            conn.commit()
            store = CheckpointStore("p", schema="cdc")
            token = store.acquire(conn, "me", 60)
            store.save(conn, PgLsn(5), "1", WHEN, token)
            conn.commit()
            cp = store.load(conn)
    finally:
        eng.dispose()
    assert cp is not None and cp.position == PgLsn(5)
    assert "cdc_sync_audit" not in tables(target_dsn)


def test_checkpoint_round_trip_and_monotonic(engine: sa.Engine) -> None:
    store = CheckpointStore("p1")
    with engine.connect() as conn:
        assert store.load(conn) is None
        token = store.acquire(conn, "host:1", 60)
        conn.commit()
        assert store.load(conn) is None  # lease taken, nothing applied yet
        pos = PgLsn.from_body("16/B374D848")
        store.save(conn, pos, "750", WHEN, token)
        conn.commit()
        cp = store.load(conn)
        assert cp is not None
        assert (cp.position, cp.source_tx, cp.committed_at, cp.token) == (pos, "750", WHEN, token)
        assert cp.position.to_text() == "pg:16/B374D848"
        store.save(conn, pos, "750", WHEN, token)  # same position again: fine
        with pytest.raises(PermanentError, match="backwards"):
            store.save(conn, PgLsn(pos.value - 1), "749", WHEN, token)
        conn.rollback()
        new_token = store.reset(conn, PgLsn(1))  # explicit reset may go back; fences others
        conn.commit()
        assert new_token > token
        with pytest.raises(FencedError):
            store.save(conn, PgLsn(2), "1", WHEN, token)
        conn.rollback()
        assert [c.pipeline for c in store.list_all(conn)] == ["p1"]


def test_second_acquire_fences_the_first(engine: sa.Engine) -> None:
    a, b = CheckpointStore("p1"), CheckpointStore("p1")
    with engine.connect() as conn:
        t1 = a.acquire(conn, "old", 60)
        conn.commit()
        a.save(conn, PgLsn(10), "1", WHEN, t1)
        conn.commit()
        t2 = b.acquire(conn, "new", 60)
        conn.commit()
        assert t2 == t1 + 1
        with pytest.raises(FencedError):
            a.save(conn, PgLsn(20), "2", WHEN, t1)
        conn.rollback()
        b.save(conn, PgLsn(20), "2", WHEN, t2)
        conn.commit()
        cp = b.load(conn)
    assert cp is not None and cp.position == PgLsn(20) and cp.owner == "new"


def audit(dsn: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as c:
        return c.execute(
            "SELECT pipeline, source_table, target_table, op, pk, source_position, source_tx, "
            "committed_at, outcome, detail FROM cdc_sync_audit ORDER BY id"
        ).fetchall()


def test_rows_checkpoint_and_audit_commit_or_roll_back_together(
    engine: sa.Engine, target_dsn: str
) -> None:
    sink, store, writer = SqlSink(), CheckpointStore("p1"), AuditWriter("p1", "row")
    target = TableId("public", "items_copy")
    with engine.connect() as conn:
        sink.ensure_table(conn, SCHEMA, target)
        token = store.acquire(conn, "me", 60)
        conn.commit()
        items = [(rec(Op.INSERT, 1), target), (rec(Op.INSERT, 2), target)]
        sink.apply(conn, items)
        for r, t in items:
            writer.add(r, t)
        writer.flush(conn)
        store.save(conn, PgLsn(200), "750", WHEN, token)
        conn.rollback()  # e.g. the commit failed: nothing of the batch may remain
        writer.discard()
        assert store.load(conn) is None
        assert conn.execute(sa.text("SELECT count(*) FROM items_copy")).scalar() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM cdc_sync_audit")).scalar() == 0
        sink.apply(conn, items)
        for r, t in items:
            writer.add(r, t)
        writer.flush(conn)
        store.save(conn, PgLsn(200), "750", WHEN, token)
        conn.commit()
    assert len(audit(target_dsn)) == 2


def test_audit_row_level(engine: sa.Engine, target_dsn: str) -> None:
    w = AuditWriter("p1", "row")
    target = TableId("public", "items_copy")
    w.add(rec(Op.INSERT, 1, lsn=10), target)
    w.add(rec(Op.UPDATE, 2, lsn=11, old=1), target)
    w.add(rec(Op.DELETE, 2, lsn=12), target, outcome="skipped")
    w.end_transaction("750", WHEN, PgLsn(13))  # no row of its own at row level
    with engine.connect() as conn:
        w.flush(conn)
        conn.commit()
    rows = audit(target_dsn)
    assert [r[:9] for r in rows] == [
        (
            "p1",
            "public.items",
            "public.items_copy",
            "insert",
            '{"id":1}',
            "pg:0/A",
            "750",
            WHEN,
            "applied",
        ),
        (
            "p1",
            "public.items",
            "public.items_copy",
            "update",
            '{"id":2}',
            "pg:0/B",
            "750",
            WHEN,
            "applied",
        ),
        (
            "p1",
            "public.items",
            "public.items_copy",
            "delete",
            '{"id":2}',
            "pg:0/C",
            "750",
            WHEN,
            "skipped",
        ),
    ]
    assert [r[9] for r in rows] == [None, {"changed": ["name"], "old_pk": {"id": 1}}, None]


def test_audit_transaction_level_and_off(engine: sa.Engine, target_dsn: str) -> None:
    w = AuditWriter("p1", "transaction")
    off = AuditWriter("p1", "off")
    target = TableId("public", "items_copy")
    for w_ in (w, off):
        for i in range(3):
            w_.add(rec(Op.INSERT, i), target)
        w_.add(rec(Op.DELETE, 0), target)
        w_.end_transaction("750", WHEN, PgLsn(300))
        w_.add(rec(Op.UPDATE, 1, xid="751"), target)
        w_.end_transaction("751", WHEN, PgLsn(400))
    with engine.connect() as conn:
        w.flush(conn)
        off.flush(conn)
        conn.commit()
    rows = audit(target_dsn)
    assert [(r[3], r[5], r[6], r[8]) for r in rows] == [
        ("transaction", "pg:0/12C", "750", "applied"),
        ("transaction", "pg:0/190", "751", "applied"),
    ]
    assert rows[0][9] == {"counts": {"public.items_copy": {"insert": 3, "delete": 1}}, "rows": 4}
    assert rows[1][9] == {"counts": {"public.items_copy": {"update": 1}}, "rows": 1}


def test_audit_copy_text_escapes_every_special_character(
    engine: sa.Engine, target_dsn: str
) -> None:
    """COPY text is assembled by hand: backslash, tab, newline, CR and non-ASCII survive."""
    odd = TableId("we\tird", "ta\\ble\n")
    schema = TableSchema(odd, (Column("k", ColumnType(Kind.TEXT), False),), ("k",))
    key = "a\\b\tc\nd\re ☎ \\N"
    change = ChangeRecord(Op.INSERT, odd, schema, None, (key,), PgLsn(7), "x\t1", WHEN)
    w = AuditWriter("pipe\\line\t1", "row")
    w.add(change, odd, outcome="applied")
    with engine.connect() as conn:
        w.flush(conn)
        conn.commit()
    ((pipeline, src, tgt, op, pk, pos, tx, when, outcome, detail),) = audit(target_dsn)
    assert (pipeline, src, tgt, op, pos, tx, when, outcome, detail) == (
        "pipe\\line\t1",
        str(odd),
        str(odd),
        "insert",
        "pg:0/7",
        "x\t1",
        WHEN,
        "applied",
        None,
    )
    assert json.loads(str(pk)) == {"k": key}


def test_migrations_build_exactly_the_model(target_dsn: str) -> None:
    """The tables the migrations make (indexes included) are the ones state/tables.py says."""
    from alembic.autogenerate import compare_metadata  # noqa: PLC0415
    from alembic.migration import MigrationContext  # noqa: PLC0415

    from cdc_sync.state.tables import ALEMBIC_VERSION_TABLE, metadata  # noqa: PLC0415

    eng = sa.create_engine(target_dsn.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with eng.connect() as conn:
            upgrade(conn)
            conn.commit()
            ctx = MigrationContext.configure(conn, opts={"version_table": ALEMBIC_VERSION_TABLE})
            diff = [
                d
                for d in compare_metadata(ctx, metadata)
                if not (d[0] == "remove_table" and d[1].name == ALEMBIC_VERSION_TABLE)
            ]
    finally:
        eng.dispose()
    assert diff == []


def test_upgrade_to_exact_text_keeps_audit_rows_and_their_index(target_dsn: str) -> None:
    """0007 gives the audit's key columns the "C" collation in place: rows kept, index used."""
    from alembic import command  # noqa: PLC0415

    from cdc_sync.state.migrate import alembic_config  # noqa: PLC0415

    eng = sa.create_engine(target_dsn.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with eng.connect() as conn:
            command.upgrade(alembic_config(conn), "0006_drop_corrections")
            conn.execute(
                sa.text(
                    "INSERT INTO cdc_sync_audit (pipeline, target_table, op, pk, outcome) "
                    "SELECT 'p', 'public.items', 'insert', '{\"id\":' || i || '}', 'applied' "
                    "FROM generate_series(1, 1000) i"
                )
            )
            conn.commit()
            upgrade(conn)
            conn.commit()
            colls = dict(
                conn.execute(
                    sa.text(
                        "SELECT column_name, collation_name FROM information_schema.columns "
                        "WHERE table_name = 'cdc_sync_audit' AND collation_name IS NOT NULL"
                    )
                ).all()
            )
            conn.execute(sa.text("SET enable_seqscan = off"))
            plan = "\n".join(
                conn.execute(
                    sa.text(
                        "EXPLAIN SELECT * FROM cdc_sync_audit WHERE target_table = 'public.items' "
                        "AND pk LIKE :prefix"
                    ),
                    {"prefix": '{"id":99%'},
                ).scalars()
            )
            n = conn.execute(sa.text("SELECT count(*) FROM cdc_sync_audit")).scalar()
    finally:
        eng.dispose()
    assert n == 1000
    assert {c: colls.get(c) for c in ("source_table", "target_table", "pk")} == dict.fromkeys(
        ("source_table", "target_table", "pk"), "C"
    )
    assert "ix_cdc_sync_audit_table_pk" in plan  # a prefix search can use the key index
