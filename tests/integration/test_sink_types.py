"""SqlSink round trip: every canonical kind read back exactly; tables created and widened."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from decimal import Decimal
from uuid import UUID

import psycopg
import pytest
import sqlalchemy as sa

from cdc_sync.errors import PermanentError
from cdc_sync.records import (
    ChangeRecord,
    Column,
    ColumnType,
    Interval,
    JsonText,
    Kind,
    Op,
    PgLsn,
    TableId,
    TableSchema,
)
from cdc_sync.sinks.sql.sink import SqlSink
from tests.integration.harness import column_types, rows_as_text

pytestmark = pytest.mark.integration

SRC = TableId("public", "everything")
MOOD = ColumnType(Kind.ENUM, enum_name="mood", enum_labels=("sad", "ok", "happy"))
U = UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")

# name, type, SQL type of the reference table, value, SQL literal of the same value
SPEC: list[tuple[str, ColumnType, str, object, str]] = [
    ("id", ColumnType(Kind.BIGINT), "bigint", 1, "1"),
    ("i2", ColumnType(Kind.SMALLINT), "smallint", -32768, "-32768"),
    ("i4", ColumnType(Kind.INTEGER), "integer", 2147483647, "2147483647"),
    ("i8", ColumnType(Kind.BIGINT), "bigint", -9223372036854775808, "-9223372036854775808"),
    ("n", ColumnType(Kind.NUMERIC), "numeric", Decimal("NaN"), "'NaN'"),
    ("ninf", ColumnType(Kind.NUMERIC), "numeric", Decimal("-Infinity"), "'-Infinity'"),
    ("nscale", ColumnType(Kind.NUMERIC), "numeric", Decimal("1.500"), "1.500"),
    (
        "n122",
        ColumnType(Kind.NUMERIC, precision=12, scale=2),
        "numeric(12,2)",
        Decimal("-9999999999.99"),
        "-9999999999.99",
    ),
    (
        "n3810",
        ColumnType(Kind.NUMERIC, precision=38, scale=10),
        "numeric(38,10)",
        Decimal("123.4560000001"),
        "123.4560000001",
    ),
    ("r", ColumnType(Kind.REAL), "real", 3.4028234663852886e38, "3.4028235e38"),
    ("d", ColumnType(Kind.DOUBLE), "double precision", float("-inf"), "'-Infinity'"),
    (
        "d2",
        ColumnType(Kind.DOUBLE),
        "double precision",
        2.2250738585072014e-308,
        "2.2250738585072014e-308",
    ),
    ("t", ColumnType(Kind.TEXT), "text", "multi\nline \t ☎ 电话 ", "E'multi\\nline \\t ☎ 电话 '"),
    ("vc", ColumnType(Kind.VARCHAR, length=20), "varchar(20)", "", "''"),
    ("c", ColumnType(Kind.CHAR, length=5), "char(5)", "ab   ", "'ab'"),
    ("b", ColumnType(Kind.BOOLEAN), "boolean", False, "false"),
    ("dt", ColumnType(Kind.DATE), "date", date(1, 1, 1), "'0001-01-01'"),
    ("tm", ColumnType(Kind.TIME), "time", time(23, 59, 59, 999999), "'23:59:59.999999'"),
    ("tm3", ColumnType(Kind.TIME, precision=3), "time(3)", time(1, 2, 3, 456000), "'01:02:03.456'"),
    (
        "ts",
        ColumnType(Kind.TIMESTAMP),
        "timestamp",
        datetime(2026, 11, 23, 12, 0, 0, 123456),
        "'2026-11-23 12:00:00.123456'",
    ),
    (
        "ts0",
        ColumnType(Kind.TIMESTAMP, precision=0),
        "timestamp(0)",
        datetime(2000, 2, 29, 23, 59, 59),
        "'2000-02-29 23:59:59'",
    ),
    (
        "tstz",
        ColumnType(Kind.TIMESTAMPTZ),
        "timestamptz",
        datetime(2026, 11, 23, 6, 30, 0, 500000, tzinfo=UTC),
        "'2026-11-23 12:00:00.5+05:30'",
    ),
    (
        "iv",
        ColumnType(Kind.INTERVAL),
        "interval",
        Interval(-14, 3, -(4 * 3600 + 5 * 60 + 6) * 1_000_000 - 1),
        "'-1 year -2 mons +3 days -04:05:06.000001'",
    ),
    ("iv0", ColumnType(Kind.INTERVAL), "interval", Interval(0, 0, -500_000), "'-0.5 seconds'"),
    ("u", ColumnType(Kind.UUID), "uuid", U, f"'{U}'"),
    (
        "js",
        ColumnType(Kind.JSON),
        "json",
        JsonText('{"b": 1,   "a": [1, 2.50]}'),
        """'{"b": 1,   "a": [1, 2.50]}'""",
    ),
    (
        "jb",
        ColumnType(Kind.JSONB),
        "jsonb",
        JsonText('{"a": [1, 2.50], "b": 1}'),
        """'{"b": 1, "a": [1, 2.50]}'""",
    ),
    ("by", ColumnType(Kind.BYTES), "bytea", b"\x00\xff\x00\x10", "'\\x00ff0010'"),
    ("m", MOOD, "mood", "happy", "'happy'"),
    ("ai", ColumnType(Kind.INTEGER, array_dims=1), "int[]", [1, None, 3], "'{1,NULL,3}'"),
    (
        "at",
        ColumnType(Kind.TEXT, array_dims=1),
        "text[]",
        ["a b", "c,d", 'e"f', None, ""],
        """'{"a b","c,d","e\\"f",NULL,""}'""",
    ),
    (
        "an",
        ColumnType(Kind.NUMERIC, array_dims=1),
        "numeric[]",
        [Decimal("1.10"), Decimal("NaN")],
        "'{1.10,NaN}'",
    ),
    ("a2", ColumnType(Kind.INTEGER, array_dims=2), "int[][]", [[1, 2], [3, 4]], "'{{1,2},{3,4}}'"),
    ("ae", ColumnType(Kind.INTEGER, array_dims=1), "int[]", [], "'{}'"),
    (
        "am",
        ColumnType(Kind.ENUM, enum_name="mood", enum_labels=MOOD.enum_labels, array_dims=1),
        "mood[]",
        ["sad", "ok"],
        "'{sad,ok}'",
    ),
    (
        "aiv",
        ColumnType(Kind.INTERVAL, array_dims=1),
        "interval[]",
        [Interval(1, 2, 3), Interval(0, 0, -1)],
        "'{\"1 mon 2 days 00:00:00.000003\",-00:00:00.000001}'",
    ),
    (
        "ajs",
        ColumnType(Kind.JSON, array_dims=1),
        "json[]",
        [JsonText('{"x" :1}')],
        """ARRAY['{"x" :1}']::json[]""",
    ),
    (
        "ats",
        ColumnType(Kind.TIMESTAMPTZ, array_dims=1),
        "timestamptz[]",
        [datetime(2026, 1, 1, tzinfo=UTC)],
        "'{\"2026-01-01 00:00:00+00\"}'",
    ),
    ("au", ColumnType(Kind.UUID, array_dims=1), "uuid[]", [U], f"'{{{U}}}'"),
]

SCHEMA = TableSchema(
    SRC,
    tuple(Column(n, ct, nullable=n not in ("id", "vc")) for n, ct, _, _, _ in SPEC),
    ("id",),
)


def rec(
    op: Op,
    after: tuple[object, ...] | None,
    before: tuple[object, ...] | None = None,
    schema: TableSchema = SCHEMA,
    lsn: int = 1,
) -> ChangeRecord:
    return ChangeRecord(
        op, schema.table, schema, before, after, PgLsn(lsn), "1", datetime(2026, 1, 1, tzinfo=UTC)
    )


def texts(dsn: str, table: str) -> list[str]:
    return rows_as_text(dsn, table, order_by="id")


@pytest.fixture
def engine(target_dsn: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(target_dsn.replace("postgresql://", "postgresql+psycopg://"))
    yield eng
    eng.dispose()


@pytest.mark.parametrize(
    ("arrays", "many"),
    [(True, False), (False, False), (False, True)],
    ids=["values-path", "unnest-path", "copy-path"],
)
def test_every_kind_round_trips_exactly(
    engine: sa.Engine, target_dsn: str, arrays: bool, many: bool
) -> None:
    # With an array column the sink sends VALUES lists, without one unnest() of arrays, and
    # a run of many inserts goes by COPY: every path must be exact.
    spec = SPEC if arrays else [s for s in SPEC if not s[1].array_dims]
    schema = TableSchema(
        SRC, tuple(c for c in SCHEMA.columns if c.name in {s[0] for s in spec}), ("id",)
    )
    # Reference: the same values written as SQL literals into a table of the same DDL.
    cols = ", ".join(f"{n} {sql}" + (" NOT NULL" if n == "vc" else "") for n, _, sql, _, _ in spec)
    with psycopg.connect(target_dsn, autocommit=True) as c:
        c.execute("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')")
        c.execute(f"CREATE TABLE ref ({cols}, PRIMARY KEY (id))")  # type: ignore[arg-type]
        c.execute(f"INSERT INTO ref VALUES ({', '.join(lit for *_, lit in spec)})")  # type: ignore[arg-type]
        c.execute("INSERT INTO ref (id, vc) VALUES (2, 'x')")
    sink = SqlSink()
    target = TableId("public", "copy")
    full = tuple(v for _, _, _, v, _ in spec)
    nulls = tuple(2 if n == "id" else "x" if n == "vc" else None for n, *_ in spec)
    filler = [
        tuple(1000 + k if n == "id" else f"f{k}" if n == "vc" else None for n, *_ in spec)
        for k in range(60 if many else 0)
    ]
    with engine.connect() as conn:
        sink.ensure_table(conn, schema, target)
        sink.apply(
            conn,
            [(rec(Op.INSERT, row, schema=schema), target) for row in (full, nulls, *filler)],
        )
        conn.commit()
    assert sink._writer.copied_rows == (62 if many else 0)
    with psycopg.connect(target_dsn, autocommit=True) as c:
        c.execute("DELETE FROM copy WHERE id >= 1000")
    assert column_types(target_dsn, "copy") == column_types(target_dsn, "ref")
    assert texts(target_dsn, "copy") == texts(target_dsn, "ref")
    # and read back as Python values: the canonical ones (NaN compared as text)
    with psycopg.connect(target_dsn) as c:
        got = c.execute("SELECT * FROM copy WHERE id = 1").fetchone()
    assert got is not None
    for (name, ct, _, want, _), have in zip(spec, got, strict=True):
        if ct.kind in (Kind.INTERVAL, Kind.JSON, Kind.JSONB) or name in ("n", "an", "r", "am"):
            # Compared as text above: psycopg reads these as other Python types (timedelta,
            # parsed JSON), NaN != NaN, enum arrays need registering, and float4 comes back
            # via its shortest decimal text.
            continue
        assert have == want, name


def test_ensure_table_adds_new_columns_and_rejects_mismatches(
    engine: sa.Engine, target_dsn: str
) -> None:
    sink = SqlSink()
    tid = TableId("public", "grow")
    s1 = TableSchema(
        tid,
        (Column("id", ColumnType(Kind.INTEGER), False), Column("a", ColumnType(Kind.TEXT))),
        ("id",),
    )
    s2 = TableSchema(
        tid,
        (
            *s1.columns,
            Column("added", ColumnType(Kind.NUMERIC, precision=5, scale=1)),
            Column("mood", MOOD),
        ),
        ("id",),
    )
    with engine.connect() as conn:
        sink.ensure_table(conn, s1, tid)
        sink.apply(conn, [(rec(Op.INSERT, (1, "x"), schema=s1), tid)])
        sink.ensure_table(conn, s1, tid)  # idempotent
        sink.ensure_table(conn, s2, tid)
        sink.apply(conn, [(rec(Op.INSERT, (2, "y", Decimal("1.5"), "ok"), schema=s2), tid)])
        conn.commit()
    assert column_types(target_dsn, "grow") == [
        ("id", "integer", True),
        ("a", "text", False),
        ("added", "numeric(5,1)", False),
        ("mood", "mood", False),
    ]
    assert texts(target_dsn, "grow") == ["(1,x,,)", "(2,y,1.5,ok)"]
    bad = TableSchema(tid, (s1.columns[0], Column("a", ColumnType(Kind.INTEGER))), ("id",))
    with engine.connect() as conn, pytest.raises(PermanentError, match=r"public.grow.*'a'"):
        sink.ensure_table(conn, bad, tid)


def test_enum_gains_labels(engine: sa.Engine, target_dsn: str) -> None:
    sink = SqlSink()
    tid = TableId("public", "moods")
    s1 = TableSchema(
        tid, (Column("id", ColumnType(Kind.INTEGER), False), Column("m", MOOD)), ("id",)
    )
    more = ColumnType(
        Kind.ENUM, enum_name="mood", enum_labels=("awful", "sad", "meh", "ok", "happy")
    )
    s2 = TableSchema(tid, (s1.columns[0], Column("m", more)), ("id",))
    with engine.connect() as conn:
        sink.ensure_table(conn, s1, tid)
        conn.commit()
        sink.ensure_table(conn, s2, tid)
        sink.apply(
            conn,
            [
                (rec(Op.INSERT, (1, "meh"), schema=s2), tid),
                (rec(Op.INSERT, (2, "awful"), schema=s2), tid),
            ],
        )
        conn.commit()
    with psycopg.connect(target_dsn) as c:
        labels = c.execute("SELECT enum_range(NULL::mood)::text").fetchone()
    assert labels == ("{awful,sad,meh,ok,happy}",)


def test_missing_table_without_create_is_permanent(engine: sa.Engine) -> None:
    tid = TableId("public", "absent")
    s = TableSchema(tid, (Column("id", ColumnType(Kind.INTEGER), False),), ("id",))
    with engine.connect() as conn, pytest.raises(PermanentError, match=r"public\.absent"):
        SqlSink(create_tables=False).ensure_table(conn, s, tid)


def test_existing_table_without_key_index_is_permanent(engine: sa.Engine, target_dsn: str) -> None:
    with psycopg.connect(target_dsn, autocommit=True) as c:
        c.execute("CREATE TABLE nokey (id int, v text)")
    tid = TableId("public", "nokey")
    s = TableSchema(
        tid,
        (Column("id", ColumnType(Kind.INTEGER), False), Column("v", ColumnType(Kind.TEXT))),
        ("id",),
    )
    with engine.connect() as conn, pytest.raises(PermanentError, match="no primary key"):
        SqlSink().ensure_table(conn, s, tid)
