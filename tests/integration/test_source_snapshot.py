"""Snapshot sessions, keyset chunks and signal tables on real servers: copy + stream = source."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
import pytest

from cdc_sync.config.dsn import parse_mysql_dsn
from cdc_sync.errors import TransientError
from cdc_sync.records import BinlogPosition, ChangeRecord, Heartbeat, Op, PgLsn, Row, TableId
from cdc_sync.sources.base import SnapshotSession, Source
from cdc_sync.sources.mysql import snapshot as my_snapshot
from cdc_sync.sources.mysql.source import MysqlCapture
from cdc_sync.sources.postgres.source import PostgresSource
from cdc_sync.testing.myserver import MyServer
from tests.integration.routes import execute
from tests.integration.test_mysql_source import capture, collect
from tests.integration.test_mysql_source import sql as my_sql
from tests.integration.test_pg_source import DDL as PG_DDL
from tests.integration.test_pg_source import ROWS as PG_ROWS
from tests.integration.test_pg_source import changes, drain, query, sql
from tests.integration.test_source_fetch import (
    MY_EXTRA_ROWS,
    MY_EXTRAS,
    MY_KEY_ROWS,
    MY_KEYS,
    PG_EXTRA_ROWS,
    PG_EXTRAS,
    assert_rows,
)
from tests.integration.test_type_routes import MY_COLS, MY_ROWS, MY_TYPED

pytestmark = pytest.mark.integration

_names = iter(range(10_000))


@pytest.fixture
def pg_source(source_dsn: str) -> Iterator[Callable[..., PostgresSource]]:
    made: list[PostgresSource] = []

    def make(*tables: str, **kw: Any) -> PostgresSource:
        n = next(_names)
        src = PostgresSource(
            source_dsn, f"snap_slot{n}_{time.time_ns()}", f"snap_pub{n}",
            [TableId.parse(t) for t in tables], poll_interval=0.2, **kw,
        )  # fmt: skip
        made.append(src)
        return src

    yield make
    for src in made:
        src.close()
    deadline = time.monotonic() + 10  # a walsender exits a moment after its client left
    while query(source_dsn, "SELECT 1 FROM pg_replication_slots WHERE active"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    sql(source_dsn, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots")


def read_all(
    reader: SnapshotSession | Source, table: TableId, schema: Any, limit: int, **kw: Any
) -> list[Row]:
    """Every row by keyset pagination; each chunk starts after the previous chunk's last key."""
    out: list[Row] = []
    after = None
    while True:
        rows = reader.read_chunk(table, schema, after, limit, **kw)
        assert len(rows) <= limit
        out += rows
        if len(rows) < limit:
            return out
        after = tuple(rows[-1][i] for i in schema.key_indexes)


def apply_strictly(state: dict[tuple[object, ...], Row], recs: Sequence[ChangeRecord]) -> None:
    """Replay changes on a copy; an insert of a present key or an update / delete of an absent
    one means copy and stream overlap or leave a gap."""
    for r in recs:
        key = r.key()
        if r.op is Op.INSERT:
            assert key not in state, f"insert of {key} already in the copy"
        else:
            assert key in state, f"{r.op.value} of {key} missing from the copy"
        if r.op is Op.DELETE:
            del state[key]
        else:
            assert r.after is not None
            state[key] = r.after


class Writer(threading.Thread):
    """Small transactions (insert, increment, delete) until stopped; counts them."""

    def __init__(self, run: Callable[[str], None], first_new: int, existing: int) -> None:
        super().__init__(daemon=True)
        self.run_sql, self.next_id = run, first_new
        self.live = list(range(1, existing + 1))
        self.done = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        rnd = random.Random(5)
        try:
            while not self.stop.is_set():
                self.run_sql(f"INSERT INTO acct VALUES ({self.next_id}, 0, 'new')")
                self.live.append(self.next_id)
                self.next_id += 1
                k = rnd.choice(self.live)
                self.run_sql(f"UPDATE acct SET v = v + 1, note = 'upd' WHERE id = {k}")
                gone = self.live.pop(rnd.randrange(len(self.live)))
                self.run_sql(f"DELETE FROM acct WHERE id = {gone}")
                self.done += 1
                time.sleep(0.002)
        except BaseException as e:  # reported by the test
            self.error = e

    def wait_for(self, n: int) -> None:
        target = self.done + n
        deadline = time.monotonic() + 30
        while self.done < target:
            assert self.error is None and time.monotonic() < deadline, self.error
            time.sleep(0.01)

    def finish(self) -> None:
        self.stop.set()
        self.join(10)
        assert self.error is None, self.error


