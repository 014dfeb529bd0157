"""Source schema changes the target must follow on every engine pair, checked by content:
a type the daemon widened meets the rows written before the source's ALTER again (replayed
after a restart), a dropped NOT NULL column must not refuse every later row, a dropped key
column stops with a clear message, an added column with a DEFAULT is repaired by verify."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import psycopg
import pytest

from tests.integration.routes import Route, column_types, execute, fetch, kind, my_connect, norm

pytestmark = pytest.mark.integration

ROUTES = ["pg-pg", "mysql-pg", "mysql-mysql", "pg-mysql"]


def _db(dsn: str) -> str:
    return dsn.rsplit("/", 1)[-1]


def _rows(dsn: str, table: str, cols: str = "*") -> list[tuple[object, ...]]:
    return [tuple(norm(v) for v in r) for r in fetch(dsn, table, cols)]


class Pair:
    """One route's source and target, and the names of table ``t`` on each side."""

    def __init__(
        self, route: str, tmp: Path, pg_src: str, pg_tgt: str, my_src: str, my_tgt: str
    ) -> None:
        skind, tkind = route.split("-")
        self.src = pg_src if skind == "pg" else my_src
        self.tgt = pg_tgt if tkind == "pg" else my_tgt
        self.my_source, self.my_target = skind == "mysql", tkind == "mysql"
        self.source_table = "public.t" if skind == "pg" else f"{_db(my_src)}.t"
        self.target_table = "public.t" if tkind == "pg" else f"{_db(my_tgt)}.t"
        self.tmp = tmp

    def route(self) -> Route:
        # Slot names are per server: one pipeline name per source database.
        return Route(self.tmp, self.src, self.tgt, {self.source_table: self.target_table},
                     pipeline=f"d_{_db(self.src)}", max_seconds=0.05)  # fmt: skip

    def source_rows(self, cols: str = "*") -> list[tuple[object, ...]]:
        return _rows(self.src, "t", cols)

    def target_rows(self, cols: str = "*") -> list[tuple[object, ...]]:
        return _rows(self.tgt, self.target_table, cols)

    def types(self) -> dict[str, str]:
        return column_types(self.tgt, "t" if self.my_target else "public.t")

    def nullable(self, column: str) -> bool:
        if self.my_target:
            with my_connect(self.tgt) as c, c.cursor() as cur:
                cur.execute(
                    "SELECT IS_NULLABLE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = "
                    "DATABASE() AND TABLE_NAME = 't' AND COLUMN_NAME = %s",
                    (column,),
                )
                return bool(cur.fetchone()[0] == "YES")
        with psycopg.connect(self.tgt) as conn:
            row = conn.execute(
                "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'public.t'::regclass "
                "AND attname = %s",
                (column,),
            ).fetchone()
        assert row is not None
        return not row[0]

    def dead_letters(self, pipeline: str) -> int:
        return len(fetch(self.tgt, f"cdc_sync_dead_letters WHERE pipeline = '{pipeline}'", "1"))


@pytest.fixture
def pair(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    source_dsn: str,
    target_dsn: str,
    my_source_dsn: str,
    my_target_dsn: str,
) -> Pair:
    return Pair(request.param, tmp_path, source_dsn, target_dsn, my_source_dsn, my_target_dsn)


def _wait(what: object, until: object, seconds: float = 30) -> None:
    assert callable(what) and callable(until)
    deadline = time.monotonic() + seconds
    while not until(what()) and time.monotonic() < deadline:
        time.sleep(0.1)


def _events(r: Route, event: str) -> list[dict[str, object]]:
    out = []
    for line in r.log.read_text().splitlines():
        if event in line:
            out.append(json.loads(line))
    return out


# -- A: a column the daemon widened meets the rows from before the source's ALTER again ------


