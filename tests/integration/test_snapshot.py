"""Initial snapshot and re-snapshot end to end: rows before the pipeline, writes during the
copy, a kill mid-copy, and re-snapshots racing updates of the same keys."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.harness import Cli, kill, sql, table_lines, wait_until
from tests.integration.routes import execute, fetch, kind, my_connect, norm, server_id_extra

pytestmark = pytest.mark.integration

CONFIG = """
sources:
  src: {{type: {stype}, dsn: "${{SRC_DSN}}"{sextra}}}
targets:
  tgt: {{type: {ttype}, dsn: "${{TGT_DSN}}"}}
pipelines:
  {pipeline}:
    source: src
    target: tgt
    audit: row
    snapshot: {mode}
    snapshot_chunk_rows: {chunk}
{extra}    batch: {{max_rows: 2000, max_seconds: 0.1, flush_rows: 500}}
    retry: {{initial_seconds: 0.1, max_seconds: 1}}
    tables:
{tables}
logging: {{level: INFO, format: json}}
"""

PG_DDL = (
    "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, phone text, "
    "balance numeric(12,2) NOT NULL DEFAULT 0, seen timestamptz)",
    "ALTER TABLE customers REPLICA IDENTITY FULL",
)
MY_DDL = (
    "CREATE TABLE customers (id int PRIMARY KEY, name varchar(100) NOT NULL, "
    "phone varchar(40), balance decimal(12,2) NOT NULL DEFAULT 0, seen datetime(6))",
)


class Snap(Cli):
    """A pipeline with the snapshot settings under test (signal table optional)."""

    def __init__(
        self, tmp: Path, source_dsn: str, target_dsn: str, *, mode: str = "initial",
        chunk: int = 500, signal: str | None = None, pipeline: str | None = None,
    ) -> None:  # fmt: skip
        pipeline = pipeline or "s_" + source_dsn.rsplit("/", 1)[-1]
        stype = kind(source_dsn)
        extra = f"    signal_table: {signal}\n" if signal else ""
        ttype = kind(target_dsn)
        target = target_dsn.rsplit("/", 1)[-1] + ".customers" if ttype == "mysql" else None
        text = CONFIG.format(
            stype=stype,
            ttype=ttype,
            sextra=server_id_extra(source_dsn) if stype == "mysql" else "",
            pipeline=pipeline,
            mode=mode,
            chunk=chunk,
            extra=extra,
            tables=table_lines({self.table(source_dsn): target or "public.customers"}),
        )
        self._configure(tmp, pipeline, text, source_dsn, target_dsn)

    @staticmethod
    def table(source_dsn: str) -> str:
        if kind(source_dsn) == "mysql":
            return source_dsn.rsplit("/", 1)[-1] + ".customers"
        return "public.customers"


def _seed(dsn: str, n: int) -> None:
    if kind(dsn) == "mysql":
        execute(
            dsn,
            "INSERT INTO customers (id, name, phone, balance, seen) "
            "SELECT seq, CONCAT('name ', seq), CONCAT('+4930', seq), seq / 100, "
            f"'2026-01-01 00:00:00' + INTERVAL seq SECOND FROM seq_1_to_{n}",
        )
        return
    sql(
        dsn,
        "INSERT INTO customers SELECT g, 'name ' || g, '+4930' || g, g / 100.0, "
        "timestamptz '2026-01-01 00:00:00Z' + g * interval '1 second' "
        f"FROM generate_series(1, {n}) g",
    )


class Writer(threading.Thread):
    """Updates, inserts and deletes on random keys until stopped (the source keeps moving)."""

    def __init__(
        self, dsn: str, keys: int, seed: int = 3, pause: float = 0.001, increments: bool = False
    ) -> None:
        super().__init__(daemon=True)
        self.dsn, self.keys, self.rng, self.pause = dsn, keys, random.Random(seed), pause
        self.increments = increments  # only raise balances: a value going down is stale
        self.halt = threading.Event()
        self.done = 0
        self.errors: list[BaseException] = []

    def _statements(self) -> list[tuple[str, tuple[Any, ...]]]:
        k = self.rng.randint(1, self.keys)
        roll = 0.0 if self.increments else self.rng.random()
        if roll < 0.7:
            return [("UPDATE customers SET balance = balance + 1, name = %s WHERE id = %s",
                     (f"upd {self.done}", k))]  # fmt: skip
        if roll < 0.85:
            return [("DELETE FROM customers WHERE id = %s", (k,))]
        new = self.keys + 1 + self.done
        return [("INSERT INTO customers (id, name, phone, balance) VALUES (%s, %s, %s, 1)",
                 (new, f"new {new}", f"+4940{new}"))]  # fmt: skip

    def run(self) -> None:
        try:
            if kind(self.dsn) == "mysql":
                with my_connect(self.dsn) as c, c.cursor() as cur:
                    while not self.halt.is_set():
                        for stmt, args in self._statements():
                            cur.execute(stmt, args)
                        self.done += 1
                        self.halt.wait(self.pause)
                return
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not self.halt.is_set():
                    for stmt, args in self._statements():
                        conn.execute(stmt, args)  # type: ignore[arg-type]
                    self.done += 1
                    self.halt.wait(self.pause)
        except BaseException as e:  # surfaced through .errors
            self.errors.append(e)

    def stop(self) -> None:
        self.halt.set()
        self.join(30)
        assert not self.errors, self.errors


def _source_rows(dsn: str) -> list[tuple[Any, ...]]:
    cols = "id, name, phone, balance"
    return [tuple(norm(v) for v in r) for r in fetch(dsn, "customers", cols, "id")]


def _target_rows(dsn: str) -> list[tuple[Any, ...]]:
    return [
        tuple(norm(v) for v in r) for r in fetch(dsn, "customers", "id, name, phone, balance", "id")
    ]


def _snapshot_audits(dsn: str, pipeline: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM cdc_sync_audit WHERE pipeline = %s AND op = 'snapshot'",
            (pipeline,),
        ).fetchone()
        return int(row[0]) if row else 0


def _tasks(dsn: str, pipeline: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(
            "SELECT id, kind, status, rows_done, last_key FROM cdc_sync_snapshots "
            "WHERE pipeline = %s ORDER BY id",
            (pipeline,),
        )
        return [dict(zip(("id", "kind", "status", "rows_done", "last_key"), r, strict=True))
                for r in cur.fetchall()]  # fmt: skip


@pytest.mark.parametrize("engine", ["postgres", "mysql"])
def test_initial_snapshot_with_concurrent_writes(
    tmp_path: Path, engine: str, request: pytest.FixtureRequest, target_dsn: str
) -> None:
    source_dsn = request.getfixturevalue("source_dsn" if engine == "postgres" else "my_source_dsn")
    if engine == "postgres":
        sql(source_dsn, *PG_DDL)
    else:
        execute(source_dsn, *MY_DDL)
    _seed(source_dsn, 20_000)  # before any slot or position exists
    s = Snap(tmp_path, source_dsn, target_dsn, chunk=700)
    writer = Writer(source_dsn, 20_000)
    writer.start()
    try:
        s.drain()  # snapshot while the writer runs, then stream what it wrote meanwhile
    finally:
        writer.stop()
    assert writer.done > 20
    s.drain()
    assert _target_rows(target_dsn) == _source_rows(source_dsn)
    tasks = _tasks(target_dsn, s.pipeline)
    assert [t["status"] for t in tasks] == ["done"]
    # every copied row is audited once as a snapshot row
    assert _snapshot_audits(target_dsn, s.pipeline) == tasks[0]["rows_done"] >= 19_000
    # a second start copies nothing again (snapshot: initial)
    s.drain()
    assert _snapshot_audits(target_dsn, s.pipeline) == tasks[0]["rows_done"]


def test_initial_snapshot_into_mariadb(tmp_path: Path, source_dsn: str, my_target_dsn: str) -> None:
    """A MySQL target gets the copy by multi-row INSERTs; a re-run copies nothing again."""
    sql(source_dsn, *PG_DDL)
    _seed(source_dsn, 12_000)
    s = Snap(tmp_path, source_dsn, my_target_dsn, chunk=5000)
    s.drain()
    sql(source_dsn, "UPDATE customers SET name = 'streamed' WHERE id = 11999")
    s.drain()
    assert _target_rows(my_target_dsn) == _source_rows(source_dsn)
    with my_connect(my_target_dsn) as c, c.cursor() as cur:
        cur.execute(
            "SELECT status, rows_done FROM cdc_sync_snapshots WHERE pipeline = %s", (s.pipeline,)
        )
        assert cur.fetchall() == (("done", 12_000),)


def test_snapshot_never_streams_only(tmp_path: Path, source_dsn: str, target_dsn: str) -> None:
    sql(source_dsn, *PG_DDL)
    _seed(source_dsn, 100)
    s = Snap(tmp_path, source_dsn, target_dsn, mode="never")
    s.drain()
    sql(source_dsn, "INSERT INTO customers (id, name) VALUES (1000, 'after')")
    s.drain()
    assert [r[0] for r in _target_rows(target_dsn)] == [1000]


@pytest.mark.parametrize("engine", ["postgres", "mysql"])
def test_kill_mid_snapshot_resumes_at_last_chunk(
    tmp_path: Path, engine: str, request: pytest.FixtureRequest, target_dsn: str
) -> None:
    source_dsn = request.getfixturevalue("source_dsn" if engine == "postgres" else "my_source_dsn")
    if engine == "postgres":
        sql(source_dsn, *PG_DDL)
    else:
        execute(source_dsn, *MY_DDL)
    _seed(source_dsn, 150_000)
    s = Snap(tmp_path, source_dsn, target_dsn, chunk=1000)
    writer = Writer(source_dsn, 150_000, pause=0.002)
    writer.start()
    proc = s.start()
    try:

        def copied_some() -> bool:
            try:
                tasks = _tasks(target_dsn, s.pipeline)
            except psycopg.Error:
                return False  # state tables not created yet
            return bool(tasks) and tasks[0]["rows_done"] >= 20_000

        wait_until(copied_some, timeout=120, every=0.05)
        kill(proc)
        before = _tasks(target_dsn, s.pipeline)[0]
        assert before["status"] == "running" and before["rows_done"] < 150_000
        s.drain()
    finally:
        if proc.poll() is None:
            kill(proc)
        writer.stop()
    s.drain()
    assert _target_rows(target_dsn) == _source_rows(source_dsn)
    after = _tasks(target_dsn, s.pipeline)
    assert [t["status"] for t in after] == ["done"]
    log = s.log.read_text()
    assert "snapshot_resuming" in log
    if engine == "postgres":  # no rules, an empty target: chunks go as COPY text, resumed too
        paths = {json.loads(x)["path"] for x in log.splitlines() if "snapshot_progress" in x}
        assert paths == {"copy_text"}
    # resumed after the last committed chunk: no row was copied twice
    assert _snapshot_audits(target_dsn, s.pipeline) == after[0]["rows_done"]
    resumed_from = json.loads(before["last_key"])[0]
    assert resumed_from >= 20_000


def test_cli_snapshot_then_run(tmp_path: Path, source_dsn: str, target_dsn: str) -> None:
    sql(source_dsn, *PG_DDL)
    _seed(source_dsn, 3000)
    s = Snap(tmp_path, source_dsn, target_dsn, chunk=1000)
    res = s.cli("snapshot")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "snapshot_done" in res.stdout
    assert "3,000" in res.stderr  # the progress line
    assert len(_target_rows(target_dsn)) == 3000
    sql(source_dsn, "UPDATE customers SET name = 'changed' WHERE id = 7")
    s.drain()
    assert _target_rows(target_dsn) == _source_rows(source_dsn)
    again = s.cli("snapshot")
    assert again.returncode == 0 and "nothing to copy" in again.stdout


def test_resnapshot_refused_without_signal_table(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    sql(source_dsn, *PG_DDL)
    s = Snap(tmp_path, source_dsn, target_dsn)
    res = s.cli("snapshot", "--table", "public.customers")
    assert res.returncode == 1
    assert "signal_table" in res.stderr and "CREATE TABLE" in res.stderr


@pytest.mark.parametrize("engine", ["postgres", "mysql"])
def test_resnapshot_while_streaming_never_overwrites_newer(
    tmp_path: Path, engine: str, request: pytest.FixtureRequest, target_dsn: str
) -> None:
    source_dsn = request.getfixturevalue("source_dsn" if engine == "postgres" else "my_source_dsn")
    if engine == "postgres":
        sql(source_dsn, *PG_DDL)
        signal = "public.cdc_sync_signal"
    else:
        execute(source_dsn, *MY_DDL)
        signal = source_dsn.rsplit("/", 1)[-1] + ".cdc_sync_signal"
    _seed(source_dsn, 5000)
    s = Snap(tmp_path, source_dsn, target_dsn, chunk=300, signal=signal)
    s.drain()
    # Drift the target: rows lost and rows changed behind the daemon's back.
    sql(target_dsn, "DELETE FROM customers WHERE id % 10 = 0",
        "UPDATE customers SET name = 'drifted' WHERE id % 10 = 5")  # fmt: skip
    # A stale copied row would lower a balance the stream had already raised: catch it.
    sql(
        target_dsn,
        "CREATE TABLE regressions (id int, old numeric, new numeric)",
        "CREATE FUNCTION catch_regression() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.balance < OLD.balance THEN "
        "INSERT INTO regressions VALUES (OLD.id, OLD.balance, NEW.balance); END IF; "
        "RETURN NEW; END $$",
        "CREATE TRIGGER catch_regression BEFORE UPDATE ON customers "
        "FOR EACH ROW EXECUTE FUNCTION catch_regression()",
    )
    # Increments hammer every key of the table during the whole re-snapshot (paced so that
    # the daemon keeps up: unpaced, MariaDB took 16k transactions/s and the stream lagged).
    writer = Writer(source_dsn, 5000, pause=0.0003, increments=True)
    proc = s.start()
    writer.start()
    try:
        try:
            res = s.cli("snapshot", "--table", Snap.table(source_dsn), "--wait", timeout=240)
            assert res.returncode == 0, res.stderr[-3000:]
        finally:
            writer.stop()
        assert writer.done > 100
        done = [t for t in _tasks(target_dsn, s.pipeline) if t["kind"] == "resnapshot"]
        assert [t["status"] for t in done] == ["done"]
        # Let the daemon apply the writer's last changes, then compare everything.
        head_rows = _source_rows(source_dsn)
        wait_until(lambda: _target_rows(target_dsn) == head_rows, timeout=60, every=0.2)
        assert kill(proc, 15) == 0
    finally:
        if proc.poll() is None:  # a failed assertion must not leave the daemon running
            kill(proc)
    assert "resnapshot_finished" in s.log.read_text()
    with psycopg.connect(target_dsn) as conn:
        stale = conn.execute("SELECT count(*) FROM regressions").fetchone()
    assert stale is not None and stale[0] == 0, f"{stale[0]} copied rows overwrote newer ones"


def test_snapshot_always_copies_again_at_start(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    """``always``: every start copies the tables again (a drifted target is restored), then
    streams from the checkpoint."""
    sql(source_dsn, *PG_DDL)
    _seed(source_dsn, 2000)
    s = Snap(tmp_path, source_dsn, target_dsn, mode="always", chunk=700)
    s.drain()
    assert _snapshot_audits(target_dsn, s.pipeline) == 2000
    sql(target_dsn, "DELETE FROM customers WHERE id <= 100")
    sql(source_dsn, "UPDATE customers SET name = 'streamed' WHERE id = 1500")
    s.drain()
    assert _target_rows(target_dsn) == _source_rows(source_dsn)
    assert _snapshot_audits(target_dsn, s.pipeline) == 4000
    assert [t["status"] for t in _tasks(target_dsn, s.pipeline)] == ["done", "done"]


def test_resnapshot_of_a_slice(tmp_path: Path, source_dsn: str, target_dsn: str) -> None:
    """``--where`` re-copies only the matching rows; the daemon goes on streaming."""
    sql(source_dsn, *PG_DDL)
    _seed(source_dsn, 1000)
    s = Snap(tmp_path, source_dsn, target_dsn, chunk=100, signal="public.cdc_sync_signal")
    s.drain()
    sql(target_dsn, "DELETE FROM customers WHERE id % 2 = 0")  # drift on both halves
    proc = s.start()
    try:
        res = s.cli("snapshot", "--table", "public.customers", "--where", "id <= 300", "--wait")
        assert res.returncode == 0, res.stderr[-3000:]
        sql(source_dsn, "UPDATE customers SET name = 'after' WHERE id = 999")
        wait_until(lambda: (999, "after") in [(r[0], r[1]) for r in _target_rows(target_dsn)])
    finally:
        assert kill(proc, 15) == 0
    ids = {r[0] for r in _target_rows(target_dsn)}
    assert set(range(1, 301)) <= ids  # the slice is whole again
    assert not {i for i in range(302, 999, 2)} & ids  # the rest was left alone
    (task,) = [t for t in _tasks(target_dsn, s.pipeline) if t["kind"] == "resnapshot"]
    assert task["status"] == "done" and task["rows_done"] == 300
    status = s.cli("snapshot", "--status")
    assert "resnapshot public.customers where id <= 300: done" in status.stdout