def copy_while_writing(
    open_session: Callable[[], SnapshotSession], table: TableId, schema: Any, writer: Writer
) -> tuple[dict[tuple[object, ...], Row], SnapshotSession]:
    writer.start()
    writer.wait_for(20)
    session = open_session()
    copied: dict[tuple[object, ...], Row] = {}
    after = None
    try:
        while True:
            rows = session.read_chunk(table, schema, after, 150)
            for row in rows:
                copied[row[0],] = row
            if len(rows) < 150:
                break
            after = (rows[-1][0],)
            time.sleep(0.01)  # the writer goes on between chunks
        writer.wait_for(20)
        # A second pass at the same view sees the same rows: the view does not move.
        assert read_all(session, table, schema, 1000) == list(copied.values())
    finally:
        session.close()
        writer.finish()
    session.close()  # idempotent
    return copied, session


# -- PostgreSQL ------------------------------------------------------------------------------

ACCT = "CREATE TABLE acct (id int PRIMARY KEY, v int NOT NULL, note text)"


def test_pg_fresh_snapshot_and_stream_reproduce_the_source(source_dsn: str, pg_source: Any) -> None:
    sql(source_dsn, ACCT, "INSERT INTO acct SELECT g, g, 'old' FROM generate_series(1, 3000) g")
    src = pg_source("public.acct")
    acct = TableId("public", "acct")
    schema = src.prepare(create=True)[acct]  # creates the slot: a fresh snapshot replaces it
    slot_sql = (
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
        f"WHERE slot_name = '{src._slot}'"
    )
    old = query(source_dsn, slot_sql)
    assert len(old) == 1
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        writer = Writer(conn.execute, 3001, 3000)
        copied, session = copy_while_writing(lambda: src.open_snapshot(True), acct, schema, writer)
    position = session.position
    assert isinstance(position, PgLsn)
    (confirmed,) = query(source_dsn, slot_sql)  # the slot was made again at the copy's view
    assert PgLsn.from_body(confirmed[0]) == position > PgLsn.from_body(old[0][0])
    recs = changes(drain(src, position))
    assert len(recs) > 100  # writes the copy did not see came from the stream
    apply_strictly(copied, recs)
    current = query(source_dsn, "SELECT id, v, note FROM acct ORDER BY id")
    assert sorted(copied.values()) == current


def test_pg_fresh_snapshot_refuses_an_active_slot(source_dsn: str, pg_source: Any) -> None:
    sql(source_dsn, ACCT)
    src = pg_source("public.acct")
    src.prepare(create=True)
    events = src.stream(None)
    next(events)  # the walsender now holds the slot
    other = PostgresSource(source_dsn, src._slot, src._publication, [TableId("public", "acct")])
    try:
        with pytest.raises(TransientError, match="in use"):
            other.open_snapshot(True)
    finally:
        other.close()
        events.close()  # type: ignore[attr-defined]


PG_WIDE = """
CREATE TABLE wide (LIKE everything);
ALTER TABLE wide ALTER COLUMN id TYPE int, ADD COLUMN k text, ADD PRIMARY KEY (id, k);
INSERT INTO wide SELECT e.*, k FROM everything e,
    unnest(ARRAY['b', 'a', 'B', '', 'ä', 'a b', 'a%', '''q''']) AS k;
ANALYZE wide;
"""