@pytest.mark.parametrize("pair", ROUTES, indirect=True)
def test_widened_while_stopped_takes_the_rows_from_before_the_alter(pair: Pair) -> None:
    """Daemon stopped; the source widens its columns between two inserts. At start the target
    is widened from the source's catalog, then the stream replays the first insert, whose
    Relation message / table map still has the narrow types: a wider target column holds
    them (it used to stop the pipeline for good on integers and BINARY)."""
    if pair.my_source:
        execute(pair.src, "CREATE TABLE t (id int PRIMARY KEY, code int, sm smallint, u int "
                "unsigned, v varchar(5), n decimal(6,2), ts datetime(2), b binary(4))")  # fmt: skip
        widen = ("ALTER TABLE t MODIFY code bigint, MODIFY sm int, MODIFY u bigint unsigned, "
                 "MODIFY v varchar(40), MODIFY n decimal(12,4), MODIFY ts datetime(6), "
                 "MODIFY b binary(8)")  # fmt: skip
        first = "(1, 7, 1, 4000000000, 'ab', 1.5, '2020-01-01 00:00:00.12', 'ab')"
        second = ("(2, 9000000000, 70000, 18446744073709551615, 'a much longer text', "
                  "12345678.1234, '2020-01-01 00:00:00.123456', 'abcdefg')")  # fmt: skip
    else:
        execute(pair.src, "CREATE TABLE t (id int PRIMARY KEY, code int, sm smallint, "
                "v varchar(5), n numeric(6,2), ts timestamp(2))")  # fmt: skip
        widen = ("ALTER TABLE t ALTER COLUMN code TYPE bigint, ALTER COLUMN sm TYPE integer, "
                 "ALTER COLUMN v TYPE varchar(40), ALTER COLUMN n TYPE numeric(12,4), "
                 "ALTER COLUMN ts TYPE timestamp(6)")  # fmt: skip
        first = "(1, 7, 1, 'ab', 1.5, '2020-01-01 00:00:00.12')"
        second = ("(2, 9000000000, 70000, 'a much longer text', 12345678.1234, "
                  "'2020-01-01 00:00:00.123456')")  # fmt: skip
    r = pair.route()
    r.drain()
    execute(pair.src, f"INSERT INTO t VALUES {first}", widen, f"INSERT INTO t VALUES {second}",
            "UPDATE t SET code = code + 1")  # fmt: skip
    r.drain()
    assert pair.target_rows() == pair.source_rows()
    assert len(_events(r, "target_column_widened")) >= 5
    if pair.my_source and pair.my_target:  # binary(4) rows replayed into binary(8): padded
        assert {e["column"] for e in _events(r, "target_column_pads_binary")} == {"b"}
    r.drain()  # and every later start
    execute(pair.src, "INSERT INTO t (id, code) VALUES (3, -9000000000)")
    r.drain()
    assert pair.target_rows() == pair.source_rows()
    assert pair.types()["code"].startswith("bigint")


@pytest.mark.parametrize("pair", ROUTES, indirect=True)
def test_a_target_column_wider_than_the_source_is_kept(pair: Pair) -> None:
    """A DBA's target table with wider integer columns than the source's: written as is."""
    execute(pair.src, "CREATE TABLE t (id int PRIMARY KEY, code int, sm smallint)",
            "INSERT INTO t VALUES (1, -2147483648, 32767)")  # fmt: skip
    wide = "code bigint, sm decimal(12,2)" if pair.my_target else "code bigint, sm numeric(10,0)"
    execute(pair.tgt, f"CREATE TABLE {pair.target_table} (id int PRIMARY KEY, {wide})")
    before = pair.types()
    r = pair.route()
    r.drain()
    execute(pair.src, "INSERT INTO t VALUES (2, 2147483647, -32768)")
    r.drain()
    assert pair.target_rows() == pair.source_rows()
    assert pair.types() == before


# -- B: a NOT NULL column dropped at the source -----------------------------------------------


@pytest.mark.parametrize("running", [False, True], ids=["stopped", "running"])
@pytest.mark.parametrize("pair", ROUTES, indirect=True)
def test_dropped_not_null_column_stays_null_in_new_rows(pair: Pair, running: bool) -> None:
    """README: a dropped column stays in the target, NULL in new rows, history kept. When it
    was NOT NULL without a default, every later insert and update used to be refused (dead
    letters); now its NOT NULL is dropped, with a WARNING."""
    execute(pair.src, "CREATE TABLE t (id int PRIMARY KEY, must varchar(10) NOT NULL, v int)",
            "INSERT INTO t VALUES (1, 'x', 1)")  # fmt: skip
    r = pair.route()
    r.drain()
    assert not pair.nullable("must")
    proc = r.start() if running else None
    if proc is not None:  # streaming (past its start-up catalog reads) first
        execute(pair.src, "INSERT INTO t VALUES (9, 'y', 9)")
        _wait(lambda: len(pair.target_rows("id")), lambda n: n == 2)
    execute(pair.src, "ALTER TABLE t DROP COLUMN must", "INSERT INTO t VALUES (2, 2)",
            "UPDATE t SET v = 10 WHERE id = 1", "DELETE FROM t WHERE id = 9")  # fmt: skip
    if proc is not None:
        _wait(pair.target_rows, lambda rows: rows == [(1, "x", 10), (2, None, 2)])
        proc.terminate()
        assert proc.wait(30) == 0
    r.drain()
    assert pair.target_rows("id, v") == pair.source_rows("id, v")
    assert pair.target_rows("id, must") == [(1, "x"), (2, None)]  # history kept
    assert pair.nullable("must")
    assert pair.dead_letters(r.pipeline) == 0
    (event,) = _events(r, "target_column_made_nullable")
    assert event["column"] == "must" and event["level"] == "warning"


