"""Source workloads: the backlog (insert/update/delete), one huge transaction, a paced writer.

Every statement touches exactly one row per key, and the counts are checked against the
server's rowcounts, so ``Backlog.changes`` is the exact number of row changes the audit must hold.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from decimal import Decimal

import psycopg

from bench.env import TABLE

Conn = psycopg.Connection[tuple[object, ...]]

_FIRST = ["Ada", "Alan", "Grace", "Katherine", "Edsger", "Barbara", "Zoë", "José", "Łukasz", "美咲"]
_LAST = ["Lovelace", "Turing", "Hopper", "Johnson", "Dijkstra", "Liskov", "O'Brien", "Müller"]
_STATUS = (0, 1, 2, 3)

INSERT_UNNEST = (
    f"INSERT INTO {TABLE} (id, name, phone, email, status, do_not_call, balance) "
    "SELECT * FROM unnest(%s::bigint[], %s::text[], %s::varchar[], %s::text[], "
    "%s::smallint[], %s::boolean[], %s::numeric[])"
)
UPDATE_ONE = (
    f"UPDATE {TABLE} SET status = %s, balance = balance + %s, phone = %s, "
    "updated_at = clock_timestamp() WHERE id = %s"
)
DELETE_ONE = f"DELETE FROM {TABLE} WHERE id = %s"


@dataclass(frozen=True)
class BacklogSpec:
    inserts: int = 100_000
    updates: int = 20_000
    deletes: int = 5_000
    tx_rows: int = 100

    def scaled(self, scale: float) -> BacklogSpec:
        def s(n: int) -> int:
            return max(1, round(n * scale))

        return BacklogSpec(
            s(self.inserts), s(self.updates), min(s(self.deletes), s(self.inserts)), self.tx_rows
        )

    @property
    def changes(self) -> int:
        return self.inserts + self.updates + self.deletes


@dataclass
class Backlog:
    inserts: int = 0
    updates: int = 0
    deletes: int = 0
    transactions: int = 0
    seconds: float = 0.0

    @property
    def changes(self) -> int:
        return self.inserts + self.updates + self.deletes


def _row(rng: random.Random, i: int) -> tuple[object, ...]:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    phone = None if rng.random() < 0.1 else f"+44 20 7946 {rng.randrange(10_000):04d}"
    email = None if rng.random() < 0.1 else f"{first.lower()}.{i}@example.com"
    balance = Decimal(rng.randrange(-100_000, 10_000_000)) / 100
    return (i, f"{first} {last}", phone, email, rng.choice(_STATUS), rng.random() < 0.05, balance)


def _chunks(items: list[int], n: int) -> list[list[int]]:
    return [items[k : k + n] for k in range(0, len(items), n)]


def write_backlog(conn: Conn, spec: BacklogSpec, seed: int = 2) -> Backlog:
    """Inserts in transactions of ``tx_rows`` (one multi-row INSERT each), then single-row
    UPDATEs and DELETEs, ``tx_rows`` statements per transaction (executemany, pipelined)."""
    rng = random.Random(seed)
    out = Backlog()
    t0 = time.monotonic()
    ids = list(range(1, spec.inserts + 1))
    for chunk in _chunks(ids, spec.tx_rows):
        cols = list(zip(*(_row(rng, i) for i in chunk), strict=True))
        with conn.transaction():
            cur = conn.execute(INSERT_UNNEST, [list(c) for c in cols])
            out.inserts += cur.rowcount
        out.transactions += 1
    upd = [rng.choice(ids) for _ in range(spec.updates)]
    for chunk in _chunks(upd, spec.tx_rows):
        params = [
            (
                rng.choice(_STATUS),
                Decimal(rng.randrange(-5000, 5000)) / 100,
                f"+1 202 555 {rng.randrange(10_000):04d}",
                i,
            )
            for i in chunk
        ]
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(UPDATE_ONE, params)
            out.updates += cur.rowcount
        out.transactions += 1
    dels = rng.sample(ids, spec.deletes)
    for chunk in _chunks(dels, spec.tx_rows):
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(DELETE_ONE, [(i,) for i in chunk])
            out.deletes += cur.rowcount
        out.transactions += 1
    out.seconds = time.monotonic() - t0
    if (out.inserts, out.updates, out.deletes) != (spec.inserts, spec.updates, spec.deletes):
        raise RuntimeError(f"workload wrote {out} instead of {spec}")
    return out


def write_big_transaction(conn: Conn, rows: int, first_id: int = 1) -> float:
    """One source transaction of ``rows`` inserts (server-side generated); returns seconds."""
    t0 = time.monotonic()
    with conn.transaction():
        cur = conn.execute(
            f"INSERT INTO {TABLE} (id, name, phone, email, status, do_not_call, balance) "
            "SELECT g, 'Customer ' || g, '+44 20 ' || lpad((g %% 10000000)::text, 8, '0'), "
            "'c' || g || '@example.com', (g %% 4)::smallint, g %% 20 = 0, "
            "((g * 7919) %% 10000000) / 100.0 "
            "FROM generate_series(%s::bigint, %s::bigint) g",
            (first_id, first_id + rows - 1),
        )
        if cur.rowcount != rows:
            raise RuntimeError(f"big transaction inserted {cur.rowcount} rows, not {rows}")
    return time.monotonic() - t0


class PacedWriter(threading.Thread):
    """Commits ``tx_rows`` inserts every ``tx_rows / rate`` seconds for ``duration`` seconds.

    Each row's ``updated_at`` is ``clock_timestamp()`` at the source; ``commits`` keeps
    (last id of the transaction, wall-clock time the COMMIT returned).
    """

    def __init__(
        self,
        dsn: str,
        rate: float = 2000.0,
        tx_rows: int = 10,
        duration: float = 20.0,
        first_id: int = 1,
    ) -> None:
        super().__init__(daemon=True, name="paced-writer")
        self.dsn, self.rate, self.tx_rows = dsn, rate, tx_rows
        self.duration, self.first_id = duration, first_id
        self.commits: list[tuple[int, float]] = []
        self.errors: list[BaseException] = []
        self.seconds = 0.0

    def run(self) -> None:
        try:
            self._write()
        except BaseException as e:  # reported by the caller
            self.errors.append(e)

    def _write(self) -> None:
        interval = self.tx_rows / self.rate
        sql = (
            f"INSERT INTO {TABLE} (id, name, phone, email, status, balance) "
            "SELECT g, 'Live ' || g, '+1 202 555 0100', 'live' || g || '@example.com', 1, g "
            "FROM generate_series(%s::bigint, %s::bigint) g"
        )
        next_id = self.first_id
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            t0 = time.monotonic()
            k = 0
            while time.monotonic() - t0 < self.duration:
                due = t0 + k * interval
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                last = next_id + self.tx_rows - 1
                with conn.transaction():
                    conn.execute(sql, (next_id, last))
                self.commits.append((last, time.time()))
                next_id, k = last + 1, k + 1
            self.seconds = time.monotonic() - t0

    @property
    def rows(self) -> int:
        return len(self.commits) * self.tx_rows

    @property
    def last_id(self) -> int:
        return self.commits[-1][0] if self.commits else self.first_id - 1
