"""The fault suite's workload and checkers: bank transfers, unique inserts, per-key appends
and canary PII rows on the source; content compare, audit exactly-once, atomicity poller and
the canary scan on the way out."""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from tests.integration.harness import audit_rows, rows_as_text, sql

ACCOUNTS, BALANCE, NOTES = 100, 1000, 20
CANARY_PASSWORD = "Canary-Pw-5f3e9a"
CANARY_PHONE = "+44791{:07d}"  # every customer's phone is a unique canary; the target masks it

SOURCE_DDL = (
    "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL)",
    "CREATE TABLE events (id bigint PRIMARY KEY, payload text NOT NULL)",
    "CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)",
    "CREATE TABLE customers (id int PRIMARY KEY, phone text, balance bigint NOT NULL)",
)
# A target-only CHECK: the poison rows (negative balance) are refused there, not on the source.
TARGET_DDL = (
    "CREATE TABLE customers (id int PRIMARY KEY, phone text, "
    "balance bigint NOT NULL CHECK (balance >= 0))",
)
TABLES = """      public.accounts: {}
      public.events: {}
      public.notes: {}
      public.customers:
        columns:
          phone: {transforms: [{mask: {keep_last: 4}}]}"""

Change = tuple[str, str, str, int]  # (xid, op, source table, key)


def with_password(dsn: str) -> str:
    """The DSN with the canary password (trust auth ignores it; nothing may print it)."""
    return dsn.replace("postgresql://postgres@", f"postgresql://postgres:{CANARY_PASSWORD}@")


def mask(phone: str) -> str:
    return "*" * (len(phone) - 4) + phone[-4:]


@dataclass
class Writer:
    """Transactions of: a transfer between two accounts (the total never changes), one new
    event (unique ids), an append to a note (per-key order), every third one a customer
    whose phone is a canary, every tenth of those with a negative balance (poison for the
    target's CHECK), inside the same multi-row transaction. ``changes`` holds what was
    committed; ``poison`` the refused customers' ids."""

    dsn: str
    seed: int = 1
    changes: Counter[Change] = field(default_factory=Counter)
    poison: set[int] = field(default_factory=set)
    transactions: int = 0
    _n: int = 0
    _customers: int = 0

    def setup(self) -> None:
        """The accounts and notes, in one transaction each (all or nothing on the target)."""
        with psycopg.connect(self.dsn) as conn:
            for table, rows in (
                ("accounts", [(i, BALANCE) for i in range(1, ACCOUNTS + 1)]),
                ("notes", [(i, f"{i}:") for i in range(1, NOTES + 1)]),
            ):
                with conn.transaction():
                    xid = _xid(conn)
                    with conn.cursor().copy(f"COPY {table} FROM STDIN") as cp:
                        for r in rows:
                            cp.write_row(r)
                    for r in rows:
                        self.changes[(xid, "insert", f"public.{table}", int(str(r[0])))] += 1

    def write(self, transactions: int, pause: float = 0.0) -> None:
        rng = random.Random(self.seed + self.transactions)
        with psycopg.connect(self.dsn) as conn:
            for _ in range(transactions):
                self._one(conn, rng)
                if pause:
                    time.sleep(pause)

    def _one(self, conn: psycopg.Connection[tuple[object, ...]], rng: random.Random) -> None:
        self._n += 1
        n = self._n
        got: list[tuple[str, str, int]] = []
        with conn.transaction():
            xid = _xid(conn)
            a, b = rng.sample(range(1, ACCOUNTS + 1), 2)
            amount = rng.randint(1, 50)
            conn.execute("UPDATE accounts SET balance = balance - %s WHERE id = %s", (amount, a))
            conn.execute("UPDATE accounts SET balance = balance + %s WHERE id = %s", (amount, b))
            got += [("update", "public.accounts", a), ("update", "public.accounts", b)]
            conn.execute("INSERT INTO events VALUES (%s, %s)", (n, f"event {n}"))
            got.append(("insert", "public.events", n))
            k = rng.randint(1, NOTES)
            conn.execute("UPDATE notes SET body = body || %s WHERE id = %s", (f"{n},", k))
            got.append(("update", "public.notes", k))
            if n % 3 == 0:
                self._customers += 1
                c = self._customers
                poison = c % 10 == 0
                balance = -1 if poison else c
                phone = CANARY_PHONE.format(c)
                conn.execute("INSERT INTO customers VALUES (%s, %s, %s)", (c, phone, balance))
                if poison:
                    self.poison.add(c)
                else:
                    got.append(("insert", "public.customers", c))
        self.transactions += 1
        for op, table, key in got:
            self.changes[(xid, op, table, key)] += 1

    def canaries(self) -> list[str]:
        return [CANARY_PASSWORD] + [CANARY_PHONE.format(c) for c in range(1, self._customers + 1)]


