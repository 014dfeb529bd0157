"""Source.fetch_rows / table_schemas on real servers: fetched rows equal streamed ones exactly."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from typing import Any

import pytest

from cdc_sync.config.dsn import parse_mysql_dsn
from cdc_sync.errors import NoKeyError, PermanentError
from cdc_sync.records import ChangeRecord, Heartbeat, Op, Row, TableId, UnreadableRow
from cdc_sync.sources.mysql import fetch as my_fetch
from cdc_sync.sources.mysql.source import MysqlCapture
from cdc_sync.sources.postgres import fetch as pg_fetch
from cdc_sync.sources.postgres.source import PostgresSource
from cdc_sync.testing.myserver import MyServer
from tests.integration.routes import execute
from tests.integration.test_mysql_source import capture, collect, commits
from tests.integration.test_mysql_source import sql as my_sql
from tests.integration.test_pg_source import DDL as PG_DDL
from tests.integration.test_pg_source import ROWS as PG_ROWS
from tests.integration.test_pg_source import changes, drain, query, sql
from tests.integration.test_type_routes import MY_COLS, MY_ROWS, MY_TYPED

pytestmark = pytest.mark.integration


def same(a: object, b: object) -> bool:
    """Equal and of the same type all the way down; NaN and -0.0 by bits, Decimal by text."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        assert isinstance(b, list | tuple)
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, Decimal):
        return str(a) == str(b)  # scale too: 1.10 is not 1.1
    if hasattr(a, "tzinfo"):
        return bool(a == b) and a.tzinfo is b.tzinfo  # type: ignore[attr-defined]
    return a == b


def assert_rows(names: Sequence[str], fetched: Row | None, streamed: Row | None) -> None:
    assert (fetched is None) == (streamed is None), (fetched, streamed)
    if fetched is None or streamed is None:
        return
    for name, f, s in zip(names, fetched, streamed, strict=True):
        assert same(f, s), f"{name}: fetched {f!r} ({type(f).__name__}), streamed {s!r}"


def latest(recs: Sequence[ChangeRecord]) -> dict[tuple[object, ...], Row | None]:
    """Each key's current row as the stream left it (None: deleted)."""
    out: dict[tuple[object, ...], Row | None] = {}
    for r in recs:
        if r.op is Op.UPDATE and r.key_changed():
            out[r.old_key()] = None  # type: ignore[index]
        out[r.key()] = None if r.op is Op.DELETE else r.after
    return out


def count_statements(monkeypatch: pytest.MonkeyPatch, module: Any) -> list[int]:
    """The chunk sizes of the statements fetch_rows builds."""
    sizes: list[int] = []
    real = module.select_sql

    def spy(table: TableId, schema: Any, n: int) -> str:
        sizes.append(n)
        return str(real(table, schema, n))

    monkeypatch.setattr(module, "select_sql", spy)
    return sizes


# -- PostgreSQL ------------------------------------------------------------------------------

PG_EXTRAS = """
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE TABLE extras (
    id int PRIMARY KEY, nm name, bo boolean, c1 char(1), cc char(3)[], vca varchar(5)[],
    iva interval[], jsa json[], jba jsonb[], tma time[], tsa timestamp[], ra real[],
    da float8[], i2a smallint[], i8a bigint[], a3 int[][][], lb int[], posa posint[],
    pos posint, tz0 timestamptz(0), tm6 time(6), n0 numeric(10,0), nneg numeric(5,-2),
    r0 real, d0 float8, t text, iv interval, by bytea
);
"""
PG_EXTRA_ROWS = [
    "INSERT INTO extras (id) VALUES (1)",
    """INSERT INTO extras VALUES (2, 'name_✓', true, 'x', '{"a","ab ","   ",NULL}',
        '{"x y","",NULL,"NULL"}', '{"1 day","-1 mon +2 hours","P1Y2M3DT4H5M6.789S"}',
        ARRAY['{"a" :  1}'::json, '[ ]'], ARRAY['{"b":1,"a":2}'::jsonb],
        '{"00:00:00","23:59:59.999999"}', '{"2000-01-01 00:00:00","1999-12-31 23:59:59.5"}',
        '{NaN,Infinity,-Infinity,-0,1.17549435e-38,3.4028235e38,0.1}',
        '{NaN,-0,5e-324,1.7976931348623157e308,0.30000000000000004}',
        '{-32768,32767}', '{-9223372036854775808,9223372036854775807}',
        '{{{1,2},{3,4}},{{5,NULL},{7,8}}}', '[0:2]={1,2,3}', '{1,2}', 7,
        '2024-03-10 02:30:00-05', '23:59:59.999999', 1234567890, 12345, '-0', '-0',
        E'back\\\\slash "quote" ''single'' 𝄞 \\u00e9', '178000000 years', '\\xdeadbeef00')""",
    """INSERT INTO extras (id, bo, c1, tz0, n0, r0, d0, t, iv) VALUES (3, false, ' ',
        '0001-01-01 00:00:00+00', -9999999999, 1.4e-45, 4.9e-324, '  ', '-178000000 years')""",
]


