"""Target refusals end to end: value too long (PG 22001, MariaDB 1406) and on_error: stop."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import kill, wait_until
from tests.integration.routes import Route, execute, fetch, kind
from tests.integration.test_rules_routes import letters

pytestmark = pytest.mark.integration

CANARY = "zq7canary-toolong-4471"  # 22 characters: refused by a varchar(5) target column
SOURCE_DDL = "CREATE TABLE t (id bigint PRIMARY KEY, v varchar(50), n int)"
INSERT = "INSERT INTO t (id, v, n) VALUES (%s, %s, %s)"


def _target(tgt: str) -> str:
    """Where ``public.t`` goes: ``<db>.t`` on MariaDB, ``public.t`` on PostgreSQL."""
    return f"{tgt.rsplit('/', 1)[-1]}.t" if kind(tgt) == "mysql" else "public.t"


def _prepare(tmp: Path, src: str, tgt: str, on_error: str) -> Route:
    execute(src, SOURCE_DDL)
    pipeline = "tr_" + src.rsplit("/", 1)[-1]
    tables: dict[str, str | None] = {"public.t": _target(tgt)}
    r = Route(tmp, src, tgt, tables, pipeline=pipeline, on_error=on_error, level="DEBUG")
    r.drain()  # creates the target table (v varchar(50)) and the pipeline's start point
    return r


def _narrow(tgt: str) -> None:
    """The DBA narrows the target column while the daemon runs: at start the daemon widens a
    narrower target column to the source's type, so only a running daemon meets it."""
    if kind(tgt) == "mysql":
        execute(tgt, "ALTER TABLE t MODIFY v varchar(5) NULL")
    else:
        execute(tgt, "SET lock_timeout = '10s'", "ALTER TABLE t ALTER v TYPE varchar(5)")


def _running(r: Route, tgt: str) -> subprocess.Popen[bytes]:
    """The daemon streaming (a seed row 0 arrived), then the target column narrowed."""
    proc = r.start()
    execute(r.source_dsn, INSERT, params=(0, "seed", 0))
    wait_until(lambda: 0 in _rows(tgt, "t") or proc.poll() is not None)
    assert proc.poll() is None, r.log.read_text()[-2000:]
    _narrow(tgt)
    return proc


def _rows(dsn: str, table: str) -> dict[int, tuple[Any, ...]]:
    return {int(r[0]): tuple(r[1:]) for r in fetch(dsn, table, "id, v, n")}


@pytest.mark.parametrize("engine", ["pg", "mysql"])
def test_value_too_long_is_a_dead_letter_never_truncated(
    tmp_path: Path, engine: str, source_dsn: str, target_dsn: str, my_target_dsn: str
) -> None:
    tgt = target_dsn if engine == "pg" else my_target_dsn
    r = _prepare(tmp_path, source_dsn, tgt, "dead_letter")
    proc = _running(r, tgt)
    execute(
        source_dsn,
        "BEGIN",
        *(f"INSERT INTO t VALUES ({i}, '{v}', {i})" for i, v in [(1, "ab"), (3, "xyz")]),
        f"INSERT INTO t VALUES (2, '{CANARY}', 2)",
        "INSERT INTO t VALUES (4, 'abcde', 4)",  # exactly the target's length: applied
        "COMMIT",
    )
    execute(source_dsn, "UPDATE t SET n = 30 WHERE id = 3")
    wait_until(lambda: _rows(tgt, "t").get(3) == ("xyz", 30) or proc.poll() is not None)
    assert kill(proc, signal.SIGTERM) == 0, r.log.read_text()[-2000:]

    src_rows = _rows(source_dsn, "t")
    got = _rows(tgt, "t")
    assert got == {k: v for k, v in src_rows.items() if k != 2}  # the rest of the batch
    # Nothing silently truncated (MariaDB strict sql_mode): no prefix of the canary stored.
    assert all(not str(v).startswith(CANARY[:5]) for v, _ in got.values())
    (dl,) = letters(tgt)
    assert (dl["stage"], dl["op"], json.loads(dl["pk"])) == ("target", "insert", {"id": 2})
    assert dl["error_code"] == ("22001" if engine == "pg" else "1406")
    # PostgreSQL's 22001 error has no column field: the sink finds it from the type's length.
    assert dl["column_name"] == "v"
    assert dl["reason"] == "a value is longer than the target column allows"
    assert dl["status"] == "open" and dl["rule"] is None

    listed = r.cli("dlq", "list")
    shown = r.cli("dlq", "show", "--id", str(dl["id"]))
    assert listed.returncode == 0 and shown.returncode == 0, listed.stderr + shown.stderr
    assert f"target:{dl['error_code']}" in listed.stdout
    everywhere = {
        "log": r.log.read_text(),
        "dlq list": listed.stdout + listed.stderr,
        "dlq show": shown.stdout + shown.stderr,
        "dead letter": json.dumps(dl, default=str),
    }
    for where, text in everywhere.items():
        assert CANARY not in text and CANARY[:5] not in text, f"canary leaked into {where}"


@pytest.mark.parametrize("engine", ["pg", "mysql"])
def test_on_error_stop_on_a_target_refusal(
    tmp_path: Path, engine: str, source_dsn: str, target_dsn: str, my_target_dsn: str
) -> None:
    tgt = target_dsn if engine == "pg" else my_target_dsn
    r = _prepare(tmp_path, source_dsn, tgt, "stop")
    proc = _running(r, tgt)
    execute(source_dsn, INSERT, params=(1, "a", 1))
    execute(source_dsn, INSERT, params=(2, CANARY, 2))
    execute(source_dsn, INSERT, params=(3, "c", 3))
    execute(source_dsn, "UPDATE t SET n = 10 WHERE id = 1")
    assert proc.wait(timeout=30) != 0
    message = r.log.read_text()
    assert f"target table {_target(tgt)}" in message, message[-2000:]
    assert CANARY not in message and CANARY[:5] not in message
    got = _rows(tgt, "t")
    # Neither the refused row nor anything after it in the stream reached the target.
    assert set(got) <= {0, 1} and got.get(1, ("a", 1)) == ("a", 1), got
    assert letters(tgt) == []

    # With dead_letter the restart widens the target column back to the source's type (done at
    # every start), so the row is applied in full rather than dead-lettered.
    r.set_on_error("dead_letter")
    r.drain()
    assert _rows(tgt, "t") == _rows(source_dsn, "t")
    assert letters(tgt) == []
    assert "column 'v'" in message, message[-2000:]
    # The DBA sees the daemon undo the narrowing: one warning naming column and both types.
    lines = r.log.read_text().splitlines()
    (warned,) = [json.loads(x) for x in lines if x.startswith("{") and "column_widened" in x]
    assert warned["event"] == "target_column_widened" and warned["level"] == "warning"
    assert (warned["column"], warned["target_table"]) == ("v", _target(tgt))
    assert "5" in warned["from_type"] and "50" in warned["to_type"], warned
