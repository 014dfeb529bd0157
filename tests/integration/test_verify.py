"""``cdc-sync verify`` end to end: differences found and repaired on every route, masking."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.harness import kill
from tests.integration.routes import Route, execute, fetch, kind
from tests.integration.test_rules_routes import INSERT, MY_DDL, PG_DDL, ROWS, Rules
from tests.integration.test_type_routes import PG_COLS, PG_ROWS, PG_TYPED

pytestmark = pytest.mark.integration

DDL = (
    "CREATE TABLE items (id int PRIMARY KEY, name varchar(50), amount numeric(10,2), "
    "active boolean, at timestamp(6) NULL, tags text)"
)


def run_verify(r: Any, *args: str) -> tuple[int, dict[str, Any]]:
    """``cdc-sync verify --json``; returns the exit code and the parsed report."""
    argv = ["verify", "--pipeline", r.pipeline, "--json", "--settle", "5", *args]
    res = r.cli(*argv, timeout=300)
    assert res.returncode in (0, 1), res.stderr[-3000:]
    return res.returncode, json.loads(res.stdout)


def counts(report: dict[str, Any]) -> tuple[int, int, int]:
    (t,) = report["tables"]
    return t["missing"], t["extra"], t["different"]


def _fill(dsn: str, table: str, n: int) -> None:
    rows = [
        (i, f"name {i}", f"{i}.25", i % 2 == 0, f"2024-01-0{1 + i % 9} 10:00:00.123456", "ü")
        for i in range(1, n + 1)
    ]
    stmt = f"INSERT INTO {table} (id, name, amount, active, at, tags) VALUES "
    execute(dsn, stmt + ", ".join(["(%s, %s, %s, %s, %s, %s)"] * n), params=sum(rows, ()))


def _damage(dsn: str, table: str) -> None:
    """One deleted, one extra and one changed target row."""
    execute(
        dsn,
        f"DELETE FROM {table} WHERE id = 3",
        f"INSERT INTO {table} (id, name) VALUES (100000, 'extra')",
        f"UPDATE {table} SET name = 'changed' WHERE id = 5",
    )


def _repair_audits(dsn: str, pipeline: str) -> int:
    q = f"SELECT count(*) FROM cdc_sync_audit WHERE pipeline = '{pipeline}' AND outcome = 'repair'"
    return int(fetch(dsn, f"({q}) AS q", "*")[0][0])


ROUTES = ["pg_pg", "my_pg", "pg_my"]


@pytest.fixture(params=ROUTES)
def route(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Route, str]:
    """A filled route: (route, target table name)."""
    pair = request.param
    src = request.getfixturevalue("my_source_dsn" if pair == "my_pg" else "source_dsn")
    tgt = request.getfixturevalue("my_target_dsn" if pair == "pg_my" else "target_dsn")
    sdb, tdb = src.rsplit("/", 1)[-1], tgt.rsplit("/", 1)[-1]
    stable = f"{sdb}.items" if kind(src) == "mysql" else "public.items"
    ttable = f"{tdb}.items" if kind(tgt) == "mysql" else "public.items"
    execute(src, DDL)
    r = Route(tmp_path, src, tgt, {stable: ttable}, pipeline=f"v_{pair}_{sdb}")
    r.drain()
    _fill(src, "items", 2_500)
    r.drain()
    return r, ttable


def test_verify_finds_and_repairs(route: tuple[Route, str]) -> None:
    r, ttable = route
    code, report = run_verify(r)
    assert code == 0 and report["status"] == "equal", report
    assert report["tables"][0]["rows_checked"] == 2_500
    _damage(r.target_dsn, ttable)
    code, report = run_verify(r)
    assert code == 1 and counts(report) == (1, 1, 1), report
    code, report = run_verify(r, "--repair")
    assert code == 1 and report["tables"][0]["repaired"] == 3, report
    code, report = run_verify(r)
    assert code == 0 and counts(report) == (0, 0, 0), report
    assert _repair_audits(r.target_dsn, r.pipeline) == 3


@pytest.mark.parametrize("target", ["pg", "my"])
def test_verify_types_equal(tmp_path: Path, source_dsn: str, target: str, request: Any) -> None:
    """Every canonical kind renders alike on both sides (PG numeric vs DECIMAL, JSON text,
    intervals, TIME, bytes, enums…): a faithful copy verifies equal."""
    tgt = request.getfixturevalue("my_target_dsn" if target == "my" else "target_dsn")
    ttable = f"{tgt.rsplit('/', 1)[-1]}.typed" if target == "my" else "public.typed"
    execute(source_dsn, *PG_TYPED)
    r = Route(tmp_path, source_dsn, tgt, {"public.typed": ttable},
              pipeline=f"vt_{target}_" + source_dsn.rsplit("/", 1)[-1])  # fmt: skip
    r.drain()
    marks = ", ".join(["%s"] * len(PG_COLS.split(", ")))
    for row in PG_ROWS:
        execute(source_dsn, f"INSERT INTO typed ({PG_COLS}) VALUES ({marks})", params=row)
    r.drain()
    code, report = run_verify(r)
    assert code == 0 and counts(report) == (0, 0, 0), report
    execute(tgt, f"UPDATE {ttable} SET j = '{{\"b\": 2}}' WHERE id = 1")
    code, report = run_verify(r)
    assert code == 1 and counts(report) == (0, 0, 1), report


@pytest.mark.parametrize("src_kind", ["pg", "my"])
def test_verify_with_masking_rules_equal(
    tmp_path: Path, src_kind: str, target_dsn: str, request: Any
) -> None:
    """Masked, hashed, mapped, cast, filtered and dead-lettered rows: mask(source) equals
    the target, so verify reports equal; a changed masked value is found and repaired."""
    src = request.getfixturevalue("my_source_dsn" if src_kind == "my" else "source_dsn")
    execute(src, MY_DDL if src_kind == "my" else PG_DDL)
    execute(target_dsn, "CREATE SCHEMA crm")
    r = Rules(tmp_path, src, target_dsn)
    r.drain()
    for row in ROWS:
        execute(src, INSERT, params=row)
    r.drain()
    code, report = run_verify(r)
    assert code == 0 and counts(report) == (0, 0, 0), report
    execute(target_dsn, "UPDATE crm.contacts SET contact_phone = '+86*******0000' WHERE id = 1")
    code, report = run_verify(r, "--repair")
    assert code == 1 and counts(report) == (0, 0, 1), report
    code, report = run_verify(r)
    assert code == 0, report


class _Writer(threading.Thread):
    """Updates, inserts and deletes on the source until stopped."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn, self.halt, self.rng = dsn, threading.Event(), random.Random(3)
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                next_id = 10_000
                while not self.halt.is_set():
                    i = self.rng.randint(1, 2_500)
                    conn.execute("UPDATE items SET name = %s WHERE id = %s", (str(next_id), i))
                    conn.execute("INSERT INTO items (id, name) VALUES (%s, 'new')", (next_id,))
                    conn.execute("DELETE FROM items WHERE id = %s", (next_id - 5,))
                    next_id += 1
                    self.halt.wait(0.002)
        except BaseException as e:
            self.errors.append(e)


