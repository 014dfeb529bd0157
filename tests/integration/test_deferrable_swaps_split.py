"""Key swaps under a DEFERRABLE source key that one plan cannot see whole: split across
flush_rows chunks of one target transaction, re-applied row by row after a refusal, and on a
table with rules. Every row must survive (compared with the source's full contents)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.routes import Route, execute, fetch, kind, norm

pytestmark = pytest.mark.integration

SWAP_DDL = (
    "CREATE TABLE swap (id int PRIMARY KEY DEFERRABLE INITIALLY IMMEDIATE, v text, n int)",
    "ALTER TABLE swap REPLICA IDENTITY FULL",
)
SEED = "INSERT INTO swap SELECT g, 'v' || g || '-x', g * 10 FROM generate_series(1, 12) g"

# One statement each: the key is unique at the statement's end only.
SWAPS = (
    "UPDATE swap SET id = 3 - id WHERE id IN (1, 2)",  # swap
    # rotations 3 -> 4 -> ... -> 7 -> 3 and back, visited in different physical orders
    "UPDATE swap SET id = CASE WHEN id = 7 THEN 3 ELSE id + 1 END WHERE id BETWEEN 3 AND 7",
    "UPDATE swap SET id = CASE WHEN id = 3 THEN 7 ELSE id - 1 END WHERE id BETWEEN 3 AND 7",
    "UPDATE swap SET id = 19 - id WHERE id BETWEEN 8 AND 11",  # two swaps: 8<->11, 9<->10
)


def _rows(dsn: str, table: str) -> list[tuple[Any, ...]]:
    return [tuple(norm(v) for v in r) for r in fetch(dsn, table)]


def _route(tmp: Path, src: str, tgt: str, **kw: Any) -> tuple[Route, str]:
    schema = "public" if kind(tgt) == "postgres" else tgt.rsplit("/", 1)[-1]
    execute(src, *SWAP_DDL)
    r = Route(tmp, src, tgt, {"public.swap": f"{schema}.swap"}, **kw)
    r.drain()
    return r, f"{schema}.swap"


@pytest.mark.parametrize("route", ["pg-pg", "pg-my"])
def test_swaps_split_across_flush_chunks_keep_every_row(
    tmp_path: Path, route: str, source_dsn: str, target_dsn: str, my_target_dsn: str
) -> None:
    tgt = target_dsn if route == "pg-pg" else my_target_dsn
    # flush_rows 2: the open source transaction goes to the open target transaction two
    # changes at a time, so each swap's changes are planned in different chunks.
    r, table = _route(tmp_path, source_dsn, tgt, flush_rows=2, on_error="stop")
    execute(source_dsn, SEED)
    r.drain()
    for prefix in ((), ("UPDATE swap SET n = n + 1 WHERE id = 12",)):  # shifts the chunk edges
        with psycopg.connect(source_dsn) as conn:
            for stmt in (*prefix, *SWAPS):
                conn.execute(stmt)  # type: ignore[arg-type]
        # a swap in two statements, the check deferred to the commit
        with psycopg.connect(source_dsn) as conn:
            conn.execute("SET CONSTRAINTS ALL DEFERRED")
            row = conn.execute("SELECT v FROM swap WHERE id = 2").fetchone()
            assert row is not None
            conn.execute("UPDATE swap SET id = 2 WHERE id = 1")
            conn.execute("UPDATE swap SET n = n + 5 WHERE id = 12")
            conn.execute("UPDATE swap SET id = 1 WHERE v = %s", (row[0],))
    r.drain()
    want = _rows(source_dsn, "public.swap")
    assert len(want) == 12
    assert _rows(tgt, table) == want


@pytest.mark.parametrize("route", ["pg-pg", "pg-my"])
def test_swaps_reapplied_row_by_row_after_a_refusal_keep_every_row(
    tmp_path: Path, route: str, source_dsn: str, target_dsn: str, my_target_dsn: str
) -> None:
    tgt = target_dsn if route == "pg-pg" else my_target_dsn
    r, table = _route(tmp_path, source_dsn, tgt)  # on_error: dead_letter
    execute(source_dsn, SEED)
    r.drain()
    # The target refuses two rows the source has: the batch holding them is rolled back to
    # its savepoint and re-applied row by row (cdc_sync_row savepoints).
    execute(
        tgt,
        "ALTER TABLE swap ADD CONSTRAINT no_refused CHECK (v <> 'refused')",
        # the new row of the key change 12 -> 11 of the last swap
        "ALTER TABLE swap ADD CONSTRAINT not_11_v12 CHECK (NOT (id = 11 AND v = 'v12-x'))",
    )
    with psycopg.connect(source_dsn) as conn:
        conn.execute("INSERT INTO swap VALUES (50, 'refused', 0)")
        for stmt in SWAPS[:3]:
            conn.execute(stmt)  # type: ignore[arg-type]
        # 11 -> 12 is applied; 12 -> 11 is refused, and the delete of its old key 12 that
        # follows must keep the row 11 -> 12 wrote there
        conn.execute("UPDATE swap SET id = 23 - id WHERE id IN (11, 12)")
    r.drain()
    want = _rows(source_dsn, "public.swap")
    assert (50, "refused", 0) in want and (11, "v12-x", 120) in want
    refused = [(50, "refused", 0), (11, "v12-x", 120)]
    assert _rows(tgt, table) == [w for w in want if w not in refused]


# Renamed, upper-cased and masked, one column dropped and one constant added.
RULES = (
    "columns: {v: {target: label, transforms: [upper, "
    '{mask: {keep_first: 2, keep_last: 0, char: "*"}}]}, '
    "n: {drop: true}, origin: {value: crm}}"
)


def _rules_route(tmp: Path, source_dsn: str, target_dsn: str, flush_rows: int) -> Route:
    r = Route(
        tmp, source_dsn, target_dsn, {"public.swap": "public.swapped"},
        pipeline="sw_" + source_dsn.rsplit("/", 1)[-1], flush_rows=flush_rows, on_error="stop",
    )  # fmt: skip
    text = r.config.read_text()
    old = "{target: public.swapped}"
    r.config.write_text(text.replace(old, "{target: public.swapped, " + RULES + "}"))
    return r


@pytest.mark.parametrize("flush_rows", [5000, 2])
def test_swaps_on_a_table_with_rules_keep_every_row(
    tmp_path: Path, flush_rows: int, source_dsn: str, target_dsn: str
) -> None:
    execute(source_dsn, *SWAP_DDL)
    r = _rules_route(tmp_path, source_dsn, target_dsn, flush_rows)
    r.drain()
    execute(source_dsn, SEED)
    r.drain()
    with psycopg.connect(source_dsn) as conn:
        for stmt in SWAPS:
            conn.execute(stmt)  # type: ignore[arg-type]
    r.drain()
    # renamed, masked (the rows of each swap still differ in their first two characters),
    # one column dropped and one added
    src = _rows(source_dsn, "public.swap")
    want = [(i, v[:2].upper() + "*" * (len(v) - 2), "crm") for i, v, _n in src]
    assert len(want) == 12
    assert _rows(target_dsn, "public.swapped") == want