@pytest.mark.parametrize("pair", ["pg-mysql", "mysql-pg"], indirect=True)
def test_a_dba_table_with_a_not_null_column_the_source_lacks(pair: Pair) -> None:
    """A target table the DBA made with a NOT NULL column (no default) the source never had:
    same as a dropped one, since otherwise every row is a dead letter. A column the target
    fills itself (a default) is left alone."""
    execute(pair.src, "CREATE TABLE t (id int PRIMARY KEY, v int)",
            "INSERT INTO t VALUES (1, 1)")  # fmt: skip
    execute(pair.tgt, f"CREATE TABLE {pair.target_table} (id int PRIMARY KEY, v int, "
            "extra varchar(10) NOT NULL, filled int NOT NULL DEFAULT 5)")  # fmt: skip
    r = pair.route()
    r.drain()
    execute(pair.src, "INSERT INTO t VALUES (2, 2)")
    r.drain()
    assert pair.target_rows("id, v, extra, filled") == [(1, 1, None, 5), (2, 2, None, 5)]
    assert pair.nullable("extra") and not pair.nullable("filled")
    assert pair.dead_letters(r.pipeline) == 0


@pytest.mark.parametrize("pair", ["pg-pg", "mysql-mysql"], indirect=True)
def test_dropped_key_column_stops_naming_it(pair: Pair) -> None:
    """A key column dropped at the source (the source's key becomes the rest of it): the
    target's key no longer matches; the pipeline stops saying so, nothing is written."""
    execute(pair.src, "CREATE TABLE t (a int, b int, v int, PRIMARY KEY (a, b))",
            "INSERT INTO t VALUES (1, 1, 1)")  # fmt: skip
    r = pair.route()
    r.drain()
    if pair.my_source:
        execute(pair.src, "ALTER TABLE t DROP PRIMARY KEY, DROP COLUMN b, ADD PRIMARY KEY (a)")
    else:
        execute(pair.src, "ALTER TABLE t DROP COLUMN b", "ALTER TABLE t ADD PRIMARY KEY (a)")
    execute(pair.src, "INSERT INTO t VALUES (2, 2)")
    res = r.cli("run", "--until-caught-up")
    assert res.returncode != 0
    assert "holds 'b', which the source table no longer has" in res.stderr, res.stderr[-2000:]
    assert pair.target_rows() == [(1, 1, 1)]


