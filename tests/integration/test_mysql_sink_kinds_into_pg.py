"""MySQL-born canonical kinds into a PostgreSQL target: widened exactly; NUL text refused."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from cdc_sync.errors import CdcSyncError, RowLevelError
from cdc_sync.records import ChangeRecord, Column, ColumnType, Kind, Op, PgLsn, TableId, TableSchema
from cdc_sync.sinks.sql.sink import SqlSink
from tests.integration.harness import column_types, rows_as_text

pytestmark = pytest.mark.integration

T = TableId("public", "kinds")
# name, type, value, PostgreSQL type, text of the value in PostgreSQL's row output
SPEC: list[tuple[str, ColumnType, object, str, str]] = [
    ("id", ColumnType(Kind.INTEGER), 1, "integer", "1"),
    ("ti", ColumnType(Kind.TINYINT), -128, "smallint", "-128"),
    ("tu", ColumnType(Kind.TINYINT, unsigned=True), 255, "smallint", "255"),
    ("su", ColumnType(Kind.SMALLINT, unsigned=True), 65535, "integer", "65535"),
    ("mi", ColumnType(Kind.MEDIUMINT), -8388608, "integer", "-8388608"),
    ("mu", ColumnType(Kind.MEDIUMINT, unsigned=True), 16777215, "integer", "16777215"),
    ("iu", ColumnType(Kind.INTEGER, unsigned=True), 4294967295, "bigint", "4294967295"),
    (
        "bu",
        ColumnType(Kind.BIGINT, unsigned=True),
        18446744073709551615,
        "numeric(20,0)",
        "18446744073709551615",
    ),
    ("bu2", ColumnType(Kind.BIGINT, unsigned=True), 5, "numeric(20,0)", "5"),
    ("y", ColumnType(Kind.YEAR), 2155, "smallint", "2155"),
    (
        "dn",
        ColumnType(Kind.DURATION, precision=6),
        -timedelta(hours=838, minutes=59, seconds=59, microseconds=999999),
        "interval",
        "-838:59:59.999999",
    ),
    ("d24", ColumnType(Kind.DURATION, precision=0), timedelta(hours=900), "interval", "900:00:00"),
    ("bit", ColumnType(Kind.BIT, length=10), "1000000001", "bit(10)", "1000000001"),
    ("st", ColumnType(Kind.SET, enum_labels=("a", "b", "c")), "a,c", "text", '"a,c"'),
]
SCHEMA = TableSchema(T, tuple(Column(n, ct, n != "id") for n, ct, *_ in SPEC), ("id",))


def rec(after: tuple[object, ...], schema: TableSchema = SCHEMA) -> ChangeRecord:
    return ChangeRecord(
        Op.INSERT, T, schema, None, after, PgLsn(1), "1", datetime(2026, 1, 1, tzinfo=UTC)
    )


@pytest.fixture
def engine(target_dsn: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(target_dsn.replace("postgresql://", "postgresql+psycopg://"))
    yield eng
    eng.dispose()


def test_mysql_kinds_widen_exactly(engine: sa.Engine, target_dsn: str) -> None:
    row = tuple(v for _, _, v, _, _ in SPEC)
    nulls = (2,) + (None,) * (len(SPEC) - 1)
    sink = SqlSink()
    with engine.connect() as conn:
        sink.ensure_table(conn, SCHEMA, T)
        sink.apply(conn, [(rec(row), T), (rec(nulls), T)])
        sink.apply(conn, [(rec(row), T)])  # the same again: upsert by key
        conn.commit()
        sink.ensure_table(conn, SCHEMA, T)  # existing columns check out
    assert [c[:2] for c in column_types(target_dsn, "kinds")] == [(n, t) for n, _, _, t, _ in SPEC]
    assert rows_as_text(target_dsn, "kinds", order_by="id") == [
        "(" + ",".join(text for *_, text in SPEC) + ")",
        "(2" + "," * (len(SPEC) - 1) + ")",
    ]


def test_wrong_bit_length_is_refused_not_cut(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        SqlSink().ensure_table(conn, SCHEMA, T)
        row = (1,) + (None,) * 11 + ("101",) + (None,)
        # a cast to plain ``bit`` would have cut it to bit(1) silently: SQLSTATE 22026 instead
        with pytest.raises(CdcSyncError, match=r"public\.kinds.*22026"):
            SqlSink().apply(conn, [(rec(row), T)])


@pytest.mark.parametrize("arrays", [False, True], ids=["unnest", "values"])
def test_text_with_nul_is_a_row_error_naming_the_column(engine: sa.Engine, arrays: bool) -> None:
    cols = [Column("id", ColumnType(Kind.INTEGER), False), Column("body", ColumnType(Kind.TEXT))]
    if arrays:
        cols.append(Column("tags", ColumnType(Kind.INTEGER, array_dims=1)))
    schema = TableSchema(T, tuple(cols), ("id",))
    row: tuple[object, ...] = (1, "secret\x00value") + (([1],) if arrays else ())
    with engine.connect() as conn:
        SqlSink().ensure_table(conn, schema, T)
        with pytest.raises(RowLevelError, match=r"public\.kinds: column 'body' \(text\)") as ei:
            SqlSink().apply(conn, [(rec(row, schema), T)])
    assert "secret" not in str(ei.value)
