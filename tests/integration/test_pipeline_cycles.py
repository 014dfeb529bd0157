"""Pipelines of one config that feed each other in a cycle (a_to_b and b_to_a, no link):
refused by check and at start, before anything is created, even with -p; a chain and a link
still run (real servers)."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cdc_sync.testing.pgserver import PgServer
from tests.conftest import drop_slots
from tests.integration.harness import Cli
from tests.integration.routes import execute, fetch, my_connect, server_id_extra
from tests.integration.test_self_loop import pg_slots_and_state

pytestmark = pytest.mark.integration

MESSAGE = "form a replication cycle"
PEOPLE = "CREATE TABLE people (id int PRIMARY KEY, name varchar(20) NOT NULL)"
_n = itertools.count()

CYCLE = """
sources:
  a: {{type: {a}, dsn: "${{A_DSN}}"{a_extra}}}
  b: {{type: {b}, dsn: "${{B_DSN}}"{b_extra}}}
targets:
  a: {{type: {a}, dsn: "${{A_DSN}}"}}
  b: {{type: {b}, dsn: "${{B_DSN}}"}}
pipelines:
  a_to_b: {{source: a, target: b, tables: {{{a_table}: {{target: {b_table}}}}}}}
  b_to_a: {{source: b, target: a, tables: {{{b_table}: {{target: {a_table}}}}}}}
logging: {{level: INFO, format: json}}
"""


class Config(Cli):
    """A config of several pipelines, run through the CLI; DSNs reach it through the env."""

    def __init__(self, tmp: Path, text: str, **dsns: str) -> None:
        self.config = tmp / f"cycle_{next(_n)}.yaml"
        self.config.write_text(text)
        self.env = {**os.environ, **dsns}
        self.log = tmp / "cycle.log"

    def drain_one(self, pipeline: str) -> None:
        res = self.cli("run", "-p", pipeline, "--until-caught-up")
        assert res.returncode == 0, res.stderr[-3000:]


def kind(dsn: str) -> str:
    return "mysql" if dsn.startswith("mysql") else "postgres"


def cycle(tmp: Path, a: str, b: str, a_table: str, b_table: str) -> Config:
    extra = {d: server_id_extra(d) if kind(d) == "mysql" else "" for d in (a, b)}
    text = CYCLE.format(
        a=kind(a),
        b=kind(b),
        a_extra=extra[a],
        b_extra=extra[b],
        a_table=a_table,
        b_table=b_table,
    )
    return Config(tmp, text, A_DSN=a, B_DSN=b)


@pytest.fixture
def other_dsn(pg_source_server: PgServer) -> Iterator[str]:
    """A second database on the source server (logical replication on), slots dropped after."""
    name = f"other_{next(_n)}_{os.getpid()}"
    yield pg_source_server.create_database(name)
    drop_slots(pg_source_server, name)


def my_state_tables(dsn: str) -> tuple[object, ...]:
    with my_connect(dsn) as c, c.cursor() as cur:
        cur.execute("SHOW TABLES LIKE 'cdc_sync%%'")
        return tuple(cur.fetchall())


def test_two_postgres_pipelines_both_ways_are_refused(
    source_dsn: str, other_dsn: str, tmp_path: Path
) -> None:
    for dsn in (source_dsn, other_dsn):
        execute(dsn, PEOPLE)
    execute(source_dsn, "INSERT INTO people VALUES (1, 'a')")
    before = pg_slots_and_state(source_dsn), pg_slots_and_state(other_dsn)
    cfg = cycle(tmp_path, source_dsn, other_dsn, "public.people", "public.people")
    check = cfg.cli("check")
    assert check.returncode == 1, check.stdout + check.stderr
    out = check.stdout
    assert out.count(MESSAGE) == 2  # reported under each of the two pipelines
    assert "a_to_b copies public.people (source a) to public.people (target b)" in out
    assert "b_to_a copies public.people (source b) to public.people (target a)" in out
    assert "`links:` entry" in out and "remove one direction" in out
    assert "127.0.0.1" not in out and "postgres:" not in out  # names, not DSNs or instances
    for args in (("run", "--until-caught-up"), ("run", "-p", "a_to_b", "--until-caught-up")):
        run = cfg.cli(*args)
        assert run.returncode == 1, run.stderr[-3000:]
        assert f"pipeline a_to_b: pipelines a_to_b, b_to_a {MESSAGE}" in run.stderr
    assert (pg_slots_and_state(source_dsn), pg_slots_and_state(other_dsn)) == before
    assert fetch(other_dsn, "people") == []


def test_postgres_to_mariadb_and_back_is_refused(
    source_dsn: str, my_source_dsn: str, tmp_path: Path
) -> None:
    db = my_source_dsn.rsplit("/", 1)[1]
    execute(source_dsn, PEOPLE)
    execute(my_source_dsn, PEOPLE)
    before = pg_slots_and_state(source_dsn)
    cfg = cycle(tmp_path, source_dsn, my_source_dsn, "public.people", f"{db}.people")
    check = cfg.cli("check")
    assert check.returncode == 1 and MESSAGE in check.stdout, check.stdout + check.stderr
    assert f"a_to_b copies public.people (source a) to {db}.people (target b)" in check.stdout
    run = cfg.cli("run", "--until-caught-up")
    assert run.returncode == 1 and MESSAGE in run.stderr, run.stderr[-3000:]
    assert f"b_to_a copies {db}.people (source b) to public.people (target a)" in run.stderr
    assert pg_slots_and_state(source_dsn) == before
    assert my_state_tables(my_source_dsn) == ()


CHAIN = """
sources:
  a: {type: postgres, dsn: "${A_DSN}"}
  b: {type: postgres, dsn: "${B_DSN}"}