def _xid(conn: psycopg.Connection[tuple[object, ...]]) -> str:
    row = conn.execute("SELECT txid_current()").fetchone()
    assert row is not None
    return str(row[0])


class Poller(threading.Thread):
    """Looks at the target while the daemon applies: the accounts appear all at once (100
    or none) and their total never moves, as every transfer is applied atomically."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn, self.halt = dsn, threading.Event()
        self.looks = 0
        self.violations: list[tuple[int, int]] = []

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.halt.is_set():
                try:
                    row = conn.execute("SELECT count(*), sum(balance) FROM accounts").fetchone()
                except psycopg.errors.UndefinedTable:
                    time.sleep(0.01)
                    continue
                assert row is not None
                count, total = int(row[0]), int(row[1] or 0)
                self.looks += 1
                if count not in (0, ACCOUNTS) or (count and total != ACCOUNTS * BALANCE):
                    self.violations.append((count, total))
                time.sleep(0.005)

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)


@dataclass(frozen=True)
class Compared:
    rows: int
    lost: int
    duplicated: int  # audited more than once, or rows the source does not have
    problems: list[str]


def compare(source: str, target: str, pipeline: str, w: Writer) -> Compared:
    """Target = rules(source) table by table, the audit holds every change exactly once, and
    every poison row is one dead letter (and nowhere in the target)."""
    problems: list[str] = []
    rows = lost = extra = 0
    for table in ("accounts", "events", "notes"):
        want, got = rows_as_text(source, table), rows_as_text(target, table)
        rows += len(want)
        lost += len(set(want) - set(got))
        extra += len(got) - len(set(got)) + len(set(got) - set(want))
        if want != got:
            problems.append(f"{table}: target differs from source")
    want_c = [
        f"({i},{mask(str(p))},{b})"
        for i, p, b in _select(source, "SELECT id, phone, balance FROM customers ORDER BY id")
        if i not in w.poison
    ]
    got_c = [
        f"({i},{p},{b})"
        for i, p, b in _select(target, "SELECT id, phone, balance FROM customers ORDER BY id")
    ]
    rows += len(want_c)
    lost += len(set(want_c) - set(got_c))
    extra += len(set(got_c) - set(want_c))
    if want_c != got_c:
        problems.append("customers: target differs from mask(source) minus poison rows")
    audited: Counter[Change] = Counter()
    for r in audit_rows(target, pipeline):
        if r["outcome"] == "applied" and r["op"] != "transaction":
            (key,) = r["pk"].values()
            audited[(r["source_tx"], r["op"], r["source_table"], int(key))] += 1
    dupes = sum(n - w.changes[k] for k, n in audited.items() if n > w.changes[k] > 0)
    missing = sum((w.changes - audited).values())
    strange = sum(n for k, n in audited.items() if k not in w.changes)
    if dupes or missing or strange:
        problems.append(f"audit: {missing} missing, {dupes} twice, {strange} never made")
    lost, extra = lost + missing, extra + dupes + strange
    letters = Counter(
        int(str(_json(pk)["id"]))
        for (pk,) in _select(
            target, "SELECT pk FROM cdc_sync_dead_letters WHERE pipeline = %s", (pipeline,)
        )
    )
    if letters != Counter(w.poison):
        problems.append(f"dead letters: {dict(letters)} for poison rows {sorted(w.poison)}")
        lost += len(set(w.poison) - set(letters))
        extra += sum(n - 1 for n in letters.values() if n > 1)
    return Compared(rows, lost, extra, problems)


def _json(v: object) -> dict[str, object]:
    out = json.loads(v) if isinstance(v, str) else v
    assert isinstance(out, dict)
    return out


def _select(dsn: str, query: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return [tuple(r) for r in conn.execute(query, args).fetchall()]


def state_texts(target: str) -> Iterable[tuple[str, str]]:
    """Every row of the daemon's own tables in the target, as text."""
    for table in ("cdc_sync_audit", "cdc_sync_dead_letters", "cdc_sync_checkpoints"):
        for (text,) in _select(target, f"SELECT t::text FROM {table} t"):
            yield table, str(text)


def metrics_text(url: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return str(r.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def leaks(canaries: list[str], places: Iterable[tuple[str, str]]) -> list[str]:
    """``place: canary`` for every canary found verbatim in any of the texts."""
    found = []
    for place, text in places:
        found += [f"{place}: {c[:6]}…" for c in canaries if c in text]
    return found


def files(*paths: Path) -> list[tuple[str, str]]:
    return [(p.name, p.read_text(errors="replace")) for p in paths if p.exists()]


def reset(source: str, target: str) -> None:
    sql(source, *SOURCE_DDL)
    sql(target, *TARGET_DDL)
