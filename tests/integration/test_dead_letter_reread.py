"""Re-reading a dead-lettered change (``offsets reset``) keeps one open letter, audits it again."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cdc_sync.audit.dead_letters import DISCARDED, OPEN, DeadLetter, DeadLetterStore
from cdc_sync.state.migrate import upgrade
from tests.integration.routes import Route, execute, fetch, my_connect

pytestmark = pytest.mark.integration

LETTER_COLS = "pk, op, stage, column_name, status"


def _insert_zero_date(dsn: str) -> None:
    with my_connect(dsn) as c, c.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")  # neither strict nor NO_ZERO_DATE
        cur.execute(
            "INSERT INTO ev VALUES (1, '2024-01-02', 'ok'), (2, '0000-00-00', 'zero'), "
            "(3, '2024-03-04', 'ok')"
        )


def _letters(dsn: str) -> list[tuple[Any, ...]]:
    return [
        (json.loads(r[0]), *r[1:]) for r in fetch(dsn, "cdc_sync_dead_letters", LETTER_COLS, "id")
    ]


def _audited(dsn: str, pipeline: str) -> list[tuple[Any, ...]]:
    """(key, op, outcome) of the stream's audit rows for the change's table, oldest first."""
    rows = fetch(
        dsn,
        f"cdc_sync_audit WHERE pipeline = '{pipeline}' AND op IN ('insert', 'update', 'delete')",
        "pk, op, outcome",
        "id",
    )
    return [(json.loads(k), op, outcome) for k, op, outcome in rows]


def _checkpoint(dsn: str, pipeline: str) -> str:
    (row,) = fetch(dsn, f"cdc_sync_checkpoints WHERE pipeline = '{pipeline}'", "position")
    return str(row[0])


def _reset(r: Route, to: str) -> None:
    res = r.cli("offsets", "reset", "-p", r.pipeline, "--to", to, "--yes")
    assert res.returncode == 0, res.stderr[-2000:]


def test_a_reread_zero_date_keeps_one_open_letter(
    tmp_path: Path, my_source_dsn: str, target_dsn: str
) -> None:
    db = my_source_dsn.rsplit("/", 1)[-1]
    execute(my_source_dsn, "CREATE TABLE ev (id int PRIMARY KEY, d date, note text)")
    r = Route(tmp_path, my_source_dsn, target_dsn, {f"{db}.ev": "public.ev"})
    r.drain()  # the target table and the start position, before any row
    before = _checkpoint(target_dsn, r.pipeline)
    _insert_zero_date(my_source_dsn)
    r.drain()
    letter = ({"id": 2}, "insert", "source", "d", "open")
    assert _letters(target_dsn) == [letter]
    kept = [row for row in fetch(my_source_dsn, "ev") if row[0] != 2]
    assert fetch(target_dsn, "ev") == kept

    # The operator re-reads the same changes: the refused row is met again and audited again,
    # but `dlq list` / `dlq retry` still see one letter for it.
    _reset(r, before)
    r.drain()
    assert _letters(target_dsn) == [letter]
    refused = [a for a in _audited(target_dsn, r.pipeline) if a[2] == "dead_letter"]
    assert refused == [({"id": 2}, "insert", "dead_letter")] * 2
    assert fetch(target_dsn, "ev") == kept
    listed = r.cli("dlq", "list")
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == 1, listed.stdout

    # A discarded letter does not hold back the next re-read: the operator re-read on purpose,
    # so the change is open again (one letter), and the closed one stays as history.
    res = r.cli("dlq", "discard", "--all", "--yes")
    assert res.returncode == 0, res.stderr[-2000:]
    _reset(r, before)
    r.drain()
    assert _letters(target_dsn) == [(*letter[:-1], "discarded"), letter]
    refused = [a for a in _audited(target_dsn, r.pipeline) if a[2] == "dead_letter"]
    assert len(refused) == 3
    assert fetch(target_dsn, "ev") == kept


def _letter(key: int, position: str, op: str = "update", stage: str = "rule") -> DeadLetter:
    return DeadLetter(
        source_table="app.ev",
        target_table="public.ev",
        op=op,
        pk=f'{{"id":{key}}}',
        source_pk=f'{{"id":{key}}}',
        position=position,
        xid="0-1-9",
        commit_time=None,
        stage=stage,
        reason="not a valid phone number for region CN",
        rule="phone",
        column="phone",
    )


@pytest.mark.parametrize("engine_kind", ["postgres", "mariadb"])
def test_store_opens_one_letter_per_change(
    engine_kind: str, request: pytest.FixtureRequest
) -> None:
    if engine_kind == "postgres":
        url = request.getfixturevalue("target_dsn").replace(
            "postgresql://", "postgresql+psycopg://"
        )
    else:
        url = request.getfixturevalue("my_target_dsn").replace("mysql://", "mysql+pymysql://")
        url += "?charset=utf8mb4"
    engine = sa.create_engine(url)
    store = DeadLetterStore()
    at = "mysql:mariadb-bin.000002:4711"
    try:
        with engine.connect() as conn:
            upgrade(conn)
            conn.commit()
            # 1001 keys: two queries of bounded IN lists; the same change twice in one batch.
            first = [_letter(k, f"{at}|gtid=0-1-9") for k in range(1001)]
            assert store.write(conn, "p", [*first, first[7]]) == 1001
            # Met again, with or without the GTID state in the position: nothing new. Another
            # op, stage or position of the same key, or another pipeline, is another change.
            again = [_letter(k, at) for k in (0, 7, 1000)]
            others = [
                _letter(7, at, op="delete"),
                _letter(7, at, stage="target"),
                _letter(7, "mysql:mariadb-bin.000002:5000"),
            ]
            assert store.write(conn, "p", [*again, *others]) == 3
            assert store.write(conn, "q", again[:1]) == 1
            # A closed letter does not hold a re-read change back.
            (seven,) = [
                d["id"]
                for d in store.select(conn, pipeline="p", tables=["app.ev"], limit=0)
                if (d["pk"], d["op"], d["stage"]) == ('{"id":7}', "update", "rule")
                and d["source_position"] == f"{at}|gtid=0-1-9"
            ]
            assert store.resolve(conn, seven, DISCARDED, "dba@host")
            assert store.write(conn, "p", [_letter(7, at), _letter(8, at)]) == 1
            # Without a key two changes of one event cannot be told apart: never merged.
            keyless = replace(_letter(9, at), pk=None)
            assert store.write(conn, "p", [keyless, keyless]) == 2
            assert store.count(conn, pipeline="p") == 1001 + 3 + 1 - 1 + 2
            assert store.counts(conn, "p") == {OPEN: 1006, DISCARDED: 1}
            conn.commit()
    finally:
        engine.dispose()