targets:
  b: {type: postgres, dsn: "${B_DSN}"}
  c: {type: postgres, dsn: "${C_DSN}"}
pipelines:
  a_to_b: {source: a, target: b, tables: {public.people: {}}}
  b_to_c: {source: b, target: c, tables: {public.people: {}}}
logging: {level: INFO, format: json}
"""


def test_a_chain_is_allowed_and_replicates(
    source_dsn: str, other_dsn: str, target_dsn: str, tmp_path: Path
) -> None:
    execute(source_dsn, PEOPLE, "INSERT INTO people VALUES (1, 'a'), (2, 'b')")
    execute(other_dsn, PEOPLE)
    cfg = Config(tmp_path, CHAIN, A_DSN=source_dsn, B_DSN=other_dsn, C_DSN=target_dsn)
    check = cfg.cli("check")
    assert check.returncode == 0, check.stdout + check.stderr
    changes = ("UPDATE people SET name = 'b2' WHERE id = 2", "DELETE FROM people WHERE id = 1",
               "INSERT INTO people VALUES (3, 'c')")  # fmt: skip
    for step in range(2):
        cfg.drain()  # both pipelines
        cfg.drain_one("b_to_c")  # what a_to_b wrote into b meanwhile
        assert fetch(target_dsn, "people") == fetch(source_dsn, "people")
        if step == 0:
            execute(source_dsn, *changes)
    assert fetch(target_dsn, "people") == [(2, "b2"), (3, "c")]


def test_an_unreachable_other_endpoint_does_not_block_a_start(
    source_dsn: str, other_dsn: str, tmp_path: Path
) -> None:
    """b_to_a's source cannot be reached: its edge is skipped, a_to_b starts (-p)."""
    execute(source_dsn, PEOPLE, "INSERT INTO people VALUES (1, 'a')")
    execute(other_dsn, PEOPLE)
    cfg = cycle(tmp_path, source_dsn, other_dsn, "public.people", "public.people")
    text = cfg.config.read_text()
    live = 'b: {type: postgres, dsn: "${B_DSN}"}'
    cfg.config.write_text(text.replace(live, live.replace("B_DSN", "DEAD"), 1))  # the source
    cfg.env["DEAD"] = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"
    check = cfg.cli("check", "-p", "a_to_b")
    assert check.returncode == 0, check.stdout + check.stderr
    run = cfg.cli("run", "-p", "a_to_b", "--until-caught-up")
    assert run.returncode == 0, run.stderr[-3000:]
    assert fetch(other_dsn, "people") == [(1, "a")]


LINK = """
sources:
  crm: {{type: postgres, dsn: "${{CRM_DSN}}"}}
  dialer: {{type: mysql, dsn: "${{DIALER_DSN}}"{server_id}}}
links:
  lk:
    between: [crm, dialer]
    tables:
      public.people <-> {db}.people:
        conflict: {{rule: source_priority, source_priority: {{default: crm}}}}
logging: {{level: INFO, format: json}}
"""


@pytest.fixture
def crm(source_dsn: str, pg_source_server: PgServer) -> Iterator[str]:
    execute(source_dsn, PEOPLE, "ALTER TABLE people REPLICA IDENTITY FULL")
    yield source_dsn
    with psycopg.connect(pg_source_server.dsn(), autocommit=True) as c:  # origins, like slots
        for (name,) in c.execute(
            "SELECT roname FROM pg_replication_origin WHERE roname LIKE 'cdc_sync_%%'"
        ).fetchall():
            with contextlib.suppress(psycopg.Error):
                c.execute("SELECT pg_replication_origin_drop(%s)", (name,))


def test_a_link_is_still_allowed(crm: str, my_source_dsn: str, tmp_path: Path) -> None:
    db = my_source_dsn.rsplit("/", 1)[1]
    execute(my_source_dsn, PEOPLE)
    text = LINK.format(db=db, server_id=server_id_extra(my_source_dsn))
    cfg = Config(tmp_path, text, CRM_DSN=crm, DIALER_DSN=my_source_dsn)
    check = cfg.cli("check")
    assert check.returncode == 0, check.stdout + check.stderr
    cfg.drain()  # both directions start (slot, binlog position), nothing to apply yet
    execute(crm, "INSERT INTO people VALUES (1, 'a')")
    execute(my_source_dsn, "INSERT INTO people VALUES (2, 'b')")
    cfg.drain()
    assert fetch(crm, "people") == fetch(my_source_dsn, "people") == [(1, "a"), (2, "b")]
