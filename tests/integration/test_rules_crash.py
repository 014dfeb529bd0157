"""Kill -9 while rules refuse rows: target = rules(source), each change audited once, one letter."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from cdc_sync.config import load_config
from cdc_sync.errors import RowLevelError
from cdc_sync.records import ChangeRecord, Op, PgLsn, TableId
from cdc_sync.sources.postgres.source import PostgresSource
from cdc_sync.transforms import compile_table
from tests.integration.harness import kill
from tests.integration.routes import execute, fetch
from tests.integration.test_rules_routes import COLUMNS, INSERT, Rules, _prepare

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TABLE = TableId("public", "customers")


class Writer(threading.Thread):
    """Transactions of three inserts and one update. Every 7th row has an invalid phone (a
    rule refuses it), every 11th reuses row 1's e-mail (the target's unique index refuses it);
    only rows that were accepted are updated later, so each refusal happens exactly once."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn, self.stop = dsn, threading.Event()
        self.changes: Counter[tuple[str, int]] = Counter()
        self.rng = random.Random(7)

    def run(self) -> None:
        good: list[int] = []
        n = 0
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                with conn.transaction():
                    for _ in range(3):
                        n += 1
                        poison, dup = n % 7 == 0, n > 1 and n % 11 == 0
                        phone = "12345" if poison else f"138{n:08d}"
                        email = "first@example.com" if dup or n == 1 else f"u{n}@example.com"
                        row = (n, f"N{n}", phone, email, None, str(n % 4), f"{n}.5", "x")
                        conn.execute(INSERT, row)
                        self.changes[("insert", n)] += 1
                        if not (poison or dup):
                            good.append(n)
                    if good:
                        k = self.rng.choice(good)
                        conn.execute(
                            "UPDATE customers SET status = %s, amount = %s WHERE id = %s",
                            (str(self.rng.randrange(4)), f"{self.rng.randrange(999)}.25", k),
                        )
                        self.changes[("update", k)] += 1
                time.sleep(0.005)


def expected(
    r: Rules, source_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> dict[int, tuple[object, ...]]:
    """The source's rows through the same rules, minus the rows the target refuses."""
    monkeypatch.setenv("SRC_DSN", source_dsn)
    monkeypatch.setenv("TGT_DSN", r.target_dsn)
    tc = load_config(r.config).pipelines[r.pipeline].tables[str(TABLE)]
    src = PostgresSource(source_dsn, "unused", "unused", [TABLE], may_create=False)
    try:
        schema = src.table_schemas()[TABLE]
        ids = [(row[0],) for row in fetch(source_dsn, "customers", "id")]
        rows = src.fetch_rows(TABLE, schema, ids)
    finally:
        src.close()
    tt = compile_table(TABLE, tc, schema, "test")
    now = datetime.now(UTC)
    out: dict[int, tuple[object, ...]] = {}
    for row in rows:
        assert row is not None
        if row[0] != 1 and row[3] == "first@example.com":
            continue  # refused by the target's unique index
        rec = ChangeRecord(Op.INSERT, TABLE, schema, None, row, PgLsn(0), "0", now)
        try:
            applied = tt.apply(rec)
        except RowLevelError:
            continue
        assert applied is not None and applied.record.after is not None
        out[int(str(row[0]))] = applied.record.after[1:]
    return out


def test_sigkill_with_rules_and_dead_letters(
    tmp_path: Path, source_dsn: str, target_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _prepare(source_dsn, target_dsn)
    r = Rules(tmp_path, source_dsn, target_dsn)
    r.drain()
    execute(target_dsn, "CREATE UNIQUE INDEX contacts_email_key ON crm.contacts (email)")
    w = Writer(source_dsn)
    w.start()
    rng = random.Random(3)
    try:
        for _ in range(12):
            proc = r.start()
            time.sleep(rng.uniform(0.3, 2.0))
            kill(proc)
    finally:
        w.stop.set()
        w.join()
    r.drain()

    got = {row[0]: tuple(row[1:]) for row in fetch(target_dsn, "crm.contacts", COLUMNS)}
    assert got == expected(r, source_dsn, monkeypatch)
    audited = Counter(
        (op, int(pk.split(":")[1].rstrip("}")))
        for op, pk in fetch(target_dsn, "cdc_sync_audit", "op, pk", "id")
    )
    assert audited == w.changes  # every change exactly once, whatever its outcome
    letters = Counter(
        int(pk.split(":")[1].rstrip("}"))
        for (pk,) in fetch(target_dsn, "cdc_sync_dead_letters", "pk", "id")
    )
    refused = {n for (_, n) in w.changes if n % 7 == 0 or (n > 1 and n % 11 == 0)}
    assert set(letters) == refused and set(letters.values()) == {1}
    assert len(refused) > 20
