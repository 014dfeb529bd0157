"""MySQL/MariaDB routes end to end: SIGKILL loop and source crash (MySQL→PG), all routes."""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
import pymysql
import pytest

from tests.integration.harness import kill
from tests.integration.routes import Route, audit_counts, execute, fetch, my_connect, norm

pytestmark = [pytest.mark.integration]

MY_DDL = (
    "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, note text)",
    "CREATE TABLE events (id bigint AUTO_INCREMENT PRIMARY KEY, account int, kind varchar(20), "
    "at timestamp(6) NULL DEFAULT NULL)",
)


def _db(dsn: str) -> str:
    return dsn.rsplit("/", 1)[-1]


class MyWorkload(threading.Thread):
    """Random inserts / updates / deletes / key changes in small MariaDB transactions.

    ``changes`` counts (op, table, key) of committed transactions: what the audit must hold
    exactly once each (every UPDATE here changes its row, so each one is a row event).
    """

    def __init__(
        self,
        dsn: str,
        seed: int = 7,
        pause: float = 0.0,
        savepoints: float = 0.0,
        xa: float = 0.0,
    ) -> None:
        """``savepoints``: the share of steps wrapped in a savepoint (half rolled back);
        ``xa``: the share of transactions written as XA (half rolled back after PREPARE)."""
        super().__init__(daemon=True)
        self.dsn, self.rng, self.pause = dsn, random.Random(seed), pause
        self.savepoints, self.xa = savepoints, xa
        self.db = _db(dsn)
        self.halt = threading.Event()
        self.changes: Counter[tuple[str, str, str]] = Counter()
        self.transactions = 0
        self.errors: list[BaseException] = []
        self.next_id = 1

    def _key(self, k: int) -> str:
        return json.dumps({"id": k}, sort_keys=True)

    def run(self) -> None:
        try:
            with my_connect(self.dsn) as conn:
                conn.autocommit(False)
                while not self.halt.is_set():
                    self._one(conn)
                    if self.pause:
                        self.halt.wait(self.pause)
        except BaseException as e:  # surfaced by the test through .errors
            self.errors.append(e)

    def _one(self, conn: pymysql.connections.Connection) -> None:
        if self.rng.random() < self.xa:
            self._xa(conn)
            return
        got: list[tuple[str, str, str]] = []
        with conn.cursor() as cur:
            for _ in range(self.rng.randint(1, 6)):
                if self.rng.random() >= self.savepoints:
                    got += self._op(cur)
                    continue
                # As ORMs nest transactions (Django atomic(), Rails requires_new): a
                # savepoint around one step, kept or rolled back. Rolled-back rows are not
                # in the binlog; the rest of the transaction must still arrive.
                cur.execute("SAVEPOINT step")
                part = self._op(cur)
                if self.rng.random() < 0.5:
                    cur.execute("ROLLBACK TO SAVEPOINT step")
                else:
                    cur.execute("RELEASE SAVEPOINT step")
                    got += part
        conn.commit()
        self.transactions += 1
        self.changes.update(got)

    def _xa(self, conn: pymysql.connections.Connection) -> None:
        """One XA transaction, prepared then committed or rolled back: only committed rows
        may reach the target, once (the PREPARE group is held until its COMMIT group)."""
        xid = f"'w{self.transactions}-{self.rng.randrange(10**9)}'"
        with conn.cursor() as cur:
            cur.execute(f"XA START {xid}")
            got = self._op(cur)
            cur.execute(f"XA END {xid}")
            cur.execute(f"XA PREPARE {xid}")
            if self.halt.wait(self.rng.uniform(0, 0.05)) or self.rng.random() < 0.5:
                cur.execute(f"XA ROLLBACK {xid}")
            else:
                cur.execute(f"XA COMMIT {xid}")
                self.changes.update(got)
        self.transactions += 1

    def _op(self, cur: pymysql.cursors.Cursor) -> list[tuple[str, str, str]]:
        got: list[tuple[str, str, str]] = []
        acc, ev = f"{self.db}.accounts", f"{self.db}.events"
        roll = self.rng.random()
        if roll < 0.5 or self.next_id < 20:
            n = self.rng.randint(1, 8)
            ids = list(range(self.next_id, self.next_id + n))
            self.next_id += n
            cur.executemany(
                "INSERT INTO accounts VALUES (%s, 100, md5(rand()))", [(i,) for i in ids]
            )
            got += [("insert", acc, self._key(i)) for i in ids]
            cur.execute(
                "INSERT INTO events (account, kind, at) VALUES (%s, 'open', current_timestamp(6))",
                (ids[0],),
            )
            got.append(("insert", ev, self._key(int(cur.lastrowid))))
        elif roll < 0.85:
            a, b = self.rng.randrange(1, self.next_id), self.rng.randrange(1, self.next_id)
            amount = self.rng.randint(1, 50)
            for k, delta in ((a, -amount), (b, amount)):
                n = cur.execute(
                    "UPDATE accounts SET balance = balance + %s, note = md5(rand()) WHERE id = %s",
                    (delta, k),
                )
                got += [("update", acc, self._key(k))] * n
        elif roll < 0.95:
            k = self.rng.randrange(1, self.next_id)
            n = cur.execute("DELETE FROM accounts WHERE id = %s", (k,))
            got += [("delete", acc, self._key(k))] * n
        else:
            k = self.rng.randrange(1, self.next_id)
            n = cur.execute(
                "UPDATE accounts SET id = id + 1000000 WHERE id = %s AND id < 1000000",
                (k,),
            )
            got += [("update", acc, self._key(k + 1_000_000))] * n
        return got

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=30)
        assert not self.errors, self.errors


