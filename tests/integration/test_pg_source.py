"""PostgresSource against a real throwaway PostgreSQL 15: values, operations, resume, errors."""

from __future__ import annotations

import contextlib
import itertools
import math
import re
import time
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from cdc_sync.errors import (
    NoKeyError,
    PermanentError,
    TransientError,
    UnsupportedTypeError,
)
from cdc_sync.records import (
    UNCHANGED,
    ChangeRecord,
    Heartbeat,
    Idle,
    Interval,
    Op,
    PgLsn,
    SourceEvent,
    TableId,
    TxBegin,
    TxCommit,
)
from cdc_sync.sources.postgres.source import PostgresSource
from cdc_sync.testing.pgserver import PgServer

pytestmark = pytest.mark.integration

_names = itertools.count()


def sql(dsn: str, *stmts: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for s in stmts:
            conn.execute(s)  # type: ignore[arg-type]


def query(dsn: str, q: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(q).fetchall()  # type: ignore[arg-type]


@pytest.fixture
def make_source(source_dsn: str) -> Iterator[Any]:
    """Builds sources with unique slot names; closes them and drops their slots after."""
    made: list[PostgresSource] = []

    def make(*tables: str, dsn: str = source_dsn, **kw: Any) -> PostgresSource:
        n = next(_names)
        src = PostgresSource(
            dsn,
            f"cdc_sync_t{n}_{time.time_ns()}",
            f"cdc_sync_pub{n}",
            [TableId.parse(t) for t in tables],
            poll_interval=0.2,
            **kw,
        )
        made.append(src)
        return src

    yield make
    for src in made:
        src.close()
        slot = src._slot
        with contextlib.suppress(psycopg.OperationalError):  # private server already gone
            sql(
                src._dsn,
                f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                f"WHERE slot_name = '{slot}' AND NOT active",
            )


def drain(
    src: PostgresSource, resume: PgLsn | None = None, *, ack: bool = True, timeout: float = 30
) -> list[SourceEvent]:
    """Every event up to the source's current head (reached via a Heartbeat)."""
    head = src.head()
    out: list[SourceEvent] = []
    deadline = time.monotonic() + timeout
    events = src.stream(resume)
    try:
        for ev in events:
            if isinstance(ev, Heartbeat) and ev.position >= head:
                break
            if time.monotonic() > deadline:
                raise AssertionError("source did not catch up")
            if isinstance(ev, Heartbeat | Idle):
                continue
            out.append(ev)
            if ack and isinstance(ev, TxCommit):
                src.ack(ev.end_position)
    finally:
        events.close()  # type: ignore[attr-defined]
    return out


def changes(events: Sequence[SourceEvent]) -> list[ChangeRecord]:
    return [e for e in events if isinstance(e, ChangeRecord)]


def commits(events: Sequence[SourceEvent]) -> list[TxCommit]:
    return [e for e in events if isinstance(e, TxCommit)]


def norm(v: object) -> object:
    """NaN-safe, scale-aware comparison form."""
    if isinstance(v, list):
        return [norm(x) for x in v]
    if isinstance(v, Decimal):
        return ("dec", str(v))
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return v


DDL = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN short_text AS varchar(8);
CREATE TABLE everything (
    id bigint PRIMARY KEY,
    i2 smallint, i4 integer, i8 bigint,
    n numeric, n122 numeric(12,2), n3810 numeric(38,10),
    r real, d double precision,
    t text, vc varchar(20), c char(5), st short_text,
    b boolean,
    dt date, tm time, tm3 time(3), ts timestamp, ts0 timestamp(0), tstz timestamptz,
    iv interval,
    u uuid,
    js json, jb jsonb,
    by bytea,
    m mood,
    ai int[], at text[], an numeric[], ats timestamptz[], a2 integer[][], au uuid[], am mood[],
    aby bytea[], ab boolean[], ad date[]
);
"""

ROWS = [
    "INSERT INTO everything (id) VALUES (1)",
    """INSERT INTO everything VALUES (2, 1, 2, 3, 1.5, 12.30, 123.4560000001,
        1.5, 2.25, 'hello', 'varchar', 'ab', 'dom',  true,
        '2026-11-23', '12:34:56.789', '01:02:03.456', '2026-11-23 12:00:00.123456',
        '2026-11-23 12:00:00', '2026-11-23 12:00:00.5+05:30',
        '1 year 2 mons 3 days 04:05:06.789', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
        '{"b": 1,   "a": [1, 2.50]}', '{"b": 1, "a": [1, 2.50]}', '\\x00ff10',
        'happy', '{1,NULL,3}', '{"a b","c,d","e\\"f",NULL,"","NULL","x\\\\y","{}"}',
        '{1.10,NaN}', '{"2026-01-01 00:00:00+00","1999-12-31 23:00:00-02"}', '{{1,2},{3,4}}',
        '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}', '{sad,ok}', '{"\\\\x01",NULL}', '{t,f}',
        '{2020-02-29}')""",
    """INSERT INTO everything VALUES (3, -32768, -2147483648, -9223372036854775808,
        'NaN', -9999999999.99, -0.0000000001,
        'NaN', '-Infinity', '', '', '', '', false,
        '0001-01-01', '00:00:00', '23:59:59.999', '1970-01-01 00:00:00',
        '2000-02-29 23:59:59', '1900-01-01 00:00:00+00',
        '-1 year -2 mons +3 days -04:05:06.000001', '00000000-0000-0000-0000-000000000000',
        '[]', '{}', '\\x', 'sad', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}')""",
    """INSERT INTO everything (id, i2, i4, i8, n, r, d, t, tstz, iv)
       VALUES (4, 32767, 2147483647, 9223372036854775807, 'Infinity', 'Infinity', 1e308,
       E'multi\\nline \\t tab ☎ 电话 ', '9999-12-31 23:59:59.999999+00', '0')""",
    """INSERT INTO everything (id, n, d, r, iv) VALUES (5, '-Infinity', 2.2250738585072014e-308,
       3.4028235e38, '-0.5 seconds')""",
]

# The source's own view of the rows, loaded by psycopg (an independent parser); intervals
# as exact (months, days, µs) and json as text, since psycopg maps those differently.
EXPECTED = """
SELECT id, i2, i4, i8, n, n122, n3810, r, d, t, vc, c, st::text, b, dt, tm, tm3, ts, ts0, tstz,
  CASE WHEN iv IS NOT NULL THEN ARRAY[
    (extract(year from iv) * 12 + extract(month from iv))::bigint, extract(day from iv)::bigint,
    ((extract(hour from iv) * 60 + extract(minute from iv)) * 60000000
     + extract(microseconds from iv))::bigint] END,
  u, js::text, jb::text, by, m::text, ai, at, an, ats, a2, au, am::text[], aby, ab, ad
FROM everything ORDER BY id
"""


def test_every_type_exactly(source_dsn: str, make_source: Any) -> None:
    sql(source_dsn, DDL)
    src = make_source("public.everything")
    schemas = src.prepare(create=True)
    schema = schemas[TableId("public", "everything")]
    assert schema.column("c").type.length == 5 and schema.column("n122").type.scale == 2
    assert schema.column("a2").type.array_dims == 2 and schema.column("am").type.enum_labels
    assert schema.column("st").type.length == 8 and not schema.column("id").nullable
    sql(source_dsn, *ROWS)
    events = drain(src)
    got = [r.after for r in changes(events)]
    want = query(source_dsn, EXPECTED)
    assert len(got) == len(want) == 5
    for row, w in zip(got, want, strict=True):
        assert row is not None
        g = list(row)
        iv = g[20]
        g[20] = None if iv is None else [iv.months, iv.days, iv.microseconds]
        assert [norm(x) for x in g] == [norm(x) for x in w]
    row2 = got[1]
    assert row2 is not None and row2[19].tzinfo is not None
    assert row2[19].utcoffset().total_seconds() == 0  # normalised to UTC
    assert row2[20] == Interval(14, 3, 14_706_789_000)
    assert str(row2[5]) == "12.30" and row2[11] == "ab   "
    assert got[4] is not None and got[4][20] == Interval(0, 0, -500_000)
    assert [type(e) for e in events][:3] == [TxBegin, ChangeRecord, TxCommit]


def test_operations_key_change_toast_and_truncate(source_dsn: str, make_source: Any) -> None:
    sql(
        source_dsn,
        "CREATE TABLE docs (id int PRIMARY KEY, body text, v int)",
        "ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL",
    )
    src = make_source("docs")
    src.prepare(create=True)
    sql(
        source_dsn,
        "INSERT INTO docs SELECT 1, string_agg(md5(g::text), ''), 0 "
        "FROM generate_series(1, 40000) g",
        "INSERT INTO docs VALUES (2, 'small', 0)",
        "UPDATE docs SET v = v + 1 WHERE id = 1",  # body is TOASTed and unchanged
        "UPDATE docs SET id = 20 WHERE id = 2",
        "DELETE FROM docs WHERE id = 20",
        "TRUNCATE docs",
    )
    recs = changes(drain(src))
    assert [r.op for r in recs] == [
        Op.INSERT,
        Op.INSERT,
        Op.UPDATE,
        Op.UPDATE,
        Op.DELETE,
        Op.TRUNCATE,
    ]
    body = recs[0].after[1]  # type: ignore[index]
    assert isinstance(body, str) and len(body) == 1_280_000
    want = query(
        source_dsn,
        "SELECT string_agg(md5(g::text), '' ORDER BY g) FROM generate_series(1, 40000) g",
    )
    assert body == want[0][0]
    assert recs[2].after == (1, UNCHANGED, 1) and recs[2].before is None
    assert recs[3].before == (2, None, None) and recs[3].before_is_key_only
    assert recs[3].after == (20, "small", 0) and recs[3].key_changed()
    assert recs[4].key() == (20,) and recs[4].after is None
    assert recs[5].before is None and recs[5].after is None


def test_add_column_mid_stream(source_dsn: str, make_source: Any) -> None:
    sql(source_dsn, "CREATE TABLE t (id int PRIMARY KEY, a text)")
    src = make_source("t")
    src.prepare(create=True)
    sql(
        source_dsn,
        "INSERT INTO t VALUES (1, 'x')",
        "ALTER TABLE t ADD COLUMN added numeric(5,1)",
        "UPDATE t SET added = 1.5 WHERE id = 1",
        "INSERT INTO t VALUES (2, 'y', 2.5)",
        "ALTER TABLE t DROP COLUMN a",
        "INSERT INTO t VALUES (3, NULL)",
    )
    recs = changes(drain(src))
    assert recs[0].schema.names == ("id", "a") and recs[0].after == (1, "x")
    assert recs[1].schema.names == ("id", "a", "added")
    assert recs[1].after == (1, "x", Decimal("1.5"))
    assert recs[1].schema.column("added").type.precision == 5
    assert recs[2].after == (2, "y", Decimal("2.5"))
    assert recs[3].schema.names == ("id", "added") and recs[3].after == (3, None)


def test_resume_skips_acked_transactions(source_dsn: str, make_source: Any) -> None:
    sql(source_dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    src = make_source("t")
    src.prepare(create=True)
    sql(source_dsn, "INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (2)")
    first = commits(drain(src, ack=False))
    assert len(first) == 2
    # Nothing acked: the server re-sends both; the checkpoint (first end) skips the first.
    again = drain(src, first[0].end_position, ack=False)
    assert [r.after for r in changes(again)] == [(2,)]
    # Acked and resumed at the ack: the acked transaction does not come back.
    src.ack(first[1].end_position)  # no stream open: nothing is told to the server
    events = drain(src, first[0].end_position)  # acks the second transaction
    assert [r.after for r in changes(events)] == [(2,)]
    sql(source_dsn, "INSERT INTO t VALUES (3)")
    events = drain(src, first[1].end_position)
    assert [r.after for r in changes(events)] == [(3,)]
    slot = query(
        source_dsn,
        f"SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
        f"WHERE slot_name = '{src._slot}'",
    )[0][0]
    assert PgLsn.from_body(slot) == commits(events)[0].end_position  # flush = acked only
    # A checkpoint older than the slot's confirmed point cannot be served
    with pytest.raises(PermanentError, match="no longer available"):
        drain(src, first[0].end_position)


def test_resume_after_crash(pg_private_server: PgServer, make_source: Any) -> None:
    dsn = pg_private_server.create_database("crash")
    sql(dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    src = make_source("t", dsn=dsn)
    src.prepare(create=True)
    sql(dsn, *(f"INSERT INTO t VALUES ({i})" for i in range(1, 4)))
    events = src.stream(None)
    seen: list[SourceEvent] = []
    for ev in events:
        if isinstance(ev, ChangeRecord | TxCommit):
            seen.append(ev)
        if isinstance(ev, TxCommit) and ev.row_count and len(commits(seen)) == 2:
            break
    checkpoint = commits(seen)[1].end_position
    src.ack(checkpoint)  # the stream is still open: sent to the server now
    pg_private_server.restart("immediate")
    with pytest.raises(TransientError):
        for _ in events:
            pass
    sql(dsn, "INSERT INTO t VALUES (4)")
    src.close()  # the catalog connection died with the server
    recs = changes(drain(src, checkpoint))
    assert [r.after for r in recs] == [(3,), (4,)]


def test_heartbeat_when_idle(source_dsn: str, make_source: Any) -> None:
    sql(source_dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    src = make_source("t")
    src.prepare(create=True)
    head = src.head()
    kinds: list[type] = []
    events = src.stream(None)
    for ev in events:
        kinds.append(type(ev))
        if isinstance(ev, Heartbeat) and ev.position >= head and Idle in kinds:
            break
        assert len(kinds) < 100
    events.close()  # type: ignore[attr-defined]
    assert Heartbeat in kinds and Idle in kinds


def test_unrepresentable_value_is_a_row_problem(source_dsn: str, make_source: Any) -> None:
    sql(source_dsn, "CREATE TABLE t (id int PRIMARY KEY, d date)")
    src = make_source("t")
    src.prepare(create=True)
    sql(source_dsn, "INSERT INTO t VALUES (1, 'infinity')", "INSERT INTO t VALUES (2, NULL)")
    recs = changes(drain(src))
    assert [r.after for r in recs] == [(1, None), (2, None)]
    problem = recs[0].problem
    assert problem is not None and recs[1].problem is None
    assert problem.column == "d"
    assert re.search(r"public\.t: column 'd' \(date\)", problem.reason)


def test_table_without_key(source_dsn: str, make_source: Any) -> None:
    sql(
        source_dsn,
        "CREATE TABLE nokey (a int NOT NULL, b text)",
        "CREATE UNIQUE INDEX nokey_a ON nokey (a)",
    )
    src = make_source("nokey")
    with pytest.raises(NoKeyError) as ei:
        src.prepare(create=True)
    msg = str(ei.value)
    assert "public.nokey" in msg
    assert "ALTER TABLE public.nokey ADD PRIMARY KEY" in msg
    assert "ALTER TABLE public.nokey REPLICA IDENTITY USING INDEX nokey_a;" in msg
    sql(source_dsn, "ALTER TABLE nokey REPLICA IDENTITY USING INDEX nokey_a")
    schema = src.prepare(create=True)[TableId("public", "nokey")]
    assert schema.key == ("a",)


def test_unsupported_type(source_dsn: str, make_source: Any) -> None:
    sql(source_dsn, "CREATE TABLE geo (id int PRIMARY KEY, p regclass)")
    with pytest.raises(UnsupportedTypeError) as ei:
        make_source("geo").prepare(create=True)
    assert (ei.value.table, ei.value.column, ei.value.type_name) == ("public.geo", "p", "regclass")


def test_all_problems_at_once_and_missing_table(source_dsn: str, make_source: Any) -> None:
    sql(source_dsn, "CREATE TABLE geo (id int PRIMARY KEY, p regtype, r box[], m money)")
    src = make_source("geo", "public.missing", may_create=False)
    problems = src.problems()
    text = "\n".join(problems)
    assert "configured table public.missing does not exist" in text
    assert "'p' has type 'regtype'" in text
    assert "'r' has type '_box'" in text and "'m' has type 'money'" in text
    assert "ALTER TABLE public.geo ALTER COLUMN m TYPE numeric(…);" in text
    assert f"SELECT pg_create_logical_replication_slot('{src._slot}', 'pgoutput');" in text
    assert "CREATE PUBLICATION" in text
    with pytest.raises(PermanentError) as ei:
        src.prepare(create=False)
    assert "public.missing" in str(ei.value) and "regtype" in str(ei.value)


def test_publication_is_aligned_and_slot_plugin_checked(source_dsn: str, make_source: Any) -> None:
    sql(source_dsn, "CREATE TABLE a (id int PRIMARY KEY)", "CREATE TABLE b (id int PRIMARY KEY)")
    src = make_source("a", "b")
    sql(source_dsn, f"CREATE PUBLICATION {src._publication} FOR TABLE a")
    assert src.problems() == []  # creating is allowed
    src.prepare(create=True)
    pub = query(
        source_dsn,
        f"SELECT tablename FROM pg_publication_tables "
        f"WHERE pubname = '{src._publication}' ORDER BY 1",
    )
    assert pub == [("a",), ("b",)]
    other = make_source("a")
    sql(source_dsn, f"SELECT pg_create_logical_replication_slot('{other._slot}', 'test_decoding')")
    assert any(
        "plugin 'test_decoding'" in p and "pg_drop_replication_slot" in p for p in other.problems()
    )
    with pytest.raises(PermanentError, match="test_decoding"):
        other.prepare(create=True)


def test_role_without_replication_privilege(source_dsn: str, make_source: Any) -> None:
    sql(
        source_dsn,
        "DROP ROLE IF EXISTS cdc_plain",
        "CREATE ROLE cdc_plain LOGIN",
        "CREATE TABLE t (id int PRIMARY KEY)",
    )
    dsn = source_dsn.replace("postgres@", "cdc_plain@")
    src = make_source("t", dsn=dsn)
    text = "\n".join(src.problems())
    assert "ALTER ROLE cdc_plain WITH REPLICATION;" in text
    assert "owner" in text  # may not create the publication either
    assert "postgresql://" not in text


def test_publication_of_a_partitioned_table_sends_it_under_its_own_name(
    source_dsn: str, make_source: Any
) -> None:
    sql(
        source_dsn,
        "CREATE TABLE calls (id int, d date, PRIMARY KEY (id, d)) PARTITION BY RANGE (d)",
        "CREATE TABLE calls_1 PARTITION OF calls FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",
    )
    src = make_source("calls", may_create=False)
    # A DBA's publication without publish_via_partition_root sends calls_1's changes as
    # calls_1's, which nothing here reads: reported with the statement that fixes it.
    sql(source_dsn, f"CREATE PUBLICATION {src._publication} FOR TABLE calls")
    text = "\n".join(src.problems())
    assert "under their partitions' names" in text
    assert f"ALTER PUBLICATION {src._publication} SET (publish_via_partition_root = true);" in text
    src.prepare(create=True)  # allowed to change it: changed
    pub = query(
        source_dsn,
        "SELECT p.pubviaroot, t.tablename FROM pg_publication p JOIN pg_publication_tables t "
        f"ON t.pubname = p.pubname WHERE p.pubname = '{src._publication}'",
    )
    assert pub == [(True, "calls")]
    assert make_source("calls", "calls_1").problems() == [
        "configured table public.calls_1 is a partition of public.calls, which is configured "
        "too: its changes arrive as public.calls's; configure one of them"
    ]
