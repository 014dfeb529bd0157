"""Foreign keys whose cascades MySQL / MariaDB never write to the binlog: refused at check and
start with the fixes, accepted on request (verify --repair then removes the rows left behind),
and a cascading key declared while the daemon streams stops it before anything is missed; a
PostgreSQL source carries what its cascades change."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.routes import Route, execute, fetch

pytestmark = pytest.mark.integration


def _db(dsn: str) -> str:
    return dsn.rsplit("/", 1)[-1]


def _schema(src: str, calls_key: str = "") -> None:
    execute(
        src,
        "CREATE TABLE customers (id int PRIMARY KEY, name varchar(20))",
        f"CREATE TABLE calls (id int PRIMARY KEY, customer_id int, outcome varchar(20){calls_key})",
        "CREATE TABLE notes (id int PRIMARY KEY, customer_id int, body varchar(20), "
        "CONSTRAINT fk_notes FOREIGN KEY (customer_id) REFERENCES customers (id))",  # RESTRICT
    )


def _route(tmp: Path, src: str, tgt: str) -> Route:
    db = _db(src)
    tables = {f"{db}.{t}": f"public.{t}" for t in ("customers", "calls", "notes")}
    return Route(tmp, src, tgt, tables, max_seconds=0.05)


def test_cascade_refused_then_accepted_and_repaired(
    tmp_path: Path, my_source_dsn: str, target_dsn: str
) -> None:
    src, db = my_source_dsn, _db(my_source_dsn)
    _schema(src, ", CONSTRAINT fk_calls FOREIGN KEY (customer_id) REFERENCES customers (id) "
                 "ON DELETE CASCADE ON UPDATE SET NULL")  # fmt: skip
    execute(
        src,
        "INSERT INTO customers VALUES (1, 'ann'), (2, 'bob')",
        "INSERT INTO calls VALUES (10, 1, 'busy'), (11, 2, 'answered'), (12, 2, 'busy')",
        "INSERT INTO notes VALUES (20, 1, 'vip')",
    )
    r = _route(tmp_path, src, target_dsn)
    checked = r.cli("check")
    out = checked.stdout + checked.stderr
    assert checked.returncode != 0, out
    assert (
        f"table {db}.calls: foreign key fk_calls (customer_id) -> {db}.customers (id) is "
        "ON DELETE CASCADE ON UPDATE SET NULL" in out
    ), out
    assert f"`fk_cascades: accept` on the table entry of {db}.calls" in out
    assert "fk_notes" not in out  # RESTRICT: every change it allows is in the binlog
    res = r.cli("run", "--until-caught-up")
    assert res.returncode != 0
    assert "foreign key fk_calls" in res.stderr
    assert "Traceback" not in res.stderr
    # The fix the message names for a target that may keep such rows.
    text = r.config.read_text()
    old = f"{db}.calls: {{target: public.calls}}"
    assert old in text
    r.config.write_text(
        text.replace(old, f"{db}.calls: {{target: public.calls, fk_cascades: accept}}")
    )
    assert r.cli("check").returncode == 0
    r.drain()
    assert fetch(src, "calls") == fetch(target_dsn, "public.calls")
    before = fetch(target_dsn, "cdc_sync_checkpoints", "position")[0][0]
    execute(src, "DELETE FROM customers WHERE id = 2", "INSERT INTO calls VALUES (13, 1, 'late')")
    r.drain()
    # `replay` reads the same tables through its own capture: accepted there too.
    replayed = r.cli("replay", "-p", r.pipeline, "--from", str(before))
    assert replayed.returncode == 0, replayed.stderr
    # What accepting means: the cascade's deletes never reached the target.
    assert [row[0] for row in fetch(target_dsn, "public.calls")] == [10, 11, 12, 13]
    assert [row[0] for row in fetch(src, "calls")] == [10, 13]
    found = r.cli("verify", "-p", r.pipeline)
    assert found.returncode == 1, found.stdout + found.stderr
    repair = r.cli("verify", "-p", r.pipeline, "--repair")
    assert repair.returncode in (0, 1), repair.stdout + repair.stderr
    assert r.cli("verify", "-p", r.pipeline).returncode == 0
    for t in ("customers", "calls", "notes"):
        assert fetch(src, t) == fetch(target_dsn, f"public.{t}"), t


def test_cascading_key_declared_while_streaming_stops(
    tmp_path: Path, my_source_dsn: str, target_dsn: str
) -> None:
    src, db = my_source_dsn, _db(my_source_dsn)
    _schema(src)
    r = _route(tmp_path, src, target_dsn)
    assert r.cli("check").returncode == 0
    r.drain()
    proc = r.start()
    execute(
        src,
        "INSERT INTO customers VALUES (1, 'ann'), (2, 'bob')",
        "INSERT INTO calls VALUES (10, 1, 'busy'), (11, 2, 'answered')",
        # A key without actions: the stream goes on.
        "ALTER TABLE calls ADD CONSTRAINT fk_plain FOREIGN KEY (customer_id) "
        "REFERENCES customers (id)",
        "INSERT INTO calls VALUES (12, 2, 'busy')",
    )
    deadline = time.monotonic() + 30
    while len(fetch(target_dsn, "public.calls")) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None
    execute(
        src,
        "ALTER TABLE calls DROP FOREIGN KEY fk_plain",
        "ALTER TABLE calls ADD CONSTRAINT fk_calls FOREIGN KEY (customer_id) "
        "REFERENCES customers (id) ON DELETE CASCADE",
        "INSERT INTO calls VALUES (13, 1, 'late')",
    )
    assert proc.wait(60) != 0
    log = r.log.read_text()
    assert f"a foreign key was declared on {db}.calls at the source" in log
    assert "foreign key fk_calls (customer_id)" in log
    # Stopped at the ALTER: nothing after it was applied.
    assert [row[0] for row in fetch(target_dsn, "public.calls")] == [10, 11, 12]
    # The first fix: the key loses its action; the stream then resumes past the ALTER.
    execute(
        src,
        "ALTER TABLE calls DROP FOREIGN KEY fk_calls",
        "ALTER TABLE calls ADD CONSTRAINT fk_calls FOREIGN KEY (customer_id) "
        "REFERENCES customers (id) ON DELETE RESTRICT",
    )
    r.drain()
    assert fetch(src, "calls") == fetch(target_dsn, "public.calls")


def test_postgres_source_carries_what_a_cascade_changes(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    """The contrast the README states: logical decoding holds the rows an action changed."""
    execute(
        source_dsn,
        "CREATE TABLE customers (id int PRIMARY KEY, name text)",
        "CREATE TABLE calls (id int PRIMARY KEY, customer_id int REFERENCES customers (id) "
        "ON DELETE CASCADE ON UPDATE CASCADE, outcome text)",
        "CREATE TABLE notes (id int PRIMARY KEY, customer_id int REFERENCES customers (id) "
        "ON DELETE SET NULL, body text)",
    )
    tables = {f"public.{t}": f"public.{t}" for t in ("customers", "calls", "notes")}
    r = Route(tmp_path, source_dsn, target_dsn, tables, max_seconds=0.05)
    assert r.cli("check").returncode == 0
    r.drain()
    execute(
        source_dsn,
        "INSERT INTO customers VALUES (1, 'ann'), (2, 'bob')",
        "INSERT INTO calls VALUES (10, 1, 'busy'), (11, 2, 'answered')",
        "INSERT INTO notes VALUES (20, 2, 'vip')",
    )
    r.drain()
    execute(
        source_dsn, "UPDATE customers SET id = 3 WHERE id = 1", "DELETE FROM customers WHERE id = 2"
    )
    r.drain()
    for t in ("customers", "calls", "notes"):
        assert fetch(source_dsn, t) == fetch(target_dsn, f"public.{t}"), t
    assert fetch(target_dsn, "public.calls") == [(10, 3, "busy")]