@pytest.fixture
def pg_source(source_dsn: str) -> Iterator[Callable[..., PostgresSource]]:
    made: list[PostgresSource] = []

    def make(*tables: str) -> PostgresSource:
        n = len(made)
        src = PostgresSource(
            source_dsn, f"fetch_slot{n}_{time.time_ns()}", f"fetch_pub{n}",
            [TableId.parse(t) for t in tables], poll_interval=0.2,
        )  # fmt: skip
        made.append(src)
        return src

    yield make
    for src in made:
        src.close()
    sql(source_dsn, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots")


def test_pg_fetched_rows_equal_streamed_rows(source_dsn: str, pg_source: Any) -> None:
    sql(source_dsn, PG_DDL, PG_EXTRAS)
    src = pg_source("public.everything", "public.extras")
    schemas = src.table_schemas()
    assert src.prepare(create=True) == schemas
    sql(source_dsn, *PG_ROWS, *PG_EXTRA_ROWS)
    sql(
        source_dsn,
        "UPDATE everything SET t = 'now', m = 'ok' WHERE id = 2",
        "UPDATE extras SET id = 20 WHERE id = 2",  # a key change: 2 is gone, 20 is there
        "DELETE FROM everything WHERE id = 3",
    )
    recs = changes(drain(src))
    # The shared catalog session, set unlike the replication session in every output setting
    hostile = ("SET DateStyle = 'SQL, DMY'", "SET TimeZone = 'America/New_York'",
               "SET IntervalStyle = 'postgres'", "SET bytea_output = 'escape'",
               "SET extra_float_digits = 0")  # fmt: skip
    for stmt in hostile:
        src._catalog().execute(stmt)
    settings = "SELECT current_setting('DateStyle'), current_setting('TimeZone')"
    before = src._catalog().execute(settings).fetchone()
    assert before == ("SQL, DMY", "America/New_York")
    for table in (TableId("public", "everything"), TableId("public", "extras")):
        want = latest([r for r in recs if r.table == table])
        assert len(want) >= 4
        schema = schemas[table]
        got = src.fetch_rows(table, schema, list(want))
        for row, (key, streamed) in zip(got, want.items(), strict=True):
            assert_rows(schema.names, row, streamed)
            assert row is None or row[schema.key_indexes[0]] == key[0]
    assert src._catalog().execute(settings).fetchone() == before  # local to the fetch


PG_KEYS = """
CREATE TABLE ck (region text, at timestamptz, n numeric, u uuid, iv interval, f float8,
    arr int[], bo boolean, c char(4), v int,
    PRIMARY KEY (region, at, n, u, iv, f, arr, bo, c));
"""
PG_KEY_ROWS = """INSERT INTO ck VALUES
    ('eu', '2024-01-01 00:00:00+00', 1.50, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
     '1 mon 2 days 00:00:03.5', 'NaN', '{1,NULL}', true, 'ab', 1),
    ('a,"b"\\c {x}', '1999-12-31 23:59:59.999999-08', 'NaN', '00000000-0000-0000-0000-000000000000',
     '-1 day', '-Infinity', '{}', false, '', 2),
    ('☎', '2024-01-01 00:00:00+00', -0.000001, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
     '0', 0.1, '{{1,2},{3,4}}', true, 'abcd', 3)
"""


def test_pg_composite_keys_order_missing_and_chunks(
    source_dsn: str, pg_source: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sql(source_dsn, PG_KEYS, 'CREATE TABLE big (id int PRIMARY KEY, "v%s" text)')
    src = pg_source("public.ck", "public.big")
    src.prepare(create=True)
    sql(source_dsn, PG_KEY_ROWS,
        "INSERT INTO big SELECT g, 'row ' || g FROM generate_series(1, 1300) g")  # fmt: skip
    recs = changes(drain(src))
    ck = TableId("public", "ck")
    streamed = [(r.key(), r.after) for r in recs if r.table == ck]  # array keys: unhashable
    keys = [k for k, _ in streamed]
    schema = src.table_schemas()[ck]
    missing = ("eu", keys[0][1], Decimal("1.5"), keys[0][3], keys[0][4], 0.0, [1], True, "ab  ")
    order = [2, -1, 0, 1, 0]
    got = src.fetch_rows(ck, schema, [missing if i < 0 else keys[i] for i in order])
    assert got[1] is None
    for i, row in zip(order, got, strict=True):
        if i >= 0:
            assert_rows(schema.names, row, streamed[i][1])
    # numeric 1.5 = 1.50 and the char(4) pad: the server's own equality finds the row
    got = src.fetch_rows(ck, schema, [("eu", *keys[0][1:2], Decimal("1.5"), *keys[0][3:8], "ab")])
    assert got[0] is not None and got[0][-1] == 1
    # and nothing is cut to the column's length: 'abcde' is not the char(4) 'abcd'
    assert src.fetch_rows(ck, schema, [(*keys[2][:8], "abcde")]) == [None]
    big = TableId("public", "big")
    sizes = count_statements(monkeypatch, pg_fetch)
    asked_ids = [(i,) for i in range(1400, 200, -1)]  # 1200 keys, 100 of them absent
    rows = src.fetch_rows(big, src.table_schemas()[big], asked_ids)
    assert sizes == [500, 500, 200]
    assert rows == [None if i > 1300 else (i, f"row {i}") for (i,) in asked_ids]
    assert src.fetch_rows(big, src.table_schemas()[big], []) == []
    with pytest.raises(PermanentError, match="does not fit") as ei:  # int4 key out of range
        src.fetch_rows(big, src.table_schemas()[big], [(1,), (2**40,)])
    assert str(2**40) not in str(ei.value)


def test_pg_table_schemas_creates_nothing(source_dsn: str, pg_source: Any) -> None:
    sql(source_dsn, PG_DDL, "CREATE TABLE nokey (a int)", "CREATE TABLE nokey2 (a int)")
    src = pg_source("public.everything")
    objects = "SELECT (SELECT count(*) FROM pg_replication_slots), count(*) FROM pg_publication"
    schemas = src.table_schemas()
    assert query(source_dsn, objects) == [(0, 0)]
    assert schemas == src.prepare(create=True)
    assert query(source_dsn, objects) == [(1, 1)]
    with pytest.raises(NoKeyError, match="nokey"):
        pg_source("public.nokey").table_schemas()
    with pytest.raises(PermanentError, match="nokey2") as ei:
        pg_source("public.nokey", "public.nokey2", "public.absent").table_schemas()
    assert not isinstance(ei.value, NoKeyError) and "absent" in str(ei.value)


def test_pg_unrepresentable_value_makes_an_unreadable_row(source_dsn: str, pg_source: Any) -> None:
    sql(
        source_dsn,
        "CREATE TABLE inf (id int PRIMARY KEY, d date, ts timestamptz)",
        "INSERT INTO inf VALUES (1, '4713-01-01 BC', now()), (2, '2020-01-01', 'infinity')",
    )
    src = pg_source("public.inf")
    table = TableId("public", "inf")
    schema = src.table_schemas()[table]
    rows = src.fetch_rows(table, schema, [(1,), (2,)])
    for row, col in zip(rows, ("d", "ts"), strict=True):
        assert type(row) is UnreadableRow
        assert row.problem.column == col and row[schema.names.index(col)] is None
        assert f"table public.inf: column '{col}'" in row.problem.reason
        assert "4713" not in row.problem.reason  # never the value
    chunk = src.read_chunk(table, schema, None, 10)
    assert [type(r) for r in chunk] == [UnreadableRow, UnreadableRow]


# -- MariaDB ---------------------------------------------------------------------------------

MY_EXTRAS = """CREATE TABLE extras (
  id INT PRIMARY KEY, f FLOAT, d DOUBLE, c CHAR(4), vc VARCHAR(10), lat VARCHAR(10)
  CHARACTER SET latin1, bn BINARY(4), b1 BIT(1), b64 BIT(64), st SET('x','y','z'),
  e ENUM('a','b'), y YEAR, t0 TIME, t1 TIME(1), t3 TIME(3), ts0 TIMESTAMP NULL,
  ts6 TIMESTAMP(6) NULL, d0 DATETIME, d3 DATETIME(3), dt DATE, n0 DECIMAL(10,0),
  n5 DECIMAL(5,5), j JSON, tb TINYBLOB, mb MEDIUMBLOB, lb LONGBLOB, u BIGINT UNSIGNED
) DEFAULT CHARSET=utf8mb4"""
ODD_JSON = '{"a" :  1,"b":[ ], "ü": "\\\\u00fc"}'  # SQL text: the stored JSON keeps \u00fc
MY_EXTRA_ROWS = [
    "INSERT INTO extras (id) VALUES (1)",
    "INSERT INTO extras VALUES (2, 1.2345678, 0.30000000000000004, 'ab  ', 'ab  ', 'café',"
    " x'0100', b'1', b'1111111111111111111111111111111111111111111111111111111111111111',"
    " 'z,x', 'b', 0, '-838:59:59', '-00:00:00.5', '838:59:59.999', '1970-01-01 05:30:01',"
    " '2038-01-19 08:44:07.999999', '1000-01-01 00:00:00', '9999-12-31 23:59:59.999',"
    f" '1000-01-01', 1234567890, 0.00001, '{ODD_JSON}',"
    " x'00', x'', x'ff00', 18446744073709551615)",
    "INSERT INTO extras (id, f, d, b1, st, y, t0, t1, t3, n0, n5, j) VALUES (3, 3.40282e38,"
    " 5e-324, b'0', '', 1901, '00:00:00', '-00:00:01.1', '-12:00:00.001', -9999999999,"
    " -0.99999, '[]')",
    "INSERT INTO extras (id, f, d, y) VALUES (4, 1e-45, -1.7976931348623157e308, 2155)",
    "INSERT INTO extras (id, f, d) VALUES (5, 16777217, 123456789.12345678)",
]


def my_current_tz(src: MysqlCapture) -> str:
    with src._catalog().cursor() as cur:
        cur.execute("SELECT @@session.time_zone")
        return str(cur.fetchone()[0])


def stream_inserts(src: MysqlCapture, write: Callable[[], int]) -> list[ChangeRecord]:
    """The changes of the ``write()`` (returns its transaction count) as the source streams."""
    events = src.stream(None)
    collect(events, lambda evs: isinstance(evs[-1], Heartbeat))
    n = write()
    return [e for e in collect(events, commits(n), timeout=60) if isinstance(e, ChangeRecord)]


def test_mysql_fetched_rows_equal_streamed_rows(
    my_source_server: MyServer, my_source_dsn: str
) -> None:
    srv, dsn = my_source_server, my_source_dsn
    my_sql(srv, dsn, MY_TYPED, MY_EXTRAS)
    src = capture(dsn, "typed", "extras")
    try:
        schemas = src.table_schemas()
        assert src.prepare(create=False) == schemas

        def write() -> int:
            marks = ", ".join(["%s"] * 34)
            for row in MY_ROWS:
                execute(dsn, f"INSERT INTO typed ({MY_COLS}) VALUES ({marks})", params=row)
            my_sql(srv, dsn, "SET time_zone = '+05:30'", *MY_EXTRA_ROWS)
            my_sql(srv, dsn, "UPDATE typed SET vc = 'updated ✓', tm = '-00:00:01.5' WHERE id = 3",
                   "DELETE FROM typed WHERE id = 2")  # fmt: skip
            return len(MY_ROWS) + len(MY_EXTRA_ROWS) + 2

        recs = stream_inserts(src, write)
        with src._catalog().cursor() as cur:
            cur.execute("SET time_zone = '-07:00'")  # the shared session's own zone
        for table in schemas:
            want = latest([r for r in recs if r.table == table])
            assert len(want) >= 4
            got = src.fetch_rows(table, schemas[table], list(want))
            for row, streamed in zip(got, want.values(), strict=True):
                assert_rows(schemas[table].names, row, streamed)
        assert my_current_tz(src) == "-07:00"  # the shared session keeps its time zone
    finally:
        src.close()


MY_KEYS = """CREATE TABLE ck (region VARCHAR(10) COLLATE utf8mb4_general_ci, at DATETIME(6),
  ts TIMESTAMP(6) NOT NULL DEFAULT '2000-01-01', n DECIMAL(10,2), tm TIME(3), b BIT(8),
  bn VARBINARY(8), f DOUBLE, r FLOAT, e ENUM('x','y'), y YEAR, v INT,
  PRIMARY KEY (region, at, ts, n, tm, b, bn, f, r, e, y))"""
MY_KEY_ROWS = (
    "INSERT INTO ck VALUES ('Eu', '2024-01-01 00:00:00.5', '2021-03-04 05:06:07.654321', 1.5,"
    " '-838:59:59', b'00000101', x'00ff', 0.1, 1.1, 'y', 2024, 1),"
    " ('a''b%s', '1000-01-01', '1970-01-01 05:30:01', -0.01, '00:00:00.001', b'0', '', -1e300,"
    " 3.40282e38, 'x', 1901, 2)"
)


def test_mysql_composite_keys_order_missing_and_chunks(
    my_source_server: MyServer, my_source_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv, dsn = my_source_server, my_source_dsn
    my_sql(srv, dsn, MY_KEYS, "CREATE TABLE big (id INT PRIMARY KEY, `v%s` VARCHAR(20))")
    src = capture(dsn, "ck", "big")
    db = parse_mysql_dsn(dsn).database
    assert db
    try:
        src.prepare(create=False)

        def write() -> int:
            my_sql(srv, dsn, "SET time_zone = '+05:30'", MY_KEY_ROWS)
            return 1

        recs = stream_inserts(src, write)
        ck = TableId(db, "ck")
        schema = src.table_schemas()[ck]
        streamed = {r.key(): r.after for r in recs}
        k0, k1 = streamed
        missing = ("Eu", *k0[1:10], 2023)
        asked = [k1, missing, k0, k1]
        got = src.fetch_rows(ck, schema, asked)
        assert got[1] is None
        for k, row in zip(asked, got, strict=True):
            if k is not missing:
                assert_rows(schema.names, row, streamed[k])
        # the column's collation decides, as MySQL does: 'EU' is the key 'Eu'
        assert src.fetch_rows(ck, schema, [("EU", *k0[1:])])[0] == streamed[k0]
        values = ", ".join(f"({i}, 'row {i}')" for i in range(1, 1301))
        my_sql(srv, dsn, f"INSERT INTO big VALUES {values}")
        big = TableId(db, "big")
        sizes = count_statements(monkeypatch, my_fetch)
        asked_ids = [(i,) for i in range(1400, 200, -1)]  # 1200 keys, 100 of them absent
        rows = src.fetch_rows(big, src.table_schemas()[big], asked_ids)
        assert sizes == [500, 500, 200]
        assert rows == [None if i > 1300 else (i, f"row {i}") for (i,) in asked_ids]
    finally:
        src.close()


def test_mysql_table_schemas_and_zero_dates(my_source_server: MyServer, my_source_dsn: str) -> None:
    srv, dsn = my_source_server, my_source_dsn
    my_sql(
        srv, dsn, "CREATE TABLE z (id INT PRIMARY KEY, d DATE, dt DATETIME, ts TIMESTAMP NULL)",
        "CREATE TABLE nokey (a INT)", "SET sql_mode = ''",
        "INSERT INTO z VALUES (1, '2020-00-05', NULL, NULL), (2, NULL, '0000-00-00', NULL),"
        " (3, NULL, NULL, '0000-00-00 00:00:00'), (4, '2020-01-01', NULL, NULL)",
    )  # fmt: skip
    db = parse_mysql_dsn(dsn).database
    assert db
    src = capture(dsn, "z")
    try:
        table = TableId(db, "z")
        schema = src.table_schemas()[table]
        for key, col in ((1, "d"), (2, "dt"), (3, "ts")):
            good, row = src.fetch_rows(table, schema, [(4,), (key,)])
            assert type(good) is tuple
            assert type(row) is UnreadableRow and row.problem.column == col
            assert row[schema.names.index(col)] is None
            reason = row.problem.reason
            assert f"table {db}.z: column '{col}'" in reason
            assert "zero" in reason and "2020" not in reason
        chunk = src.read_chunk(table, schema, None, 10)
        assert [type(r).__name__ for r in chunk] == ["UnreadableRow"] * 3 + ["tuple"]
    finally:
        src.close()
    for tables, error in ((("nokey",), NoKeyError), (("nokey", "absent"), PermanentError)):
        bad = capture(dsn, *tables)
        try:
            with pytest.raises(error, match=tables[-1]) as raised:
                bad.table_schemas()
        finally:
            bad.close()
    assert type(raised.value) is PermanentError and "nokey" in str(raised.value)


def test_mysql_broken_session_is_classified(my_source_server: MyServer, my_source_dsn: str) -> None:
    my_sql(my_source_server, my_source_dsn, "CREATE TABLE k (id INT PRIMARY KEY)")
    src = capture(my_source_dsn, "k")
    db = parse_mysql_dsn(my_source_dsn).database
    assert db
    try:
        schema = src.table_schemas()[TableId(db, "k")]
        with pytest.raises(PermanentError, match="cannot read rows of"):
            src.fetch_rows(TableId(db, "gone"), schema, [(1,)])
        assert src.fetch_rows(TableId(db, "k"), schema, [(1,)]) == [None]
    finally:
        src.close()
