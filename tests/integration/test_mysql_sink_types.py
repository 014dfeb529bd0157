"""SqlSink into MariaDB: every canonical kind round trips; what MySQL would alter is refused."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from uuid import UUID

import pymysql
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from cdc_sync.config.models import MysqlTarget
from cdc_sync.errors import PermanentError, RowLevelError
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
from cdc_sync.runtime.wiring import _mysql_engine
from cdc_sync.sinks.sql.sink import SqlSink

pytestmark = pytest.mark.integration

U = UUID("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11")
TEXT = "😀 multi\nline \\ ' \" \x00 電話 "
BIG = Decimal("12345678901234567890123456789012345.123456789012345678901234567890")
_838 = timedelta(hours=838, minutes=59, seconds=59, microseconds=999_999)

# name, type, value sent, (column type in information_schema, value read back by PyMySQL)
SPEC: list[tuple[str, ColumnType, object, str, object]] = [
    ("id", ColumnType(Kind.BIGINT), 1, "bigint(20)", 1),
    ("u8", ColumnType(Kind.BIGINT, unsigned=True), 2**64 - 1, "bigint(20) unsigned", 2**64 - 1),
    ("ti", ColumnType(Kind.TINYINT), -128, "tinyint(4)", -128),
    ("tu", ColumnType(Kind.TINYINT, unsigned=True), 255, "tinyint(3) unsigned", 255),
    ("t1", ColumnType(Kind.TINYINT, display_width=1), 7, "tinyint(1)", 7),  # MySQL BOOLEAN
    ("si", ColumnType(Kind.SMALLINT, unsigned=True), 65535, "smallint(5) unsigned", 65535),
    ("mi", ColumnType(Kind.MEDIUMINT), -8388608, "mediumint(9)", -8388608),
    ("mu", ColumnType(Kind.MEDIUMINT, unsigned=True), 16777215, "mediumint(8) unsigned", 16777215),
    ("i4", ColumnType(Kind.INTEGER), -(2**31), "int(11)", -(2**31)),
    ("iu", ColumnType(Kind.INTEGER, unsigned=True), 2**32 - 1, "int(10) unsigned", 2**32 - 1),
    ("dec", ColumnType(Kind.NUMERIC, precision=65, scale=30), BIG, "decimal(65,30)", BIG),
    ("n", ColumnType(Kind.NUMERIC), Decimal("-1.5"), "decimal(65,30)", Decimal("-1.5")),
    (
        "n122",
        ColumnType(Kind.NUMERIC, precision=12, scale=2),
        Decimal("-9999999999.99"),
        "decimal(12,2)",
        Decimal("-9999999999.99"),
    ),
    ("r", ColumnType(Kind.REAL), 1.5, "float", 1.5),
    ("d", ColumnType(Kind.DOUBLE), 2.2250738585072014e-308, "double", 2.2250738585072014e-308),
    ("t", ColumnType(Kind.TEXT), TEXT, "longtext", TEXT),
    ("tt", ColumnType(Kind.TEXT, length=255), "tiny", "tinytext", "tiny"),
    ("vc", ColumnType(Kind.VARCHAR, length=20), "", "varchar(20)", ""),
    ("c", ColumnType(Kind.CHAR, length=5), "ab", "char(5)", "ab"),
    ("b", ColumnType(Kind.BOOLEAN), True, "tinyint(1)", 1),
    ("dt", ColumnType(Kind.DATE), date(1000, 1, 1), "date", date(1000, 1, 1)),
    (
        "tm",
        ColumnType(Kind.TIME),
        time(23, 59, 59, 999999),
        "time(6)",
        timedelta(hours=23, minutes=59, seconds=59, microseconds=999999),
    ),
    ("dn", ColumnType(Kind.DURATION, precision=6), -_838, "time(6)", -_838),
    (
        "d24",
        ColumnType(Kind.DURATION, precision=6),
        timedelta(hours=100, microseconds=5),
        "time(6)",
        timedelta(hours=100, microseconds=5),
    ),
    (
        "d0",
        ColumnType(Kind.DURATION, precision=0),
        timedelta(hours=-25),
        "time",
        timedelta(hours=-25),
    ),
    (
        "ts",
        ColumnType(Kind.TIMESTAMP, precision=6),
        datetime(9999, 12, 31, 23, 59, 59, 999999),
        "datetime(6)",
        datetime(9999, 12, 31, 23, 59, 59, 999999),
    ),
    (
        "ts0",
        ColumnType(Kind.TIMESTAMP, precision=0),
        datetime(2000, 2, 29, 23, 59, 59),
        "datetime",
        datetime(2000, 2, 29, 23, 59, 59),
    ),
    (
        "tz",
        ColumnType(Kind.TIMESTAMPTZ, precision=6),
        datetime(2038, 1, 19, 3, 14, 7, 999999, tzinfo=UTC),
        "timestamp(6)",
        datetime(2038, 1, 19, 3, 14, 7, 999999),
    ),
    (
        "tz2",
        ColumnType(Kind.TIMESTAMPTZ, precision=3),
        datetime(2026, 11, 23, 12, 0, 0, 500000, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        "timestamp(3)",
        datetime(2026, 11, 23, 6, 30, 0, 500000),
    ),
    ("y", ColumnType(Kind.YEAR), 2155, "year(4)", 2155),
    (
        "e",
        ColumnType(Kind.ENUM, enum_name="mood", enum_labels=("sad", "ok", "happy")),
        "happy",
        "enum('sad','ok','happy')",
        "happy",
    ),
    (
        "st",
        ColumnType(Kind.SET, enum_labels=("a", "b", "c")),
        "a,c",
        "set('a','b','c')",
        "a,c",
    ),
    ("bit", ColumnType(Kind.BIT, length=10), "1000000001", "bit(10)", b"\x02\x01"),
    (
        "js",
        ColumnType(Kind.JSONB),
        JsonText('{"b": 1,   "a": [1, 2.50]}'),
        "longtext",
        '{"b": 1,   "a": [1, 2.50]}',
    ),
    ("by", ColumnType(Kind.BYTES), b"\x00\xff\x00\x10", "longblob", b"\x00\xff\x00\x10"),
    ("vbin", ColumnType(Kind.BYTES, length=4), b"\x00\x00ab", "varbinary(4)", b"\x00\x00ab"),
    (
        "bin",
        ColumnType(Kind.BYTES, length=4, fixed=True),
        b"ab\x00\x00",
        "binary(4)",
        b"ab\x00\x00",
    ),
    ("bl", ColumnType(Kind.BYTES, length=65_535), b"\x00b", "blob", b"\x00b"),  # MySQL BLOB
    ("mb", ColumnType(Kind.BYTES, length=16_777_215), b"\x01", "mediumblob", b"\x01"),
    ("u", ColumnType(Kind.UUID), U, "char(36)", str(U).lower()),
    (
        "iv",
        ColumnType(Kind.INTERVAL),
        Interval(-14, 3, -1),
        "varchar(100)",
        Interval(-14, 3, -1).to_iso(),
    ),
]

T = TableId("ignored", "everything")
SCHEMA = TableSchema(
    T, tuple(Column(n, ct, nullable=n not in ("id", "vc")) for n, ct, *_ in SPEC), ("id",)
)


def rec(op: Op, after: tuple[object, ...], schema: TableSchema = SCHEMA) -> ChangeRecord:
    return ChangeRecord(
        op, schema.table, schema, None, after, PgLsn(1), "1", datetime(2026, 1, 1, tzinfo=UTC)
    )


def db_of(dsn: str) -> str:
    return dsn.rsplit("/", 1)[-1]


def read(dsn: str, sql: str) -> list[tuple[object, ...]]:
    port = int(dsn.rsplit(":", 1)[-1].split("/", 1)[0])
    conn = pymysql.connect(host="127.0.0.1", port=port, user="root", database=db_of(dsn))
    try:
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


@pytest.fixture
def engine(my_target_dsn: str) -> Iterator[sa.Engine]:
    eng = _mysql_engine(MysqlTarget(type="mysql", dsn=SecretStr(my_target_dsn)), "test")
    yield eng
    eng.dispose()


def test_every_kind_round_trips_exactly(engine: sa.Engine, my_target_dsn: str) -> None:
    db = db_of(my_target_dsn)
    target = TableId(db, "copy")
    sink = SqlSink()
    full = tuple(v for _, _, v, _, _ in SPEC)
    nulls = tuple(2 if n == "id" else "x" if n == "vc" else None for n, *_ in SPEC)
    with engine.connect() as conn:
        sink.ensure_table(conn, SCHEMA, target)
        sink.ensure_table(conn, SCHEMA, target)  # idempotent: nothing to change
        sink.apply(conn, [(rec(Op.INSERT, full), target), (rec(Op.INSERT, nulls), target)])
        conn.commit()
    types = read(
        my_target_dsn,
        "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS "
        f"WHERE TABLE_SCHEMA = '{db}' AND TABLE_NAME = 'copy' ORDER BY ORDINAL_POSITION",
    )
    assert types == [(n, sql) for n, _, _, sql, _ in SPEC]
    (got,) = read(my_target_dsn, "SELECT * FROM copy WHERE id = 1")
    for (name, *_, want), have in zip(SPEC, got, strict=True):
        assert have == want, name
    (empty,) = read(my_target_dsn, "SELECT * FROM copy WHERE id = 2")
    assert [v for n, v in zip(SCHEMA.names, empty, strict=True) if n not in ("id", "vc")] == [
        None
    ] * (len(SPEC) - 2)
    # the table was made the way the docs say
    (create,) = read(my_target_dsn, "SHOW CREATE TABLE copy")
    assert "ENGINE=InnoDB" in str(create[1]) and "utf8mb4_nopad_bin" in str(create[1])
    assert "PRIMARY KEY (`id`)" in str(create[1]) and "AUTO_INCREMENT" not in str(create[1])


POLICY = [
    ("nan", ColumnType(Kind.NUMERIC), Decimal("NaN"), "NaN"),
    ("inf", ColumnType(Kind.DOUBLE), float("inf"), "Infinity"),
    ("fnan", ColumnType(Kind.REAL), float("nan"), "NaN"),
    ("n31", ColumnType(Kind.NUMERIC), Decimal("0." + "1" * 31), "more digits"),
    ("n36", ColumnType(Kind.NUMERIC), Decimal("1" * 36), "more digits"),
    ("n52", ColumnType(Kind.NUMERIC, precision=5, scale=2), Decimal("1.234"), "more digits"),
    (
        "tz",
        ColumnType(Kind.TIMESTAMPTZ),
        datetime(2100, 1, 1, tzinfo=UTC),
        "TIMESTAMP range",
    ),
    (
        "tz0",
        ColumnType(Kind.TIMESTAMPTZ),
        datetime(1970, 1, 1, tzinfo=UTC),
        "TIMESTAMP range",
    ),
    ("dur", ColumnType(Kind.DURATION), timedelta(hours=900), "TIME range"),
    ("frac", ColumnType(Kind.TIME, precision=0), time(1, 2, 3, 500), "fractional"),
    ("short", ColumnType(Kind.BYTES, length=4, fixed=True), b"ab", "shorter than BINARY(4)"),
]


@pytest.mark.parametrize(("name", "ct", "value", "why"), POLICY, ids=[p[0] for p in POLICY])
def test_values_mysql_would_alter_stop_the_row(
    engine: sa.Engine, my_target_dsn: str, name: str, ct: ColumnType, value: object, why: str
) -> None:
    target = TableId(db_of(my_target_dsn), "policy")
    schema = TableSchema(
        T, (Column("id", ColumnType(Kind.INTEGER), False), Column(name, ct)), ("id",)
    )
    sink = SqlSink()
    with engine.connect() as conn:
        sink.ensure_table(conn, schema, target)
        with pytest.raises(RowLevelError) as err:
            sink.apply(conn, [(rec(Op.INSERT, (1, value), schema), target)])
    text = str(err.value)
    assert f"{target}" in text and repr(name) in text and why in text
    assert str(value) not in text or str(value) in ("nan", "inf", "NaN")


@pytest.mark.parametrize(
    ("ct", "value", "column"),
    [
        (ColumnType(Kind.VARCHAR, length=3), "toolong-secret", "v"),
        (ColumnType(Kind.JSON), JsonText('{"secret": '), "v"),
        (ColumnType(Kind.ENUM, enum_name="x", enum_labels=("a",)), "secret", "v"),
        (ColumnType(Kind.DATE), date(1, 1, 1), None),
        (ColumnType(Kind.BYTES, length=4, fixed=True), b"toolong-secret", "v"),
    ],
    ids=["too-long", "bad-json", "bad-enum", "date-range", "binary-too-long"],
)
def test_server_data_errors_are_row_level_without_values(
    engine: sa.Engine, my_target_dsn: str, ct: ColumnType, value: object, column: str | None
) -> None:
    target = TableId(db_of(my_target_dsn), "srv")
    schema = TableSchema(
        T, (Column("id", ColumnType(Kind.INTEGER), False), Column("v", ct)), ("id",)
    )
    sink = SqlSink()
    with engine.connect() as conn:
        sink.ensure_table(conn, schema, target)
        try:
            sink.apply(conn, [(rec(Op.INSERT, (1, value), schema), target)])
        except RowLevelError as e:
            assert str(target) in str(e) and "secret" not in str(e)
            if column:
                assert repr(column) in str(e) or "MySQL error 4025" in str(e)
        else:
            assert ct.kind is Kind.DATE  # MariaDB stores year 1 dates: nothing altered


def test_existing_table_is_widened_and_checked(engine: sa.Engine, my_target_dsn: str) -> None:
    db = db_of(my_target_dsn)
    target = TableId(db, "grow")
    base = (Column("id", ColumnType(Kind.INTEGER), False), Column("a", ColumnType(Kind.TEXT)))
    s1 = TableSchema(T, base, ("id",))
    mood = ColumnType(Kind.ENUM, enum_name="m", enum_labels=("sad", "ok"))
    s1 = TableSchema(T, (*base, Column("m", mood)), ("id",))
    more = ColumnType(Kind.ENUM, enum_name="m", enum_labels=("sad", "ok", "meh"))
    s2 = TableSchema(
        T,
        (*base, Column("m", more), Column("added", ColumnType(Kind.NUMERIC, precision=5, scale=1))),
        ("id",),
    )
    sink = SqlSink()
    with engine.connect() as conn:
        sink.ensure_table(conn, s1, target)
        sink.apply(conn, [(rec(Op.INSERT, (1, "x", "ok"), s1), target)])
        assert sink.ddl_would_commit(conn, s2, target)
        assert not sink.ddl_would_commit(conn, s1, target)
        # DDL would commit the open transaction: refused while it holds work
        with pytest.raises(PermanentError, match="commits the open transaction"):
            sink.ensure_table(conn, s2, target)
        conn.commit()
        sink.ensure_table(conn, s2, target)
        sink.apply(conn, [(rec(Op.INSERT, (2, "y", "meh", Decimal("1.5")), s2), target)])
        conn.commit()
    assert read(my_target_dsn, "SELECT * FROM grow ORDER BY id") == [
        (1, "x", "ok", None),
        (2, "y", "meh", Decimal("1.5")),
    ]
    bad = TableSchema(T, (base[0], Column("a", ColumnType(Kind.INTEGER))), ("id",))
    with engine.connect() as conn, pytest.raises(PermanentError, match=r"grow: column 'a'"):
        sink.ensure_table(conn, bad, target)


def _bin(n: int, fixed: bool = True) -> TableSchema:
    cols = (
        Column("id", ColumnType(Kind.INTEGER), False),
        Column("b", ColumnType(Kind.BYTES, length=n, fixed=fixed)),
    )
    return TableSchema(T, cols, ("id",))


def test_existing_binary_columns_are_kept_widened_or_refused(
    engine: sa.Engine, my_target_dsn: str
) -> None:
    """BINARY(n) read back from information_schema is the source's type: no DDL. A
    VARBINARY(n) made by an earlier version holds the same bytes: kept. A source that widens
    BINARY(4) to BINARY(8) padded its rows; MODIFY pads the target's alike. A BINARY(4)
    target for a BINARY(2) source is what that MODIFY makes, met again by the rows from
    before the source's ALTER when they are replayed: kept (padded, as the source's were),
    with a WARNING, never a stop for good (tests/integration/test_ddl_drift_routes.py)."""
    db = db_of(my_target_dsn)
    sink = SqlSink()
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE old_vb (id int PRIMARY KEY, b varbinary(4))")
        conn.exec_driver_sql("INSERT INTO old_vb VALUES (1, x'61620000')")
        conn.commit()
        sink.ensure_table(conn, _bin(4), TableId(db, "fb"))
        assert not sink.ddl_would_commit(conn, _bin(4), TableId(db, "fb"))
        assert not sink.ddl_would_commit(conn, _bin(4), TableId(db, "old_vb"))
        conn.commit()
        sink.apply(conn, [(rec(Op.INSERT, (1, b"ab\x00\x00"), _bin(4)), TableId(db, "fb"))])
        conn.commit()
        assert not sink.ddl_would_commit(conn, _bin(2), TableId(db, "fb"))  # pads b'ab' to 4
        sink.ensure_table(conn, _bin(2), TableId(db, "fb"))
        conn.rollback()
        sink.ensure_table(conn, _bin(8), TableId(db, "fb"))
        sink.ensure_table(conn, _bin(8), TableId(db, "old_vb"))
        sink.ensure_table(conn, _bin(8, fixed=False), TableId(db, "fb"))
    types = read(
        my_target_dsn,
        "SELECT TABLE_NAME, COLUMN_TYPE FROM information_schema.COLUMNS "
        f"WHERE TABLE_SCHEMA = '{db}' AND TABLE_NAME IN ('fb', 'old_vb') AND COLUMN_NAME = 'b' "
        "ORDER BY TABLE_NAME",
    )
    assert types == [("fb", "varbinary(8)"), ("old_vb", "binary(8)")]
    pad = b"ab" + bytes(6)
    assert read(my_target_dsn, "SELECT b FROM fb UNION ALL SELECT b FROM old_vb") == [
        (pad,),
        (pad,),
    ]


def test_missing_database_is_refused_and_key_columns_get_bounded_types(
    engine: sa.Engine, my_target_dsn: str
) -> None:
    target = TableId(db_of(my_target_dsn) + "_crm", "customers")
    schema = TableSchema(
        T,
        (
            Column("email", ColumnType(Kind.TEXT), False),
            Column("blob", ColumnType(Kind.BYTES, length=16), False),
            Column("note", ColumnType(Kind.TEXT)),
        ),
        ("email", "blob"),
    )
    with engine.connect() as conn:
        with pytest.raises(PermanentError, match="create_tables is off"):
            SqlSink(create_tables=False).ensure_table(conn, schema, target)
        conn.rollback()
        # Never made by the daemon (a table entry without target: keeps the source's schema,
        # which may name no database of this server): refused, naming what to do.
        with pytest.raises(PermanentError, match=r"has no database .* does not create one"):
            SqlSink().ensure_table(conn, schema, target)
        conn.rollback()
        conn.exec_driver_sql(f"CREATE DATABASE `{target.schema}`")
        conn.commit()
        SqlSink().ensure_table(conn, schema, target)
        cols = conn.exec_driver_sql(
            "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS "
            f"WHERE TABLE_SCHEMA = '{target.schema}' ORDER BY ORDINAL_POSITION"
        ).all()
        conn.exec_driver_sql(f"DROP DATABASE `{target.schema}`")
    assert [tuple(c) for c in cols] == [
        ("email", "varchar(764)"),
        ("blob", "varbinary(16)"),
        ("note", "longtext"),
    ]


def test_unbounded_bytes_key_gets_varbinary_3072(engine: sa.Engine, my_target_dsn: str) -> None:
    target = TableId(db_of(my_target_dsn), "bkey")
    schema = TableSchema(T, (Column("k", ColumnType(Kind.BYTES), False),), ("k",))
    with engine.connect() as conn:
        SqlSink().ensure_table(conn, schema, target)
    assert read(my_target_dsn, "SHOW COLUMNS FROM bkey")[0][1] == "varbinary(3072)"


def test_existing_table_without_key_index_is_permanent(
    engine: sa.Engine, my_target_dsn: str
) -> None:
    target = TableId(db_of(my_target_dsn), "nokey")
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE nokey (id int, v text)")
    s = TableSchema(T, (Column("id", ColumnType(Kind.INTEGER), False),), ("id",))
    with engine.connect() as conn, pytest.raises(PermanentError, match="no primary key"):
        SqlSink().ensure_table(conn, s, target)
