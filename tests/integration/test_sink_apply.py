"""SqlSink apply semantics: idempotent, ordered, key changes, duplicates, unchanged TOAST."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import psycopg
import pytest
import sqlalchemy as sa

from cdc_sync.errors import PermanentError, RowLevelError, TransientError
from cdc_sync.records import (
    UNCHANGED,
    ChangeRecord,
    Column,
    ColumnType,
    Kind,
    Op,
    PgLsn,
    TableId,
    TableSchema,
)
from cdc_sync.sinks.sql.sink import SqlSink

pytestmark = pytest.mark.integration

T = TableId("public", "docs")
SCHEMA = TableSchema(
    T,
    (
        Column("id", ColumnType(Kind.INTEGER), nullable=False),
        Column("body", ColumnType(Kind.TEXT)),
        Column("v", ColumnType(Kind.INTEGER)),
    ),
    ("id",),
)
Rows = Sequence[tuple[ChangeRecord, TableId]]


def ins(id_: int, body: object, v: int | None = None) -> tuple[ChangeRecord, TableId]:
    return _rec(Op.INSERT, (id_, body, v)), T


def upd(
    id_: int,
    body: object,
    v: int | None = None,
    old: int | None = None,
    changed: tuple[str, ...] = (),
) -> tuple[ChangeRecord, TableId]:
    before = None if old is None else (old, None, None)
    return _rec(Op.UPDATE, (id_, body, v), before, changed=changed), T


def dele(id_: int) -> tuple[ChangeRecord, TableId]:
    return _rec(Op.DELETE, None, (id_, None, None)), T


def _rec(
    op: Op,
    after: tuple[object, ...] | None,
    before: tuple[object, ...] | None = None,
    changed: tuple[str, ...] = (),
) -> ChangeRecord:
    return ChangeRecord(
        op,
        T,
        SCHEMA,
        before,
        after,
        PgLsn(1),
        "7",
        datetime(2026, 1, 1, tzinfo=UTC),
        before_is_key_only=True,
        changed=changed,
    )


@pytest.fixture
def engine(target_dsn: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(target_dsn.replace("postgresql://", "postgresql+psycopg://"))
    with eng.connect() as conn:
        SqlSink().ensure_table(conn, SCHEMA, T)
        conn.commit()
    yield eng
    eng.dispose()


def content(dsn: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT id, body, v FROM docs ORDER BY id").fetchall()


def apply(engine: sa.Engine, items: Rows, sink: SqlSink | None = None) -> None:
    with engine.connect() as conn:
        (sink or SqlSink()).apply(conn, items)
        conn.commit()


def test_batch_applied_twice_gives_same_content(engine: sa.Engine, target_dsn: str) -> None:
    batch = [
        ins(1, "a"),
        ins(2, "b"),
        ins(3, "c"),
        upd(1, "a2", 1),
        upd(20, "b", 2, old=2),  # key change
        dele(3),
        ins(4, "d"),
        dele(4),  # delete after upsert in one batch
        ins(5, "x"),
        upd(5, "y"),
        upd(5, "z", 9),  # duplicate keys in one upsert run
        dele(6),  # delete of a row that does not exist
    ]
    apply(engine, batch)
    first = content(target_dsn)
    assert first == [(1, "a2", 1), (5, "z", 9), (20, "b", 2)]
    apply(engine, batch)
    assert content(target_dsn) == first


def test_delete_between_upserts_of_one_key_is_respected(engine: sa.Engine, target_dsn: str) -> None:
    apply(engine, [ins(1, "a"), dele(1), ins(1, "b")])
    assert content(target_dsn) == [(1, "b", None)]
    apply(engine, [ins(2, "a"), ins(1, "c"), dele(1)])
    assert content(target_dsn) == [(2, "a", None)]


def test_key_change_chain(engine: sa.Engine, target_dsn: str) -> None:
    apply(engine, [ins(1, "a"), upd(2, "a", old=1), upd(3, "a", old=2), ins(1, "new")])
    assert content(target_dsn) == [(1, "new", None), (3, "a", None)]


def test_unchanged_toast_value_is_left_as_is(engine: sa.Engine, target_dsn: str) -> None:
    big = "x" * (2 * 1024 * 1024)
    apply(engine, [ins(1, big, 0), ins(2, "small", 0)])
    batch = [upd(1, UNCHANGED, 1), upd(2, UNCHANGED, 1), upd(1, UNCHANGED, 2)]
    apply(engine, batch)
    apply(engine, batch)  # idempotent too
    rows = content(target_dsn)
    assert [(r[0], len(str(r[1])), r[2]) for r in rows] == [(1, len(big), 2), (2, 5, 1)]
    assert rows[0][1] == big
    # key change of a row with an unchanged TOAST value moves the row, value and all
    apply(engine, [upd(10, UNCHANGED, 3, old=1)])
    apply(engine, [upd(10, UNCHANGED, 3, old=1)])  # re-applied: row already moved
    rows = content(target_dsn)
    assert [(r[0], r[2]) for r in rows] == [(2, 1), (10, 3)]
    assert rows[1][1] == big


def test_unchanged_value_for_missing_row_is_a_row_error(engine: sa.Engine, target_dsn: str) -> None:
    with pytest.raises(RowLevelError, match=r"public\.docs.*body") as ei:
        apply(engine, [upd(99, UNCHANGED, 1)])
    assert "99" not in str(ei.value)


def test_truncate_and_its_switch(engine: sa.Engine, target_dsn: str) -> None:
    trunc = (_rec(Op.TRUNCATE, None), T)
    apply(engine, [ins(1, "a"), trunc], SqlSink(apply_truncate=False))
    assert content(target_dsn) == [(1, "a", None)]
    apply(engine, [trunc, ins(2, "b")])
    assert content(target_dsn) == [(2, "b", None)]


def test_constraint_violation_is_row_level_without_values(
    engine: sa.Engine, target_dsn: str
) -> None:
    with psycopg.connect(target_dsn, autocommit=True) as c:
        c.execute("CREATE UNIQUE INDEX docs_body ON docs (body)")
    with pytest.raises(RowLevelError) as ei:
        apply(engine, [ins(1, "secret@example.com"), ins(2, "secret@example.com")])
    msg = str(ei.value)
    assert "public.docs" in msg and "23505" in msg
    assert "secret" not in msg and ei.value.__cause__ is None


def test_missing_column_is_permanent(engine: sa.Engine, target_dsn: str) -> None:
    with psycopg.connect(target_dsn, autocommit=True) as c:
        c.execute("ALTER TABLE docs DROP COLUMN v")
    with pytest.raises(PermanentError, match=r"public.docs.*42703"):
        apply(engine, [ins(1, "a", 1)])


def test_rows_roll_back_with_the_transaction(engine: sa.Engine, target_dsn: str) -> None:
    with engine.connect() as conn:
        SqlSink().apply(conn, [ins(1, "a")])
        conn.rollback()
    assert content(target_dsn) == []


def test_same_semantics_when_an_array_column_forces_values_lists(target_dsn: str) -> None:
    # A table with an array column cannot go through unnest(); the VALUES-list path must
    # give the same results for upserts, duplicates, deletes, unchanged values and key moves.
    t = TableId("public", "tagged")
    schema = TableSchema(
        t,
        (
            Column("id", ColumnType(Kind.CHAR, length=4), nullable=False),
            Column("body", ColumnType(Kind.TEXT)),
            Column("tags", ColumnType(Kind.TEXT, array_dims=1)),
        ),
        ("id",),
    )

    def r(
        op: Op, id_: str, body: object = "b", tags: object = ("x",), old: str | None = None
    ) -> tuple[ChangeRecord, TableId]:
        after = None if op is Op.DELETE else (id_, body, list(tags) if tags else tags)
        before = (
            (id_, None, None)
            if op is Op.DELETE
            else ((old, None, None) if old is not None else None)
        )
        return ChangeRecord(
            op,
            t,
            schema,
            before,
            after,
            PgLsn(1),
            "7",
            datetime(2026, 1, 1, tzinfo=UTC),
            before_is_key_only=True,
        ), t

    batch = [
        r(Op.INSERT, "a   "),
        r(Op.INSERT, "b   ", "big"),
        r(Op.INSERT, "c   "),
        r(Op.UPDATE, "a   ", "a2", ["y", "z"]),
        r(Op.UPDATE, "a   ", "a3", []),
        r(Op.DELETE, "c   "),
        r(Op.UPDATE, "b   ", UNCHANGED, ["t"]),
        r(Op.UPDATE, "d   ", UNCHANGED, ["u"], old="b   "),
    ]
    eng = sa.create_engine(target_dsn.replace("postgresql://", "postgresql+psycopg://"))
    try:
        for _ in range(2):
            with eng.connect() as conn:
                SqlSink().ensure_table(conn, schema, t)
                SqlSink().apply(conn, batch)
                conn.commit()
            with psycopg.connect(target_dsn) as c:
                got = c.execute("SELECT id, body, tags FROM tagged ORDER BY id").fetchall()
            assert got == [("a   ", "a3", []), ("d   ", "big", ["u"])]
    finally:
        eng.dispose()


def test_failure_inside_a_pipelined_run_names_its_table(engine: sa.Engine, target_dsn: str) -> None:
    """Upserts to two tables go out in one pipelined run; the error names the failing one."""
    other = TableId("public", "other_docs")
    with psycopg.connect(target_dsn, autocommit=True) as c:
        c.execute("CREATE TABLE other_docs (id int PRIMARY KEY, body text UNIQUE, v int)")
        c.execute("INSERT INTO other_docs VALUES (7, 'taken', NULL)")
    second = (ins(1, "taken")[0], other)
    with pytest.raises(RowLevelError) as ei:
        apply(engine, [ins(1, "fine"), second])
    msg = str(ei.value)
    assert "public.other_docs" in msg and "public.docs," not in msg and "taken" not in msg
    assert content(target_dsn) == []  # the whole transaction rolled back


def test_insert_runs_go_by_copy_and_fall_back_to_upsert(engine: sa.Engine, target_dsn: str) -> None:
    """Inserts-only runs use COPY when none of their keys exists yet; a run meeting an existing
    key (rows the target got from elsewhere, or a re-applied batch) upserts instead."""
    sink = SqlSink()
    apply(engine, [ins(i, f"b{i}") for i in range(1, 61)], sink)
    assert sink._writer.copied_rows == 60
    apply(engine, [ins(i, f"again{i}", 1) for i in range(50, 120)], sink)  # 50..60 exist
    assert sink._writer.copied_rows == 60
    assert content(target_dsn) == [(i, f"b{i}", None) for i in range(1, 50)] + [
        (i, f"again{i}", 1) for i in range(50, 120)
    ]
    apply(engine, [ins(i, "small") for i in range(200, 210)], sink)  # too few for COPY
    assert sink._writer.copied_rows == 60


def test_copy_meeting_another_unique_index_does_not_loop(
    engine: sa.Engine, target_dsn: str
) -> None:
    """A COPY failing on a unique index other than the key: retried once as upserts (which
    then name the real problem), never COPY again in a loop."""
    with psycopg.connect(target_dsn, autocommit=True) as c:
        c.execute("CREATE UNIQUE INDEX docs_body ON docs (body)")
        c.execute("INSERT INTO docs VALUES (1000, 'taken', NULL)")
    sink = SqlSink()
    rows = [ins(i, "taken" if i == 30 else f"b{i}") for i in range(1, 61)]
    with pytest.raises(TransientError, match="retrying with upserts"):
        apply(engine, rows, sink)
    with pytest.raises(RowLevelError, match=r"public\.docs") as ei:
        apply(engine, rows)  # a new sink, as the runtime's retry makes
    assert "taken" not in str(ei.value)
    assert sink._writer.copied_rows == 0
