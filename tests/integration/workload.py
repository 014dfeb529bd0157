"""A continuous source workload that records every row change it commits (xid, op, key)."""

from __future__ import annotations

import random
import threading
from collections import Counter

import psycopg

DDL = (
    "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, note text)",
    "CREATE TABLE events (id bigserial PRIMARY KEY, account int, kind text, at timestamptz)",
)


class Workload(threading.Thread):
    """Random inserts/updates/deletes in small transactions until stopped.

    ``changes`` counts (xid, op, table, key) for committed transactions only, which is what
    the audit must hold exactly once each.
    """

    def __init__(self, dsn: str, seed: int = 7, pause: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.dsn, self.rng, self.pause = dsn, random.Random(seed), pause
        self.halt = threading.Event()
        self.changes: Counter[tuple[str, str, str, int]] = Counter()
        self.transactions = 0
        self.errors: list[BaseException] = []
        self.next_id = 1

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn) as conn:
                while not self.halt.is_set():
                    self._one(conn)
                    if self.pause:
                        self.halt.wait(self.pause)
        except BaseException as e:  # surfaced by the test through .errors
            self.errors.append(e)

    def _one(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        got: list[tuple[str, str, int]] = []
        with conn.transaction():
            xid = str(conn.execute("SELECT txid_current()").fetchone()[0])  # type: ignore[index]
            for _ in range(self.rng.randint(1, 6)):
                roll = self.rng.random()
                if roll < 0.5 or self.next_id < 20:
                    n = self.rng.randint(1, 8)
                    ids = list(range(self.next_id, self.next_id + n))
                    self.next_id += n
                    cur = conn.execute(
                        "INSERT INTO accounts SELECT g, 100, md5(g::text) "
                        "FROM unnest(%s::int[]) g RETURNING id",
                        (ids,),
                    )
                    got += [("insert", "public.accounts", r[0]) for r in cur.fetchall()]
                    cur = conn.execute(
                        "INSERT INTO events (account, kind, at) "
                        "SELECT g, 'open', clock_timestamp() FROM unnest(%s::int[]) g "
                        "RETURNING id",
                        (ids[:1],),
                    )
                    got += [("insert", "public.events", r[0]) for r in cur.fetchall()]
                elif roll < 0.85:
                    a, b = self.rng.randrange(1, self.next_id), self.rng.randrange(1, self.next_id)
                    amount = self.rng.randint(1, 50)
                    for acc, delta in ((a, -amount), (b, amount)):
                        cur = conn.execute(
                            "UPDATE accounts SET balance = balance + %s, note = md5(random()::text)"
                            " WHERE id = %s RETURNING id",
                            (delta, acc),
                        )
                        got += [("update", "public.accounts", r[0]) for r in cur.fetchall()]
                elif roll < 0.95:
                    acc = self.rng.randrange(1, self.next_id)
                    cur = conn.execute("DELETE FROM accounts WHERE id = %s RETURNING id", (acc,))
                    got += [("delete", "public.accounts", r[0]) for r in cur.fetchall()]
                else:
                    cur = conn.execute(
                        "UPDATE accounts SET id = id + 1000000 WHERE id = %s AND id < 1000000 "
                        "RETURNING id",
                        (self.rng.randrange(1, self.next_id),),
                    )
                    got += [("update", "public.accounts", r[0]) for r in cur.fetchall()]
        self.transactions += 1
        for op, table, key in got:
            self.changes[(xid, op, table, key)] += 1

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=30)
        assert not self.errors, self.errors


def audit_changes(rows: list[dict[str, object]]) -> Counter[tuple[str, str, str, int]]:
    out: Counter[tuple[str, str, str, int]] = Counter()
    for r in rows:
        if r["outcome"] != "applied":
            continue
        pk = r["pk"]
        assert isinstance(pk, dict)
        (key,) = pk.values()
        out[(str(r["source_tx"]), str(r["op"]), str(r["source_table"]), int(key))] += 1
    return out
