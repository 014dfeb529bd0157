"""DEFERRABLE primary keys on a PostgreSQL source: refused without a usable replica identity
(before the table is published, so the source's own updates keep working), and with
REPLICA IDENTITY FULL key swaps and rotations done in one statement keep every row."""

from __future__ import annotations

import random
import string
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from tests.integration.harness import Setup
from tests.integration.routes import Route, audit_counts, execute, fetch, norm

pytestmark = pytest.mark.integration


def _published(dsn: str, pipeline: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = %s",
            (f"cdc_sync_{pipeline}",),
        ).fetchall()
    return {str(r[0]) for r in rows}


def test_deferrable_pk_needs_a_usable_replica_identity(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    execute(
        source_dsn,
        "CREATE TABLE accounts (id int PRIMARY KEY DEFERRABLE, code text NOT NULL UNIQUE, "
        "name text)",
        "CREATE TABLE ledger (id int PRIMARY KEY DEFERRABLE INITIALLY DEFERRED, "
        "ref int NOT NULL, amount int)",
        "CREATE UNIQUE INDEX ledger_ref ON ledger (ref)",
        "CREATE TABLE plain (id int PRIMARY KEY, v text)",
        "INSERT INTO accounts VALUES (1, 'a', 'ann'), (2, 'b', 'bob')",
        "INSERT INTO ledger VALUES (1, 10, 5)",
        "INSERT INTO plain VALUES (1, 'x')",
    )
    tables: dict[str, str | None] = {"public.accounts": None, "public.ledger": None}
    tables["public.plain"] = None
    s = Setup(tmp_path, source_dsn, target_dsn, tables)

    check = s.cli("check")
    assert check.returncode == 1, check.stdout + check.stderr
    for table, idx in (("public.accounts", "accounts_code_key"), ("public.ledger", "ledger_ref")):
        line = next(x for x in check.stdout.splitlines() if f"table {table} " in x)
        assert "DEFERRABLE primary key" in line
        assert f"ALTER TABLE {table} REPLICA IDENTITY FULL;" in line
        assert f"ALTER TABLE {table} REPLICA IDENTITY USING INDEX {idx};" in line
    assert "public.plain" not in check.stdout

    run = s.cli("run", "--until-caught-up")
    assert run.returncode == 1
    assert "public.accounts" in run.stderr and "public.ledger" in run.stderr
    # refused before anything was published: the source's own writes still work
    assert _published(source_dsn, s.pipeline) == set()
    execute(
        source_dsn,
        "UPDATE accounts SET name = 'anne' WHERE id = 1",
        "DELETE FROM ledger WHERE id = 1",
        "INSERT INTO ledger VALUES (2, 20, 7)",
    )

    # either fix is accepted; FULL keeps the primary key as the row's identity
    execute(
        source_dsn,
        "ALTER TABLE accounts REPLICA IDENTITY FULL",
        "ALTER TABLE ledger REPLICA IDENTITY USING INDEX ledger_ref",
    )
    check = s.cli("check")
    assert check.returncode == 0, check.stdout + check.stderr
    s.drain()
    assert _published(source_dsn, s.pipeline) == {
        "public.accounts",
        "public.ledger",
        "public.plain",
    }
    execute(
        source_dsn,
        "UPDATE accounts SET name = 'bo' WHERE id = 2",
        "UPDATE accounts SET id = 3 WHERE id = 1",
        "UPDATE ledger SET amount = 8 WHERE ref = 20",
        "DELETE FROM accounts WHERE id = 2",
    )
    s.drain()
    for t in ("accounts", "ledger", "plain"):
        assert fetch(target_dsn, f"public.{t}") == fetch(source_dsn, f"public.{t}"), t
    assert fetch(target_dsn, "public.accounts") == [(3, "a", "anne")]


def _big(seed: int) -> str:
    # incompressible, so stored out of line (TOAST): a key change sends it as "unchanged"
    return "".join(random.Random(seed).choice(string.ascii_letters) for _ in range(20_000))


def _rows(dsn: str, table: str) -> list[tuple[object, ...]]:
    return [tuple(norm(v) for v in r) for r in fetch(dsn, table)]


@pytest.mark.parametrize("route", ["pg-pg", "pg-my"])
def test_key_swaps_under_a_deferrable_pk_keep_every_row(
    tmp_path: Path, route: str, source_dsn: str, target_dsn: str, my_target_dsn: str
) -> None:
    tgt = target_dsn if route == "pg-pg" else my_target_dsn
    tschema = "public" if route == "pg-pg" else my_target_dsn.rsplit("/", 1)[-1]
    execute(
        source_dsn,
        "CREATE TABLE swap (id int PRIMARY KEY DEFERRABLE INITIALLY IMMEDIATE, v text)",
        "ALTER TABLE swap REPLICA IDENTITY FULL",
        "CREATE TABLE docs (id int PRIMARY KEY DEFERRABLE, title text, body text)",
        "ALTER TABLE docs REPLICA IDENTITY FULL",
        "CREATE TABLE chain (id int PRIMARY KEY, v text)",
    )
    names = ("swap", "docs", "chain")
    r = Route(
        tmp_path,
        source_dsn,
        tgt,
        {f"public.{t}": f"{tschema}.{t}" for t in names},
        on_error="stop",
    )
    r.drain()
    execute(
        source_dsn,
        "INSERT INTO swap SELECT g, 'v' || g FROM generate_series(1, 8) g",
        "INSERT INTO chain SELECT g, 'c' || g FROM generate_series(1, 6) g",
    )
    for i in (1, 2, 3):
        execute(source_dsn, "INSERT INTO docs VALUES (%s, %s, %s)", params=(i, f"t{i}", _big(i)))
    changes = Counter({"insert": 8 + 6 + 3})
    execute(
        source_dsn,
        # swap 1 <-> 2 in one statement: unique at the statement's end only
        "UPDATE swap SET id = 3 - id WHERE id IN (1, 2)",
        # rotation 3 -> 4 -> 5 -> 6 -> 3 in one statement
        "UPDATE swap SET id = CASE WHEN id = 6 THEN 3 ELSE id + 1 END WHERE id BETWEEN 3 AND 6",
        # the same rows rotated back, visited in another physical order
        "UPDATE swap SET id = CASE WHEN id = 3 THEN 6 ELSE id - 1 END WHERE id BETWEEN 3 AND 6",
        # swap of rows whose TOASTed body is unchanged
        "UPDATE docs SET id = 3 - id WHERE id IN (1, 2)",
    )
    changes["update"] += 2 + 4 + 4 + 2
    # a swap across two statements of one transaction, the check deferred to its commit
    with psycopg.connect(source_dsn) as conn:
        conn.execute("SET CONSTRAINTS ALL DEFERRED")
        conn.execute("UPDATE swap SET id = 8 WHERE v = 'v7'")
        conn.execute("UPDATE swap SET id = 7 WHERE v = 'v8'")
    changes["update"] += 2
    # chains in several statements (correct before, must stay so), on both kinds of key
    for t, last in (("chain", 7), ("swap", 9)):
        with psycopg.connect(source_dsn) as conn:
            for stmt in (
                f"UPDATE {t} SET id = 100 WHERE id = 1",
                f"UPDATE {t} SET id = 1 WHERE id = 2",
                f"UPDATE {t} SET id = 2 WHERE id = 100",
                f"INSERT INTO {t} VALUES (100, 'new100')",
                f"DELETE FROM {t} WHERE id = 3",
                f"INSERT INTO {t} VALUES (3, 'again3')",
                f"UPDATE {t} SET id = {last} WHERE id = 3",
            ):
                conn.execute(stmt)  # type: ignore[arg-type]
        changes["update"] += 4
        changes["insert"] += 2
        changes["delete"] += 1
    r.drain()

    assert _rows(source_dsn, "public.swap") == [
        (1, "v1"), (2, "v2"), (4, "v4"), (5, "v5"), (6, "v6"), (7, "v8"), (8, "v7"),
        (9, "again3"), (100, "new100"),
    ]  # fmt: skip
    for t in ("swap", "chain"):
        assert _rows(tgt, f"{tschema}.{t}") == _rows(source_dsn, f"public.{t}"), t
    src_docs = fetch(source_dsn, "public.docs", "id, title, md5(body)")
    assert [d[:2] for d in src_docs] == [(1, "t2"), (2, "t1"), (3, "t3")]
    assert fetch(tgt, f"{tschema}.docs", "id, title, md5(body)") == src_docs

    audited: Counter[str] = Counter()
    for (op, table, _pk), n in audit_counts(tgt, r.pipeline).items():
        if table in ("public.swap", "public.docs", "public.chain"):
            audited[op] += n
    assert audited == changes