def test_pg_read_chunk_composite_key_and_values(source_dsn: str, pg_source: Any) -> None:
    sql(source_dsn, PG_DDL, PG_EXTRAS, *PG_ROWS, *PG_EXTRA_ROWS, PG_WIDE)
    src = pg_source("public.wide", "public.extras")
    schemas = src.table_schemas()
    wide, extras = TableId("public", "wide"), TableId("public", "extras")
    assert schemas[wide].key == ("id", "k")
    order = [tuple(r) for r in query(source_dsn, "SELECT id, k FROM wide ORDER BY id, k")]
    assert len(order) == 40
    for table in (wide, extras):
        schema = schemas[table]
        for limit in (1, 3, 7, 100):
            rows = read_all(src, table, schema, limit)
            keys = [tuple(r[i] for i in schema.key_indexes) for r in rows]
            if table == wide:
                assert keys == order
            fetched = src.fetch_rows(table, schema, keys)
            for row, want in zip(rows, fetched, strict=True):
                assert_rows(schema.names, row, want)
    # where: a condition of the caller's, '%' included
    schema = schemas[wide]
    got = read_all(src, wide, schema, 4, where="k LIKE 'a%' AND id > 2")
    want = query(source_dsn, "SELECT id, k FROM wide WHERE k LIKE 'a%' AND id > 2 ORDER BY 1, 2")
    assert [(r[0], r[-1]) for r in got] == [tuple(w) for w in want] and len(want) == 9
    # A read view without a slot: no position, same rows, the catalog's estimate
    session = src.open_snapshot(False)
    try:
        assert session.position is None
        viewed, current = read_all(session, wide, schema, 6), read_all(src, wide, schema, 100)
        assert len(viewed) == len(current) == 40
        for a, b in zip(viewed, current, strict=True):
            assert_rows(schema.names, a, b)  # NaN in the rows: compared by bits
        assert session.estimate_rows(wide) == 40
        assert session.estimate_rows(TableId("public", "absent")) == 0
    finally:
        session.close()
    assert query(source_dsn, "SELECT count(*) FROM pg_replication_slots") == [(0,)]


def test_pg_signal_table(source_dsn: str, pg_source: Any) -> None:
    sql(source_dsn, ACCT)
    signal = TableId("public", "cdc_sync_signal")
    refused = pg_source("public.acct", signal_table=signal, may_create=False)
    assert any(
        "signal table public.cdc_sync_signal does not exist" in p
        and "CREATE TABLE IF NOT EXISTS public.cdc_sync_signal (pipeline varchar(100)" in p
        for p in refused.problems()
    )
    src = pg_source("public.acct", signal_table=signal)
    schemas = src.prepare(create=True)
    assert list(schemas) == [TableId("public", "acct")]
    assert list(src.table_schemas()) == list(schemas)
    published = "SELECT tablename FROM pg_publication_tables ORDER BY 1"
    assert query(source_dsn, published) == [("acct",), ("cdc_sync_signal",)]
    src.write_signal("p1", "low-1")
    src.write_signal("p1", "high-1")
    recs = [r for r in changes(drain(src)) if r.table == signal]
    assert [(r.op, r.after[:2]) for r in recs if r.after] == [
        (Op.INSERT, ("p1", "low-1")),
        (Op.UPDATE, ("p1", "high-1")),
    ]


# -- MariaDB ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["gtid", "file"])
def test_mysql_fresh_snapshot_and_stream_reproduce_the_source(
    my_source_server: MyServer, my_source_dsn: str, mode: str
) -> None:
    srv, dsn = my_source_server, my_source_dsn
    db = parse_mysql_dsn(dsn).database
    assert db
    my_sql(srv, dsn, "CREATE TABLE acct (id INT PRIMARY KEY, v INT NOT NULL, note TEXT)",
           "INSERT INTO acct SELECT seq, seq, 'old' FROM seq_1_to_3000")  # fmt: skip
    src = capture(dsn, "acct", mode=mode)
    acct = TableId(db, "acct")
    try:
        schema = src.prepare(create=True)[acct]
        with srv.connect(db, autocommit=True) as conn, conn.cursor() as cur:
            writer = Writer(cur.execute, 3001, 3000)
            copied, session = copy_while_writing(
                lambda: src.open_snapshot(True), acct, schema, writer
            )
        position = session.position
        assert isinstance(position, BinlogPosition)
        assert bool(position.gtid) == (mode == "gtid")
        head = src.head()
        evs = collect(
            src.stream(position),
            lambda evs: isinstance(evs[-1], Heartbeat) and evs[-1].position >= head,
            timeout=60,
        )
    finally:
        src.close()
    recs = [e for e in evs if isinstance(e, ChangeRecord)]
    assert len(recs) > 100
    apply_strictly(copied, recs)
    with srv.connect(db) as c, c.cursor() as cur:
        cur.execute("SELECT id, v, note FROM acct ORDER BY id")
        current = [tuple(r) for r in cur.fetchall()]
    assert sorted(copied.values()) == current


MY_PAGED = """CREATE TABLE paged (a INT, b VARCHAR(10) COLLATE utf8mb4_general_ci,
  e ENUM('z', 'a', 'm'), v INT, PRIMARY KEY (a, b, e))"""