def _assert_exact(r: Route, changes: Counter[tuple[str, str, str]]) -> None:
    for table in ("accounts", "events"):
        src = [tuple(norm(v) for v in row) for row in fetch(r.source_dsn, table)]
        tgt = [tuple(norm(v) for v in row) for row in fetch(r.target_dsn, f"public.{table}")]
        assert len(tgt) == len(src), table
        assert tgt == src, table
    audited = audit_counts(r.target_dsn, r.pipeline)
    dupes = {k: n for k, n in audited.items() if n > changes.get(k, 0) > 0}
    assert not dupes, f"{len(dupes)} changes audited more than once"
    assert not (changes - audited), f"{len(changes - audited)} changes missing from the audit"
    assert not (audited - changes), f"{len(audited - changes)} audited changes never made"


def _audited(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM cdc_sync_audit").fetchone()
    assert row is not None
    return int(row[0])


def _tables(dsn: str) -> dict[str, str | None]:
    db = _db(dsn)
    return {f"{db}.accounts": "public.accounts", f"{db}.events": "public.events"}


@pytest.mark.slow
def test_mysql_to_pg_sigkill_loop(tmp_path: Path, my_source_dsn: str, target_dsn: str) -> None:
    execute(my_source_dsn, *MY_DDL)
    r = Route(
        tmp_path, my_source_dsn, target_dsn, _tables(my_source_dsn),
        max_rows=50, max_seconds=0.05, flush_rows=7,
    )  # fmt: skip
    r.drain()
    # Paced, as the PG kill loop: unpaced, a fast machine built a backlog that the 50-row
    # batches could not drain within the CLI's 120 s; the kills are the test, not the backlog.
    work = MyWorkload(my_source_dsn, seed=11, pause=0.003, savepoints=0.2, xa=0.1)
    work.start()
    rng = random.Random(5)
    kills = 0
    applied = [_audited(target_dsn)]
    try:
        # #3 asks for >= 20 kills; runs of 0.5-2.2 s keep the loop within the CI budget
        # (~35 s) while kills land in start-up, streaming and commits.
        while kills < 20:
            proc = r.start()
            time.sleep(rng.uniform(0.5, 2.2))
            kill(proc)
            kills += 1
            applied.append(_audited(target_dsn))
    finally:
        work.stop()
    assert work.transactions > 100
    # Most runs applied something before their kill (see test_crash_safety).
    advanced = sum(b > a for a, b in itertools.pairwise(applied))
    assert advanced >= 8, f"only {advanced} of 20 runs applied anything before their kill"
    r.drain()
    _assert_exact(r, work.changes)
