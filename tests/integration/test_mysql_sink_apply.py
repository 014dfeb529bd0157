"""SqlSink apply semantics on MariaDB: idempotent, ordered, key changes, unchanged values."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from cdc_sync.config.models import MysqlTarget
from cdc_sync.errors import PermanentError, RowLevelError, TransientError
from cdc_sync.records import UNCHANGED, ChangeRecord, Op, TableId
from cdc_sync.runtime.wiring import _mysql_engine
from cdc_sync.sinks.sql.sink import SqlSink
from tests.integration.test_sink_apply import SCHEMA, _rec, dele, ins, upd

pytestmark = pytest.mark.integration

Items = Sequence[tuple[ChangeRecord, TableId]]


@pytest.fixture
def target(my_target_dsn: str) -> TableId:
    return TableId(my_target_dsn.rsplit("/", 1)[-1], "docs")


@pytest.fixture
def engine(my_target_dsn: str, target: TableId) -> Iterator[sa.Engine]:
    eng = _mysql_engine(MysqlTarget(type="mysql", dsn=SecretStr(my_target_dsn)), "test")
    with eng.connect() as conn:
        SqlSink().ensure_table(conn, SCHEMA, target)
    yield eng
    eng.dispose()


def content(engine: sa.Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql("SELECT id, body, v FROM docs ORDER BY id")]


def apply(engine: sa.Engine, target: TableId, items: Items, sink: SqlSink | None = None) -> None:
    with engine.connect() as conn:
        (sink or SqlSink()).apply(conn, [(r, target) for r, _ in items])
        conn.commit()


def test_batch_applied_twice_gives_same_content(engine: sa.Engine, target: TableId) -> None:
    batch = [
        ins(1, "a"),
        ins(2, "b"),
        ins(3, "c"),
        upd(1, "a2", 1),
        upd(20, "b", 2, old=2),  # key change
        dele(3),
        ins(4, "d"),
        dele(4),
        ins(5, "x"),
        upd(5, "y"),
        upd(5, "z", 9),
        dele(6),
    ]
    apply(engine, target, batch)
    first = content(engine)
    assert first == [(1, "a2", 1), (5, "z", 9), (20, "b", 2)]
    apply(engine, target, batch)
    assert content(engine) == first


def test_order_and_key_change_chain(engine: sa.Engine, target: TableId) -> None:
    apply(engine, target, [ins(1, "a"), dele(1), ins(1, "b")])
    assert content(engine) == [(1, "b", None)]
    apply(engine, target, [ins(2, "a"), upd(3, "a", old=2), upd(4, "a", old=3), ins(2, "new")])
    assert content(engine) == [(1, "b", None), (2, "new", None), (4, "a", None)]


def test_many_rows_go_out_in_several_statements(engine: sa.Engine, target: TableId) -> None:
    body = "é" * 1000  # ~2 KB a row: 3000 rows need several 1 MiB statements
    apply(engine, target, [ins(i, body, i) for i in range(3000)])
    apply(engine, target, [dele(i) for i in range(0, 3000, 2)])
    rows = content(engine)
    assert len(rows) == 1500 and rows[0] == (1, body, 1) and rows[-1][0] == 2999


def test_unchanged_value_is_left_as_is(engine: sa.Engine, target: TableId) -> None:
    big = "x" * (2 * 1024 * 1024)
    apply(engine, target, [ins(1, big, 0), ins(2, "small", 0)])
    batch = [upd(1, UNCHANGED, 1), upd(2, UNCHANGED, 1), upd(1, UNCHANGED, 2)]
    apply(engine, target, batch)
    apply(engine, target, batch)  # idempotent: same values again still match the row
    rows = content(engine)
    assert [(r[0], len(str(r[1])), r[2]) for r in rows] == [(1, len(big), 2), (2, 5, 1)]
    apply(engine, target, [upd(10, UNCHANGED, 3, old=1)])
    apply(engine, target, [upd(10, UNCHANGED, 3, old=1)])  # re-applied: already moved
    rows = content(engine)
    assert [(r[0], r[2]) for r in rows] == [(2, 1), (10, 3)] and rows[1][1] == big
    with pytest.raises(RowLevelError, match=r"docs.*body") as ei:
        apply(engine, target, [upd(99, UNCHANGED, 1)])
    assert "99" not in str(ei.value)


def test_truncate_is_transactional_and_switchable(engine: sa.Engine, target: TableId) -> None:
    trunc = (_rec(Op.TRUNCATE, None), target)
    apply(engine, target, [ins(1, "a"), trunc], SqlSink(apply_truncate=False))
    assert content(engine) == [(1, "a", None)]
    with engine.connect() as conn:
        SqlSink().apply(conn, [trunc])
        conn.rollback()  # TRUNCATE TABLE would have committed itself
    assert content(engine) == [(1, "a", None)]
    apply(engine, target, [trunc, ins(2, "b")])
    assert content(engine) == [(2, "b", None)]


def test_duplicate_on_another_unique_index_is_row_level_without_values(
    engine: sa.Engine, target: TableId
) -> None:
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE UNIQUE INDEX docs_v ON docs (v)")
    apply(engine, target, [ins(1, "a", 7)])
    # ON DUPLICATE KEY would fire on docs_v and overwrite row 1: refused instead
    with pytest.raises(RowLevelError, match="other than the key") as ei:
        apply(engine, target, [ins(2, "secret@example.com", 7)])
    assert "secret" not in str(ei.value) and ei.value.__cause__ is None
    assert content(engine) == [(1, "a", 7)]
    with engine.connect() as conn:  # a plain duplicate (not via upsert): 1062, no values
        conn.exec_driver_sql("DROP INDEX docs_v ON docs")
        conn.exec_driver_sql("CREATE UNIQUE INDEX docs_body ON docs (body(20))")
    with pytest.raises(RowLevelError) as ei:
        apply(engine, target, [ins(3, "secret@example.com", 7), upd(4, "a", old=3)])
    msg = str(ei.value)
    assert "docs" in msg and "secret" not in msg and ei.value.__cause__ is None


def test_missing_column_is_permanent_and_lock_wait_is_transient(
    engine: sa.Engine, target: TableId
) -> None:
    with engine.connect() as conn:
        conn.exec_driver_sql("ALTER TABLE docs DROP COLUMN v")
    with pytest.raises(PermanentError, match=r"docs.*1054"):
        apply(engine, target, [ins(1, "a", 1)])
    apply(engine, target, [_ins2(1)])
    with engine.connect() as holder, engine.connect() as conn:
        holder.exec_driver_sql("SELECT * FROM docs WHERE id = 1 FOR UPDATE")
        conn.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 1")
        with pytest.raises(TransientError, match="1205"):
            SqlSink().apply(conn, [(_ins2(1)[0], target)])


def _ins2(id_: int) -> tuple[ChangeRecord, TableId]:
    from cdc_sync.records import Column, ColumnType, Kind, TableSchema  # noqa: PLC0415

    schema = TableSchema(
        SCHEMA.table, (SCHEMA.columns[0], Column("body", ColumnType(Kind.TEXT))), ("id",)
    )
    r = _rec(Op.INSERT, (id_, "b", None))
    return r._replace(schema=schema, after=(id_, "b")), SCHEMA.table
