"""Schema changes mid-stream on every engine pair: the target is widened, nothing is split."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from tests.integration.routes import Route, audit_counts, column_types, execute, fetch, norm

pytestmark = pytest.mark.integration


def _db(dsn: str) -> str:
    return dsn.rsplit("/", 1)[-1]


def _rows(dsn: str, table: str, cols: str) -> list[tuple[object, ...]]:
    return [tuple(norm(v) for v in r) for r in fetch(dsn, table, cols)]


def _ops(r: Route) -> Counter[str]:
    return Counter(op for (op, _t, _k), n in audit_counts(r.target_dsn, r.pipeline).items()
                   for _ in range(n))  # fmt: skip


@pytest.mark.parametrize("target", ["pg", "mysql"])
def test_mysql_alter_while_running_and_while_stopped(
    tmp_path: Path, my_source_dsn: str, target_dsn: str, my_target_dsn: str, target: str
) -> None:
    tgt = target_dsn if target == "pg" else my_target_dsn
    tschema = "public" if target == "pg" else _db(my_target_dsn)
    src = my_source_dsn
    execute(src, "CREATE TABLE calls (id int PRIMARY KEY, outcome varchar(20))")
    r = Route(tmp_path, src, tgt, {f"{_db(src)}.calls": f"{tschema}.calls"}, max_seconds=0.05)
    r.drain()
    execute(
        src,
        "INSERT INTO calls VALUES (1, 'busy'), (2, 'answered')",
        "ALTER TABLE calls ADD COLUMN seconds int",
        "INSERT INTO calls VALUES (3, 'answered', 42)",
        "UPDATE calls SET seconds = 7 WHERE id = 1",
        "ALTER TABLE calls MODIFY COLUMN outcome varchar(40)",
        "INSERT INTO calls VALUES (4, 'a much longer outcome text here', 5)",
    )
    proc = r.start()  # running: ALTERs arrive between transactions of the stream
    deadline = time.monotonic() + 30  # streaming (past its start-up catalog reads) first
    while len(fetch(tgt, f"{tschema}.calls", "id")) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    # An added TINYINT(1) (BOOLEAN to clients) keeps its width in a MySQL target: the
    # binlog's table map says only TINY.
    execute(src, "ALTER TABLE calls ADD COLUMN agent varchar(10)",
            "ALTER TABLE calls ADD COLUMN vip tinyint(1)",
            "INSERT INTO calls VALUES (5, 'busy', 1, 'ann', 1)")  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if len(fetch(tgt, f"{tschema}.calls", "id")) == 5:
            break
        time.sleep(0.1)
    proc.terminate()
    assert proc.wait(30) == 0
    want = "tinyint(1)" if target == "mysql" else "smallint"
    assert column_types(tgt, "calls" if target == "mysql" else "public.calls")["vip"] == want
    # while stopped: a dropped column (the target keeps it, new rows leave it NULL)
    execute(src, "ALTER TABLE calls DROP COLUMN seconds",
            "INSERT INTO calls VALUES (6, 'late', 'bob', NULL)")  # fmt: skip
    r.drain()
    assert _rows(tgt, f"{tschema}.calls", "id, vip")[-2:] == [(5, 1), (6, None)]
    got = _rows(tgt, f"{tschema}.calls", "id, outcome, agent")
    assert got == _rows(src, "calls", "id, outcome, agent")
    assert _rows(tgt, f"{tschema}.calls", "id, seconds") == [
        (1, 7), (2, None), (3, 42), (4, 5), (5, 1), (6, None)
    ]  # fmt: skip
    assert _ops(r) == Counter({"insert": 6, "update": 1})


def test_pg_transactional_ddl_into_mysql(
    tmp_path: Path, source_dsn: str, my_target_dsn: str
) -> None:
    """A PostgreSQL transaction that writes, alters and writes again: MySQL would commit the
    first half with the DDL; the daemon must roll back, widen, and re-apply it whole."""
    tdb = _db(my_target_dsn)
    execute(source_dsn, "CREATE TABLE calls (id int PRIMARY KEY, outcome text)")
    r = Route(tmp_path, source_dsn, my_target_dsn, {"public.calls": f"{tdb}.calls"},
              pipeline="ddl_" + _db(source_dsn))  # fmt: skip
    r.drain()
    proc = r.start()  # streaming when the DDL arrives, so it meets the open transaction
    execute(source_dsn, "INSERT INTO calls VALUES (1, 'busy')")
    deadline = time.monotonic() + 30
    while not fetch(my_target_dsn, "calls", "id") and time.monotonic() < deadline:
        time.sleep(0.1)
    with psycopg.connect(source_dsn) as c:
        c.execute("INSERT INTO calls VALUES (2, 'answered')")
        c.execute("ALTER TABLE calls ADD COLUMN seconds int")
        c.execute("INSERT INTO calls VALUES (3, 'answered', 42)")
        c.execute("UPDATE calls SET seconds = 9 WHERE id = 2")
    execute(source_dsn, "INSERT INTO calls VALUES (4, 'busy', 1)")
    while len(fetch(my_target_dsn, "calls", "id")) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.terminate()
    assert proc.wait(30) == 0
    assert "schema changed inside a source transaction" in r.log.read_text()
    r.drain()
    assert _rows(my_target_dsn, "calls", "id, outcome, seconds") == _rows(
        source_dsn, "calls", "id, outcome, seconds"
    )
    assert _ops(r) == Counter({"insert": 4, "update": 1})