def test_pg_target_without_alter_rights_names_the_alter(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    """The least-privileged daemon (DML only, not the table's owner) cannot drop NOT NULL:
    it stops with the ALTER for the DBA; after it, the daemon resumes and catches up."""
    role = f"cdc_low_{_db(target_dsn)}"
    execute(source_dsn, "CREATE TABLE t (id int PRIMARY KEY, must text NOT NULL, v int)",
            "INSERT INTO t VALUES (1, 'x', 1)")  # fmt: skip
    execute(target_dsn, "CREATE TABLE public.t (id int PRIMARY KEY, must text NOT NULL, v int)",
            f"CREATE ROLE {role} LOGIN", f"GRANT CREATE ON SCHEMA public TO {role}",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON public.t TO {role}")  # fmt: skip
    low = re.sub(r"//[^@/]*@", f"//{role}@", target_dsn, count=1)
    r = Route(tmp_path, source_dsn, low, {"public.t": "public.t"}, pipeline=f"d_{_db(source_dsn)}")
    r.drain()
    execute(source_dsn, "ALTER TABLE t DROP COLUMN must", "INSERT INTO t VALUES (2, 2)")
    res = r.cli("run", "--until-caught-up")
    assert res.returncode != 0
    fix = 'ALTER TABLE "public"."t" ALTER COLUMN "must" DROP NOT NULL'
    assert f"Run as the table's owner: {fix};" in res.stderr, res.stderr[-2000:]
    execute(target_dsn, fix)
    r.drain()
    assert _rows(target_dsn, "public.t", "id, must, v") == [(1, "x", 1), (2, None, 2)]


def test_mysql_target_without_alter_rights_names_the_alter(
    tmp_path: Path, my_source_dsn: str, my_target_dsn: str
) -> None:
    """The same on MariaDB: the replicated table lives in a database where the daemon's user
    has DML only; the MODIFY it needs keeps type, character set and collation."""
    data = f"{_db(my_target_dsn)}_data"
    user = f"low_{_db(my_target_dsn)}"
    execute(my_source_dsn, "CREATE TABLE t (id int PRIMARY KEY, must varchar(10) NOT NULL, "
            "v int)", "INSERT INTO t VALUES (1, 'x', 1)")  # fmt: skip
    execute(
        my_target_dsn,
        f"CREATE DATABASE `{data}`",
        f"CREATE TABLE `{data}`.t (id int PRIMARY KEY, must varchar(10) CHARACTER SET latin1 "
        "COLLATE latin1_general_cs NOT NULL COMMENT 'kept 100%', v int)",
        f"CREATE USER '{user}'@'%'",
        f"GRANT ALL ON `{_db(my_target_dsn)}`.* TO '{user}'@'%'",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON `{data}`.t TO '{user}'@'%'",
    )
    low = re.sub(r"//[^@/]*@", f"//{user}@", my_target_dsn, count=1)
    r = Route(tmp_path, my_source_dsn, low, {f"{_db(my_source_dsn)}.t": f"{data}.t"})
    r.drain()
    execute(my_source_dsn, "ALTER TABLE t DROP COLUMN must", "INSERT INTO t VALUES (2, 2)")
    res = r.cli("run", "--until-caught-up")
    assert res.returncode != 0
    fix = (f"ALTER TABLE `{data}`.`t` MODIFY COLUMN `must` varchar(10) CHARACTER SET latin1 "
           "COLLATE latin1_general_cs NULL COMMENT 'kept 100%'")  # fmt: skip
    assert f"Run: {fix};" in res.stderr, res.stderr[-2000:]
    execute(my_target_dsn, fix)
    r.drain()
    assert _rows(my_target_dsn, f"`{data}`.t", "id, must, v") == [(1, "x", 1), (2, None, 2)]


# -- C: a column added with a DEFAULT ---------------------------------------------------------


@pytest.mark.parametrize("pair", ROUTES, indirect=True)
def test_added_column_with_default_warns_and_verify_repairs(pair: Pair) -> None:
    """The source's ALTER gives its existing rows a value per row (an expression default);
    neither pgoutput nor the binlog says so, nor can the catalog tell, and the target's
    existing rows get NULL. A WARNING names table and column with the fix; verify --repair
    makes the target equal to the source. (A constant default is carried over:
    test_added_column_backfill.py.)"""
    execute(pair.src, "CREATE TABLE t (id int PRIMARY KEY, v int)",
            "INSERT INTO t VALUES (1, 1), (2, 2)")  # fmt: skip
    r = pair.route()
    r.drain()
    per_row = "md5(random()::text)" if kind(pair.src) == "postgres" else "(uuid())"
    execute(pair.src, f"ALTER TABLE t ADD COLUMN status varchar(40) NOT NULL DEFAULT {per_row}",
            "INSERT INTO t VALUES (3, 3, 'new')")  # fmt: skip
    r.drain()
    assert pair.target_rows("id, status") == [(1, None), (2, None), (3, "new")]
    (event,) = _events(r, "target_column_added_without_backfill")
    assert event["column"] == "status" and "--repair" in str(event["fix"])
    repair = r.cli("verify", "-p", r.pipeline, "--repair")
    assert repair.returncode in (0, 1), repair.stdout + repair.stderr[-2000:]
    assert pair.target_rows() == pair.source_rows()
    assert r.cli("verify", "-p", r.pipeline).returncode == 0
