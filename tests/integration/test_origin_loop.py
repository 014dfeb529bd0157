"""Two-way loop prevention (#7): OriginTag on real targets, MysqlCapture skipping tagged rows."""

from __future__ import annotations

import itertools
import struct
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
import sqlalchemy as sa

from cdc_sync.config.dsn import parse_mysql_dsn
from cdc_sync.errors import PermanentError, TransientError
from cdc_sync.records import ChangeRecord, Heartbeat, Op, SourceEvent, TableId, TxBegin, TxCommit
from cdc_sync.sinks.sql.origin import MARKER_TABLE, OriginTag
from cdc_sync.sources.mysql.source import MysqlCapture
from cdc_sync.testing.myserver import MyServer
from cdc_sync.testing.pgserver import PgServer
from tests.integration.test_mysql_source import changes, collect, sql

pytestmark = pytest.mark.integration

_n = itertools.count()
_ids = iter(range(20_000, 30_000))


def unique(prefix: str) -> str:
    return f"{prefix}_{next(_n)}_{time.time_ns() % 10**9}"


# -- PostgreSQL ----------------------------------------------------------------------------------


def pg_engine(dsn: str) -> sa.Engine:
    return sa.create_engine(dsn.replace("postgresql://", "postgresql+psycopg://"))


def tx_origins(dsn: str, slot: str, publication: str) -> list[tuple[str | None, list[int]]]:
    """Per decoded transaction: its Origin message's name (None: none) and the inserted ids,
    read with pg_logical_slot_peek_binary_changes (pgoutput, protocol 1)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL, "
            "'proto_version', '1', 'publication_names', %s)",
            (slot, publication),
        ).fetchall()
    out: list[tuple[str | None, list[int]]] = []
    for (data,) in rows:
        msg = bytes(data)
        kind = msg[:1]
        if kind == b"B":
            out.append((None, []))
        elif kind == b"O":  # origin commit LSN (8), then the name, NUL-terminated
            out[-1] = (msg[9:].split(b"\0", 1)[0].decode(), out[-1][1])
        elif kind == b"I":  # relation oid 4, 'N', column count 2, 't', length 4, text
            assert msg[5:6] == b"N" and msg[8:9] == b"t"
            (length,) = struct.unpack_from("!i", msg, 9)
            out[-1][1].append(int(msg[13 : 13 + length]))
    return out


@pytest.fixture
def pg_link(source_dsn: str) -> Iterator[tuple[str, str, str]]:
    """A database with a published table ``t`` and a pgoutput slot: (dsn, slot, publication)."""
    slot, pub = unique("cdc_sync_origin_slot"), unique("cdc_sync_origin_pub")
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
        conn.execute(f"CREATE PUBLICATION {pub} FOR TABLE t")
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    yield source_dsn, slot, pub


def test_pg_tagged_session_carries_the_origin(pg_link: tuple[str, str, str]) -> None:
    dsn, slot, pub = pg_link
    origin = unique("cdc_sync_link__a_to_b")
    tag = OriginTag(origin, None)
    eng = pg_engine(dsn)
    try:
        with eng.connect() as conn:
            tag.ensure(conn)
            conn.commit()
            tag.ensure(conn)  # idempotent
            conn.commit()
            assert tag.problems(conn) == []
        with eng.connect() as tagged, eng.connect() as plain:
            session = tagged.connection.driver_connection
            tag.tag(tagged)
            tag.tag(tagged)  # twice in a session (and a transaction) is fine
            tagged.execute(sa.text("INSERT INTO t VALUES (1)"))
            tagged.commit()
            tag.ended()
            # a new transaction of the same session: no new setup, still tagged
            tagged.execute(sa.text("INSERT INTO t VALUES (2)"))
            tagged.commit()
            tag.tag(tagged)
            tagged.execute(sa.text("INSERT INTO t VALUES (3)"))
            tagged.commit()
            plain.execute(sa.text("INSERT INTO t VALUES (4)"))
            plain.commit()
            # The origin is active in the tagged session: another session cannot take it.
            with pytest.raises(TransientError, match=origin):
                OriginTag(origin, None).tag(plain)
            plain.rollback()
        # The tagged session is back in the pool: a new OriginTag (a restarted pipeline in
        # the same process) on it does not set the origin up again.
        with eng.connect() as one, eng.connect() as two:
            again = one if one.connection.driver_connection is session else two
            assert again.connection.driver_connection is session
            OriginTag(origin, None).tag(again)
            again.execute(sa.text("INSERT INTO t VALUES (5)"))
            again.commit()
    finally:
        eng.dispose()
    got = tx_origins(dsn, slot, pub)
    assert got == [(origin, [1]), (origin, [2]), (origin, [3]), (None, [4]), (origin, [5])]
    # The session ended with the pool: the origin is free for a new session.
    eng = pg_engine(dsn)
    try:
        with eng.connect() as conn:
            tag.tag(conn)
            conn.execute(sa.text("INSERT INTO t VALUES (6)"))
            conn.commit()
    finally:
        eng.dispose()
    assert tx_origins(dsn, slot, pub)[-1] == (origin, [6])


def test_pg_privileges(pg_source_server: PgServer, source_dsn: str) -> None:
    user, origin = unique("cdc_sync_weak"), unique("cdc_sync_weak_origin")
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {user} LOGIN")
    weak_dsn = source_dsn.replace(f"{pg_source_server.user}@", f"{user}@")
    tag = OriginTag(origin, None)
    eng = pg_engine(weak_dsn)
    try:
        with eng.connect() as conn:
            (problem,) = tag.problems(conn)
            assert "superuser" in problem
            for f in ("create", "oid", "session_setup"):
                assert f"GRANT EXECUTE ON FUNCTION pg_replication_origin_{f}(text) TO {user};" in (
                    problem
                )
            with pytest.raises(PermanentError, match="GRANT EXECUTE ON FUNCTION"):
                tag.ensure(conn)
            conn.rollback()
        # The fix as check printed it, run by a superuser, is enough.
        fix = problem.split("or ", 1)[1]
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            conn.execute(fix)
        with eng.connect() as conn:
            assert tag.problems(conn) == []
            tag.ensure(conn)
            conn.commit()
            tag.tag(conn)
            conn.commit()
    finally:
        eng.dispose()
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_replication_origin_drop(%s)", (origin,))


# -- MariaDB -------------------------------------------------------------------------------------


def my_engine(dsn: str) -> sa.Engine:
    return sa.create_engine(dsn.replace("mysql://", "mysql+pymysql://") + "?charset=utf8mb4")


def my_capture(dsn: str, table: str, skip: frozenset[str], marker: bool = True) -> MysqlCapture:
    d = parse_mysql_dsn(dsn)
    assert d.database
    return MysqlCapture(
        d, next(_ids), [TableId(d.database, table)], heartbeat_seconds=0.3, skip_origins=skip,
        marker_table=TableId(d.database, MARKER_TABLE) if marker else None,
    )  # fmt: skip


def tagged_write(eng: sa.Engine, tag: OriginTag, *statements: str) -> None:
    """One target transaction as the runtime writes it: tag first, rows, commit, ended."""
    with eng.connect() as conn:
        tag.tag(conn)
        for s in statements:
            tag.tag(conn)  # before every write: cheap once done
            conn.execute(sa.text(s))
        conn.commit()
        tag.ended()


def shape(events: list[SourceEvent]) -> list[object]:
    """Transactions and rows, without heartbeats: ('B',), (op, after) and ('C', rows)."""
    out: list[object] = []
    for e in events:
        if isinstance(e, TxBegin):
            out.append("B")
        elif isinstance(e, TxCommit):
            out.append(("C", e.row_count))
        elif isinstance(e, ChangeRecord):
            out.append((e.op, e.after))
    return out


def until_row(key: int) -> Callable[[list[SourceEvent]], bool]:
    """Until the TxCommit of the transaction that wrote row ``key``."""

    def done(evs: list[SourceEvent]) -> bool:
        if not isinstance(evs[-1], TxCommit):
            return False
        return any(isinstance(e, ChangeRecord) and (e.after or (None,))[0] == key for e in evs)

    return done


def test_mariadb_skips_tagged_transactions(my_source_server: MyServer, my_source_dsn: str) -> None:
    srv, dsn = my_source_server, my_source_dsn
    db = parse_mysql_dsn(dsn).database
    assert db
    sql(srv, dsn, "CREATE TABLE c (id INT PRIMARY KEY, v VARCHAR(10))")
    origin = "cdc_sync_link__a_to_b"
    tag = OriginTag(origin, db)
    eng = my_engine(dsn)
    try:
        with eng.connect() as conn:
            tag.ensure(conn)
            conn.commit()
            tag.ensure(conn)
            conn.commit()
            assert tag.problems(conn) == []
        skipping = my_capture(dsn, "c", frozenset({origin, "another"}))
        skipping.prepare(create=False)
        start = skipping.start_position()
        tagged_write(eng, tag, "INSERT INTO c VALUES (1, 'a')", "INSERT INTO c VALUES (2, 'b')")
        sql(srv, dsn, "INSERT INTO c VALUES (3, 'c')")
        tagged_write(eng, tag, "UPDATE c SET v = 'cc' WHERE id = 3")  # the marker: an UPDATE
        # marked by another pipeline: the marker row is dropped, the rows are kept
        tagged_write(eng, OriginTag("cdc_sync_other__x", db), "INSERT INTO c VALUES (4, 'd')")
        # the runtime forgot ended(): a new transaction gets a marker of its own all the same
        with eng.connect() as conn:
            tag.tag(conn)
            conn.execute(sa.text("INSERT INTO c VALUES (5, 'e')"))
            conn.commit()
            tag.tag(conn)
            conn.execute(sa.text("INSERT INTO c VALUES (6, 'f')"))
            conn.commit()
        tag.ended()
        sql(srv, dsn, "INSERT INTO c VALUES (7, 'g')")
        with eng.connect() as conn:
            seqs: dict[str, int] = dict(
                conn.execute(sa.text(f"SELECT origin, seq FROM {MARKER_TABLE}")).all()
            )
        assert seqs == {origin: 4, "cdc_sync_other__x": 1}  # one marker per transaction
        try:
            evs = collect(skipping.stream(start), until_row(7))
        finally:
            skipping.close()
        assert shape(evs) == [
            "B", ("C", 0),
            "B", (Op.INSERT, (3, "c")), ("C", 1),
            "B", ("C", 0),
            "B", (Op.INSERT, (4, "d")), ("C", 1),
            "B", ("C", 0),
            "B", ("C", 0),
            "B", (Op.INSERT, (7, "g")), ("C", 1),
        ]  # fmt: skip
        # Positions advance as before: each commit past the previous one.
        ends = [e.end_position for e in evs if isinstance(e, TxCommit)]
        assert ends == sorted(ends) and len(set(ends)) == len(ends)
        for marker in (True, False):  # nothing to skip: every row, never the marker's
            src = my_capture(dsn, "c", frozenset(), marker=marker)
            try:
                src.prepare(create=False)
                evs = collect(src.stream(start), until_row(7))
            finally:
                src.close()
            assert [r.after[0] for r in changes(evs) if r.after] == [1, 2, 3, 3, 4, 5, 6, 7]
            assert {r.table.name for r in changes(evs)} == {"c"}
    finally:
        eng.dispose()


def test_mariadb_marker_table_created_after_start(
    my_source_server: MyServer, my_source_dsn: str
) -> None:
    srv, dsn = my_source_server, my_source_dsn
    db = parse_mysql_dsn(dsn).database
    assert db
    sql(srv, dsn, "CREATE TABLE c (id INT PRIMARY KEY)")
    origin = "cdc_sync_late__b_to_a"
    src = my_capture(dsn, "c", frozenset({origin}))
    eng = my_engine(dsn)
    try:
        src.prepare(create=False)
        events = src.stream(None)
        collect(events, lambda evs: isinstance(evs[-1], Heartbeat))  # streaming, no marker yet
        sql(srv, dsn, "INSERT INTO c VALUES (1)")
        tag = OriginTag(origin, db)
        with eng.connect() as conn:
            tag.ensure(conn)
            conn.commit()
        tagged_write(eng, tag, "INSERT INTO c VALUES (2)")
        sql(srv, dsn, "INSERT INTO c VALUES (3)")
        evs = collect(events, until_row(3))
    finally:
        src.close()
        eng.dispose()
    assert [r.after for r in changes(evs)] == [(1,), (3,)]
    # the tagged transaction went by as an empty one, right before the last
    assert shape(evs)[-5:] == ["B", ("C", 0), "B", (Op.INSERT, (3,)), ("C", 1)]


def binlog_head(srv: MyServer) -> tuple[object, ...]:
    with srv.connect() as c, c.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        return tuple(cur.fetchone() or ())


def test_mariadb_problems(my_source_server: MyServer, my_source_dsn: str) -> None:
    srv, dsn = my_source_server, my_source_dsn
    db = parse_mysql_dsn(dsn).database
    assert db
    user = unique("ow")
    sql(
        srv, dsn, "CREATE TABLE c (id INT PRIMARY KEY)", f"CREATE USER '{user}'@'%'",
        f"GRANT SELECT, INSERT ON `{db}`.c TO '{user}'@'%'",  # a data table: it may connect
    )  # fmt: skip
    weak = my_engine(f"mysql://{user}@127.0.0.1:{srv.port}/{db}")
    eng = my_engine(dsn)
    tag = OriginTag("cdc_sync_p__a_to_b", db)
    try:
        with eng.connect() as conn:  # root may create it: no problem while it is missing
            assert tag.problems(conn) == []
        with weak.connect() as conn:  # no marker table yet, no privilege to create it
            (problem,) = tag.problems(conn)
        assert f"cannot create or write the origin marker table `{db}`.`{MARKER_TABLE}`" in (
            problem
        )
        assert f"GRANT CREATE, SELECT, INSERT, UPDATE ON `{db}`.* TO '{user}'@'%';" in problem
        with pytest.raises(PermanentError, match="GRANT"), weak.connect() as conn:
            tag.ensure(conn)
        with eng.connect() as conn:
            tag.ensure(conn)  # a DBA created it; the user may not write it
            conn.commit()
            head = binlog_head(srv)
            assert tag.problems(conn) == []
            conn.commit()
            assert binlog_head(srv) == head  # the privilege probe writes nothing
        with weak.connect() as conn:
            (problem,) = tag.problems(conn)
        fix = problem.rsplit("; ", 1)[-1]
        assert fix == f"GRANT SELECT, INSERT, UPDATE ON `{db}`.`{MARKER_TABLE}` TO '{user}'@'%';"
        sql(srv, dsn, fix)
        with weak.connect() as conn:
            assert tag.problems(conn) == []
            tag.tag(conn)
            conn.commit()
    finally:
        weak.dispose()
        eng.dispose()
        sql(srv, dsn, f"DROP USER '{user}'@'%'")