MY_PAGED_ROWS = (
    "INSERT IGNORE INTO paged SELECT s.seq % 7,"
    " CONCAT(ELT(1 + s.seq % 4, 'b', 'A', 'a%', 'é'), s.seq % 5),"
    " ELT(1 + s.seq % 3, 'z', 'a', 'm'), s.seq FROM seq_1_to_600 s"
)


def test_mysql_read_chunk_composite_keys_and_values(
    my_source_server: MyServer, my_source_dsn: str
) -> None:
    srv, dsn = my_source_server, my_source_dsn
    db = parse_mysql_dsn(dsn).database
    assert db
    my_sql(srv, dsn, MY_TYPED, MY_EXTRAS, MY_KEYS, MY_PAGED, "SET time_zone = '+05:30'",
           *MY_EXTRA_ROWS, MY_KEY_ROWS, MY_PAGED_ROWS)  # fmt: skip
    for row in MY_ROWS:
        execute(dsn, f"INSERT INTO typed ({MY_COLS}) VALUES ({', '.join(['%s'] * 34)})", params=row)
    src = capture(dsn, "typed", "extras", "ck", "paged")
    try:
        schemas = src.table_schemas()
        paged = TableId(db, "paged")
        with srv.connect(db) as c, c.cursor() as cur:
            cur.execute("SELECT a, b, e FROM paged ORDER BY a, b, e")
            order = [tuple(r) for r in cur.fetchall()]
            # The expanded keyset condition is a range scan of the primary key.
            schema = schemas[paged]
            stmt = my_snapshot.chunk_sql(paged, schema, True, 10, None)
            cur.execute("EXPLAIN " + stmt, my_snapshot.after_args(schema, order[300]))
            plan = cur.fetchone()
            assert plan[3] == "range" and plan[5] == "PRIMARY", plan
        assert len(order) > 100
        for table, schema in schemas.items():
            for limit in (1, 7, 1000):
                rows = read_all(src, table, schema, limit)
                keys = [tuple(r[i] for i in schema.key_indexes) for r in rows]
                if table == paged:
                    assert keys == order  # ENUM by its number, collation as MariaDB orders
                assert len(set(map(repr, keys))) == len(keys) > 1
                fetched = src.fetch_rows(table, schema, keys)
                for row, want in zip(rows, fetched, strict=True):
                    assert_rows(schema.names, row, want)
        got = read_all(src, paged, schemas[paged], 9, where="b LIKE 'a%' AND a > 4")
        with srv.connect(db) as c, c.cursor() as cur:
            cur.execute("SELECT a, b, e FROM paged WHERE b LIKE 'a%%' AND a > 4 ORDER BY 1, 2, 3")
            want = [tuple(r) for r in cur.fetchall()]
        assert [r[:3] for r in got] == want and len(want) > 10
        session = src.open_snapshot(False)
        try:
            assert session.position is None
            assert read_all(session, paged, schemas[paged], 50) == read_all(
                src, paged, schemas[paged], 1000
            )
            assert session.estimate_rows(paged) > 0
        finally:
            session.close()
    finally:
        src.close()


def test_mysql_signal_table(my_source_server: MyServer, my_source_dsn: str) -> None:
    srv, dsn = my_source_server, my_source_dsn
    db = parse_mysql_dsn(dsn).database
    assert db
    my_sql(srv, dsn, "CREATE TABLE acct (id INT PRIMARY KEY)")
    signal = TableId(db, "cdc_sync_signal")
    d = parse_mysql_dsn(dsn)
    src = MysqlCapture(d, 4242, [TableId(db, "acct")], heartbeat_seconds=0.3, signal_table=signal)
    try:
        schemas = src.prepare(create=True)
        assert list(schemas) == [TableId(db, "acct")] == list(src.table_schemas())
        assert src.problems() == []
        start = src.head()
        src.write_signal("p1", "low-1")
        src.write_signal("p1", "high-1")
        evs = collect(src.stream(start), lambda evs: len(changes_of(evs, signal)) >= 2)
    finally:
        src.close()
    recs = changes_of(evs, signal)
    assert [(r.op, r.after[:2]) for r in recs if r.after] == [
        (Op.INSERT, ("p1", "low-1")),
        (Op.UPDATE, ("p1", "high-1")),
    ]


def changes_of(evs: Sequence[Any], table: TableId) -> list[ChangeRecord]:
    return [e for e in evs if isinstance(e, ChangeRecord) and e.table == table]
