"""Keys that are not the table's first columns, or whose columns are declared in another
order than the table's: deletes and key changes reach the right target row on every route.
Before, a PostgreSQL target took a delete's key values from table positions (IndexError, or
values swapped between key columns: dead letters, old rows left behind)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.routes import Route, execute, fetch, norm

pytestmark = pytest.mark.integration

ROUTES = ["pg-pg", "pg-my", "my-pg", "my-my"]


def _db(dsn: str) -> str:
    return dsn.rsplit("/", 1)[-1]


def _rows(dsn: str, table: str) -> list[tuple[object, ...]]:
    return [tuple(norm(v) for v in r) for r in fetch(dsn, table, order_by="1, 2, 3")]


@pytest.mark.parametrize("route", ROUTES)
def test_keys_out_of_table_order(
    tmp_path: Path,
    route: str,
    source_dsn: str,
    target_dsn: str,
    my_source_dsn: str,
    my_target_dsn: str,
) -> None:
    src = source_dsn if route.startswith("pg") else my_source_dsn
    tgt = target_dsn if route.endswith("pg") else my_target_dsn
    sschema = "public" if route.startswith("pg") else _db(src)
    tschema = "public" if route.endswith("pg") else _db(tgt)
    execute(
        src,
        # the key is the last column
        "CREATE TABLE agents (name varchar(20), team varchar(10), id int PRIMARY KEY)",
        # a composite key declared in the other order than its columns
        "CREATE TABLE codes (code varchar(10) NOT NULL, region varchar(10) NOT NULL, "
        "label varchar(20), PRIMARY KEY (region, code))",
        "INSERT INTO agents VALUES ('ann', 'a', 1), ('bob', 'a', 2), ('cy', 'b', 3)",
        "INSERT INTO codes VALUES ('c1', 'eu', 'one'), ('c2', 'eu', 'two'), ('c1', 'us', 'x')",
    )
    tables: dict[str, str | None] = {
        f"{sschema}.agents": f"{tschema}.agents",
        f"{sschema}.codes": f"{tschema}.codes",
    }
    r = Route(tmp_path, src, tgt, tables, on_error="stop")
    r.drain()
    execute(
        src,
        "DELETE FROM agents WHERE id = 1",
        "UPDATE agents SET id = 20 WHERE id = 2",  # key change: delete + insert
        "DELETE FROM codes WHERE region = 'eu' AND code = 'c1'",
        "UPDATE codes SET region = 'apac' WHERE code = 'c2'",
        "UPDATE codes SET label = 'y' WHERE region = 'us'",
    )
    r.drain()
    for t in ("agents", "codes"):
        assert _rows(tgt, f"{tschema}.{t}") == _rows(src, f"{sschema}.{t}"), t
    assert _rows(tgt, f"{tschema}.agents") == [("bob", "a", 20), ("cy", "b", 3)]
    # verify --repair deletes a row the source does not have, by its key
    execute(tgt, f"INSERT INTO {tschema}.codes VALUES ('zz', 'eu', 'extra')")
    repair = r.cli("verify", "-p", r.pipeline, "--repair")
    assert repair.returncode in (0, 1), repair.stdout + repair.stderr
    assert _rows(tgt, f"{tschema}.codes") == _rows(src, f"{sschema}.codes")