@pytest.mark.parametrize("watermark", [False, True])
def test_verify_busy_source_no_false_alarm(
    tmp_path: Path, source_dsn: str, target_dsn: str, watermark: bool
) -> None:
    """Without a signal table the re-check waits for a quiet checkpoint; with one, verify
    writes a watermark and waits until the daemon's checkpoint has passed it."""
    execute(source_dsn, DDL)
    r = Route(tmp_path, source_dsn, target_dsn, {"public.items": None},
              pipeline="vb_" + source_dsn.rsplit("/", 1)[-1], max_seconds=0.05)  # fmt: skip
    if watermark:
        text = r.config.read_text()
        r.config.write_text(
            text.replace("    audit: row\n", "    audit: row\n    signal_table: public.sig\n")
        )
    r.drain()
    _fill(source_dsn, "items", 2_500)
    r.drain()
    daemon = r.start()
    writer = _Writer(source_dsn)
    writer.start()
    try:
        code, report = run_verify(r)
    finally:
        writer.halt.set()
        writer.join(10)
        kill(daemon)
    assert not writer.errors
    assert code == 0 and counts(report) == (0, 0, 0), report
    if watermark and report["tables"][0]["rechecked"]:
        with psycopg.connect(source_dsn) as conn:
            row = conn.execute("SELECT value FROM public.sig").fetchone()
        assert row is not None and str(row[0]).startswith("verify:")


def _verify_runs(dsn: str, pipeline: str) -> list[tuple[str, int]]:
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(
            "SELECT status, rows_checked FROM cdc_sync_verify_runs WHERE pipeline = %s "
            "ORDER BY started_at",
            (pipeline,),
        )
        return [(str(s), int(n)) for s, n in cur.fetchall()]


def test_scheduled_verify_in_the_daemon(tmp_path: Path, source_dsn: str, target_dsn: str) -> None:
    """``verify: {every: 2s}``: the daemon verifies on its own and records the run; SIGTERM
    still stops it cleanly."""
    execute(source_dsn, DDL)
    r = Route(tmp_path, source_dsn, target_dsn, {"public.items": None},
              pipeline="vs_" + source_dsn.rsplit("/", 1)[-1])  # fmt: skip
    text = r.config.read_text()
    assert "    audit: row\n" in text
    r.config.write_text(
        text.replace("    audit: row\n", "    audit: row\n    verify: {every: 2s}\n")
    )
    r.drain()  # creates the state tables, cdc_sync_verify_runs among them
    _fill(source_dsn, "items", 500)
    r.drain()
    assert _verify_runs(target_dsn, r.pipeline) == []
    daemon = r.start()
    runs: list[tuple[str, int]] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and daemon.poll() is None:
            runs = _verify_runs(target_dsn, r.pipeline)
            if runs:
                break
            time.sleep(0.5)
    finally:
        code = kill(daemon, signal.SIGTERM)
    assert runs and runs[0] == ("equal", 500), (runs, r.log.read_text()[-3000:])
    assert code == 0, r.log.read_text()[-3000:]


@pytest.mark.parametrize("target", ["pg", "mysql"])
def test_mysql_float_columns_verify_equal(
    target: str, my_source_dsn: str, target_dsn: str, my_target_dsn: str, tmp_path: Path
) -> None:
    """A FLOAT read back as its 6-digit text is another single-precision value: verify saw
    differences that --repair could never clear (a scheduled verify alerting for ever)."""
    db = my_source_dsn.rsplit("/", 1)[1]
    tgt = target_dsn if target == "pg" else my_target_dsn
    table = "public.f" if target == "pg" else f"{my_target_dsn.rsplit('/', 1)[1]}.f"
    execute(
        my_source_dsn,
        "CREATE TABLE f (id int PRIMARY KEY, v float)",
        "INSERT INTO f VALUES (0, 1.17549435e-38), (1, 123456.789), (2, 0.1), (3, -0.0), "
        "(4, 3.4e38), (5, NULL)",
    )
    r = Route(tmp_path, my_source_dsn, tgt, {f"{db}.f": table})
    r.drain()
    execute(my_source_dsn, "UPDATE f SET id = 10, v = 7654.321 WHERE id = 1")
    r.drain()
    code, report = run_verify(r)
    assert (code, counts(report)) == (0, (0, 0, 0)), report
