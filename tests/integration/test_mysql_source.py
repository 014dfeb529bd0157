"""MysqlCapture against a real MariaDB: types, operations, DDL, resume, heartbeats, errors."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from cdc_sync.config.dsn import parse_mysql_dsn
from cdc_sync.errors import NoKeyError, PermanentError, UnsupportedTypeError
from cdc_sync.records import (
    BinlogPosition,
    ChangeRecord,
    Heartbeat,
    JsonText,
    Kind,
    Op,
    SourceEvent,
    TableId,
    TxBegin,
    TxCommit,
)
from cdc_sync.sources.mysql.source import MysqlCapture
from cdc_sync.testing.myserver import MyServer, running_mariadb

pytestmark = pytest.mark.integration

_ids = iter(range(1000, 10_000))


def capture(dsn: str, *tables: str, mode: str = "auto") -> MysqlCapture:
    d = parse_mysql_dsn(dsn)
    assert d.database
    return MysqlCapture(
        d, next(_ids), [TableId(d.database, t) for t in tables], position_mode=mode,
        heartbeat_seconds=0.3,
    )  # fmt: skip


def sql(server: MyServer, dsn: str, *statements: str) -> None:
    with server.connect(parse_mysql_dsn(dsn).database) as c, c.cursor() as cur:
        for s in statements:
            cur.execute(s)


def collect(
    events: Iterator[SourceEvent], done: Callable[[list[SourceEvent]], bool], timeout: float = 15
) -> list[SourceEvent]:
    out: list[SourceEvent] = []
    deadline = time.monotonic() + timeout
    for ev in events:
        out.append(ev)
        if done(out):
            return out
        assert time.monotonic() < deadline, f"timed out; got {out[-5:]}"
    raise AssertionError("stream ended")


def commits(n: int) -> Callable[[list[SourceEvent]], bool]:
    return lambda evs: sum(isinstance(e, TxCommit) and e.row_count > 0 for e in evs) >= n


def changes(evs: list[SourceEvent]) -> list[ChangeRecord]:
    return [e for e in evs if isinstance(e, ChangeRecord)]


TYPES_DDL = """CREATE TABLE t (
  id BIGINT UNSIGNED PRIMARY KEY, ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, mi MEDIUMINT,
  mu MEDIUMINT UNSIGNED, i INT, dec65 DECIMAL(65,30), dec2 DECIMAL(12,2), f FLOAT, d DOUBLE,
  c CHAR(5), vc VARCHAR(100), tt TINYTEXT, tx TEXT, bn BINARY(4), vb VARBINARY(10), bl BLOB,
  dt DATE, dtm DATETIME(6), ts TIMESTAMP(6) NULL, tm TIME(6), tm0 TIME, y YEAR,
  e ENUM('small','large'), st SET('a','b','c'), b BIT(10), j JSON, n INT)"""


def test_types_insert_update_delete(my_source_server: MyServer, my_source_dsn: str) -> None:
    srv = my_source_server
    sql(srv, my_source_dsn, TYPES_DDL)
    src = capture(my_source_dsn, "t")
    try:
        schemas = src.prepare(create=False)
        (schema,) = schemas.values()
        kinds = {c.name: c.type for c in schema.columns}
        assert kinds["id"].kind is Kind.BIGINT and kinds["id"].unsigned
        assert kinds["mu"].kind is Kind.MEDIUMINT and kinds["tu"].kind is Kind.TINYINT
        assert (kinds["dec65"].precision, kinds["dec65"].scale) == (65, 30)
        assert kinds["vc"].kind is Kind.VARCHAR and kinds["vc"].length == 100
        assert kinds["ts"].kind is Kind.TIMESTAMPTZ and kinds["tm"].kind is Kind.DURATION
        assert kinds["e"].enum_name == "t_e" and kinds["e"].enum_labels == ("small", "large")
        assert kinds["j"].kind is Kind.JSONB and kinds["b"].length == 10
        assert kinds["bn"].fixed and kinds["bn"].length == 4 and not kinds["vb"].fixed
        assert schema.key == ("id",)
        events = src.stream(None)
        collect(events, lambda evs: isinstance(evs[-1], Heartbeat))
        sql(
            srv, my_source_dsn, "SET time_zone = '+05:30'",
            "INSERT INTO t VALUES (18446744073709551615, -128, 255, -32768, -8388608, 16777215,"
            " -2147483648, '-12345678901234567890123456789012345.123456789012345678901234567891',"
            " 0.05, 1.5, 2.25, 'ab', 'emoji 😀 ü', 'tiny', 'text', x'0102', x'00ff', x'000102',"
            " '2024-02-29', '2024-01-02 03:04:05.123456', '2021-03-04 05:06:07.654321',"
            " '-838:59:59.000001', '100:00:01', 2024, 'large', 'a,c', b'1000000001',"
            " '{\"k\": [1, 2.5, \"x\"]}', NULL)",
            "UPDATE t SET vc = 'changed', tm = '00:00:00.5' WHERE id = 18446744073709551615",
            "DELETE FROM t",
        )  # fmt: skip
        evs = collect(events, commits(3))
    finally:
        src.close()
        src.close()
    ins, upd, dele = changes(evs)
    assert [ins.op, upd.op, dele.op] == [Op.INSERT, Op.UPDATE, Op.DELETE]
    row = dict(zip(ins.schema.names, ins.after or (), strict=True))
    assert ins.before is None and dele.after is None and dele.before == upd.after
    assert row["id"] == 18446744073709551615 and row["ti"] == -128 and row["tu"] == 255
    assert row["mi"] == -8388608 and row["mu"] == 16777215 and row["i"] == -2147483648
    assert row["dec65"] == Decimal(
        "-12345678901234567890123456789012345.123456789012345678901234567891"
    )
    assert str(row["dec2"]) == "0.05" and row["f"] == 1.5 and row["d"] == 2.25
    assert row["c"] == "ab" and row["vc"] == "emoji 😀 ü" and row["tt"] == "tiny"
    assert row["bn"] == b"\x01\x02\x00\x00" and row["vb"] == b"\x00\xff"
    assert row["bl"] == b"\x00\x01\x02"
    assert row["dt"] == date(2024, 2, 29)
    assert row["dtm"] == datetime(2024, 1, 2, 3, 4, 5, 123456)
    # written at +05:30: the instant is 23:36:07 UTC the day before
    assert row["ts"] == datetime(2021, 3, 3, 23, 36, 7, 654321, tzinfo=UTC)
    assert row["tm"] == -timedelta(hours=838, minutes=59, seconds=59, microseconds=1)
    assert row["tm0"] == timedelta(hours=100, seconds=1)
    assert row["y"] == 2024 and row["e"] == "large" and row["st"] == "a,c"
    assert row["b"] == "1000000001" and row["n"] is None
    assert isinstance(row["j"], JsonText) and row["j"] == '{"k": [1, 2.5, "x"]}'
    after = dict(zip(upd.schema.names, upd.after or (), strict=True))
    assert after["vc"] == "changed" and after["tm"] == timedelta(microseconds=500000)
    assert upd.before == ins.after and upd.key() == (18446744073709551615,)
    assert ins.schema is upd.schema is dele.schema  # one table map version, one object
    assert ins.schema == schema  # prepare() and the binlog agree


def test_zero_date_is_a_row_problem(my_source_server: MyServer, my_source_dsn: str) -> None:
    """A zero date: the record carries the problem (the loop refuses it by on_error); the
    UPDATE that fixes it at the source and a DELETE need the key only, and go through."""
    sql(my_source_server, my_source_dsn, "CREATE TABLE z (id INT PRIMARY KEY, d DATE NOT NULL)")
    src = capture(my_source_dsn, "z")
    try:
        src.prepare(create=False)
        events = src.stream(None)
        collect(events, lambda evs: isinstance(evs[-1], Heartbeat))
        sql(
            my_source_server, my_source_dsn, "SET sql_mode = ''",
            "INSERT INTO z VALUES (1, '2020-00-05'), (2, '2021-01-01'), (3, '0000-00-00')",
            "UPDATE z SET d = '2020-01-05' WHERE id = 1",
            "DELETE FROM z WHERE id = 3",
        )  # fmt: skip
        ins, ins2, ins3, upd, dele = changes(collect(events, commits(3)))
    finally:
        src.close()
    assert ins.problem is not None and ins.problem.column == "d"
    msg = ins.problem.reason
    assert "z" in msg and "'d'" in msg and "date" in msg and "2020" not in msg
    assert ins.after == (1, None) and ins2.problem is None and ins2.after == (2, date(2021, 1, 1))
    assert ins3.problem is not None and ins3.after == (3, None)
    assert upd.problem is None and upd.before_is_key_only and upd.before == (1, None)
    assert upd.after == (1, date(2020, 1, 5))
    assert dele.problem is None and dele.before_is_key_only and dele.before == (3, None)


def test_no_key_and_spatial_refused(my_source_server: MyServer, my_source_dsn: str) -> None:
    sql(
        my_source_server, my_source_dsn, "CREATE TABLE nokey (a INT)",
        "CREATE TABLE geo (id INT PRIMARY KEY, g POINT)",
    )  # fmt: skip
    src = capture(my_source_dsn, "nokey")
    with pytest.raises(NoKeyError, match="nokey"):
        src.prepare(create=False)
    src.close()
    src = capture(my_source_dsn, "geo")
    with pytest.raises(UnsupportedTypeError, match="'g'"):
        src.prepare(create=False)
    src.close()


def test_alter_mid_stream(my_source_server: MyServer, my_source_dsn: str) -> None:
    srv = my_source_server
    sql(srv, my_source_dsn, "CREATE TABLE a (id INT PRIMARY KEY, x INT, y VARCHAR(5))")
    src = capture(my_source_dsn, "a")
    try:
        src.prepare(create=False)
        start = src.start_position()
        sql(
            srv, my_source_dsn, "INSERT INTO a VALUES (1, 10, 'one')",
            "ALTER TABLE a ADD COLUMN z INT AFTER id", "INSERT INTO a VALUES (2, 20, 2, 'two')",
            "ALTER TABLE a DROP COLUMN x", "INSERT INTO a VALUES (3, 3, 'three')",
            "ALTER TABLE a MODIFY COLUMN y VARCHAR(50)", "INSERT INTO a VALUES (4, 4, 'four')",
        )  # fmt: skip
        # read everything after the fact: each row with the columns it was written with
        evs = collect(src.stream(start), commits(4))
    finally:
        src.close()
    recs = changes(evs)
    got = [dict(zip(r.schema.names, r.after or (), strict=True)) for r in recs]
    assert got == [
        {"id": 1, "x": 10, "y": "one"},
        {"id": 2, "z": 20, "x": 2, "y": "two"},
        {"id": 3, "z": 3, "y": "three"},
        {"id": 4, "z": 4, "y": "four"},
    ]
    schemas = [r.schema for r in recs]
    assert len({id(s) for s in schemas}) == 4 and all(
        a != b for a, b in itertools.pairwise(schemas)
    )
    assert schemas[3].column("y").type.length == 50


@pytest.mark.parametrize("mode", ["gtid", "file"])
def test_resume_delivers_next_transaction(
    my_source_server: MyServer, my_source_dsn: str, mode: str
) -> None:
    srv = my_source_server
    sql(srv, my_source_dsn, "CREATE TABLE r (id INT PRIMARY KEY)")
    src = capture(my_source_dsn, "r", mode=mode)
    try:
        src.prepare(create=False)
        start = src.start_position()
        assert bool(start.gtid) == (mode == "gtid")
        sql(srv, my_source_dsn, *[f"INSERT INTO r VALUES ({i})" for i in range(1, 7)])
        evs = collect(src.stream(start), commits(3))
        last = [e for e in evs if isinstance(e, TxCommit)][-1]
        assert isinstance(last.end_position, BinlogPosition)
        assert bool(last.end_position.gtid) == (mode == "gtid")
        src.close_stream()
        evs2 = collect(src.stream(last.end_position), commits(3))
    finally:
        src.close()
    assert [r.after for r in changes(evs)] == [(1,), (2,), (3,)]
    assert [r.after for r in changes(evs2)] == [(4,), (5,), (6,)]
    assert isinstance(evs2[0], TxBegin) or not any(isinstance(e, TxBegin) for e in evs2[:1])


def test_heartbeat_reaches_head(my_source_server: MyServer, my_source_dsn: str) -> None:
    srv = my_source_server
    sql(srv, my_source_dsn, "CREATE TABLE h (id INT PRIMARY KEY)", "CREATE TABLE other (i INT)")
    src = capture(my_source_dsn, "h")
    try:
        src.prepare(create=False)
        start = src.start_position()
        sql(
            srv, my_source_dsn, "INSERT INTO h VALUES (1)", "INSERT INTO other VALUES (1)",
            "FLUSH BINARY LOGS", "CREATE TABLE later (i INT)",
        )  # fmt: skip
        head = src.head()
        evs = collect(
            src.stream(start),
            lambda evs: isinstance(evs[-1], Heartbeat) and evs[-1].position >= head,
        )
    finally:
        src.close()
    assert [r.after for r in changes(evs)] == [(1,)]
    last = evs[-1]
    assert isinstance(last, Heartbeat) and last.position == head


def purge(srv: MyServer, to_file: str) -> None:
    """PURGE waits for the binlog checkpoint (InnoDB) before it removes anything: retry."""
    deadline = time.monotonic() + 15
    with srv.connect() as c, c.cursor() as cur:
        while True:
            cur.execute(f"PURGE BINARY LOGS TO '{to_file}'")
            cur.execute("SHOW BINARY LOGS")
            if cur.fetchall()[0][0] == to_file:
                return
            assert time.monotonic() < deadline, "binlogs were not purged"
            time.sleep(0.2)


def test_purged_checkpoint_is_refused(my_private_server: MyServer) -> None:
    srv = my_private_server
    dsn = srv.create_database("p")
    sql(srv, dsn, "CREATE TABLE p (id INT PRIMARY KEY)")
    for mode in ("gtid", "file"):
        src = capture(dsn, "p", mode=mode)
        src.prepare(create=False)
        old = src.start_position()
        sql(srv, dsn, "INSERT INTO p VALUES (1)" if mode == "gtid" else "DELETE FROM p")
        sql(srv, dsn, "FLUSH BINARY LOGS", "INSERT INTO p VALUES (2)", "FLUSH BINARY LOGS")
        head = src.head()
        purge(srv, head.file)
        assert src.checkpoint_problems(old)
        with pytest.raises(PermanentError, match="re-snapshot") as ei:
            next(iter(src.stream(old)))
        assert "cdc-sync snapshot" in str(ei.value)
        assert not src.checkpoint_problems(head)
        src.close()


def test_problems_for_wrong_settings_and_grants() -> None:
    extra = {"binlog_row_metadata": "MINIMAL", "binlog_format": "MIXED"}
    with running_mariadb(extra=extra) as srv:
        dsn = srv.create_database("w")
        sql(srv, dsn, "CREATE TABLE w (id INT PRIMARY KEY)", "CREATE TABLE nk (a INT)")
        src = capture(dsn, "w", "nk")
        probs = src.problems()
        src.close()
        text = "\n".join(probs)
        assert "binlog_format is MIXED" in text and "SET GLOBAL binlog_format = 'ROW'" in text
        assert "binlog_row_metadata is MINIMAL" in text and "nk" in text
        sql(
            srv, dsn, "CREATE USER 'weak'@'%' IDENTIFIED BY 'secretpw'",
            "GRANT SELECT ON w.w TO 'weak'@'%'",
        )  # fmt: skip
        weak = MysqlCapture(
            parse_mysql_dsn(f"mysql://weak:secretpw@127.0.0.1:{srv.port}/w"), 77,
            [TableId("w", "w")],
        )  # fmt: skip
        text = "\n".join(weak.problems())
        weak.close()
        assert "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'weak'@'%';" in text
        assert "secretpw" not in text
        same = MysqlCapture(parse_mysql_dsn(dsn), 1, [TableId("w", "w")])
        assert any("server_id 1" in p for p in same.problems())
        same.close()
