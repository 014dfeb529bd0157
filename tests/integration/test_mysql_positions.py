"""MySQL→PG by file:pos positions: kills, offsets show, and a binlog purged past the checkpoint."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cdc_sync.testing.myserver import MyServer
from tests.integration.harness import kill
from tests.integration.routes import Route, audit_counts, execute, fetch, my_connect

pytestmark = pytest.mark.integration


def _purge_to_newest(server: MyServer) -> None:
    """PURGE takes effect only after MariaDB's binlog checkpoint: retry until it has."""
    deadline = time.monotonic() + 20
    with server.connect() as c, c.cursor() as cur:
        cur.execute("FLUSH BINARY LOGS")
        while True:
            cur.execute("SHOW BINARY LOGS")
            files = [r[0] for r in cur.fetchall()]
            if len(files) == 1:
                return
            cur.execute(f"PURGE BINARY LOGS TO '{files[-1]}'")
            if time.monotonic() > deadline:
                raise AssertionError(f"binlogs not purged: {files}")
            time.sleep(0.2)


def test_file_positions_kills_offsets_and_purge(
    tmp_path: Path, my_private_server: MyServer, target_dsn: str
) -> None:
    dsn = my_private_server.create_database("fp")
    execute(dsn, "CREATE TABLE calls (id int PRIMARY KEY, outcome varchar(20))")
    r = Route(tmp_path, dsn, target_dsn, {"fp.calls": "public.calls"},
              source_extra=", server_id: 555, position_mode: file")  # fmt: skip
    r.drain()
    updates = 0
    for round_no in range(4):
        proc = r.start()
        with my_connect(dsn) as c, c.cursor() as cur:
            for i in range(40):
                cur.execute(f"INSERT INTO calls VALUES ({round_no * 100 + i}, 'r{round_no}')")
            updates += cur.execute(f"UPDATE calls SET outcome = 'u{round_no}' WHERE id % 3 = 0")
        time.sleep(0.2 * round_no)
        kill(proc)
    r.drain()
    assert fetch(r.target_dsn, "public.calls") == fetch(dsn, "calls")
    counts = audit_counts(r.target_dsn, r.pipeline)
    ops = {
        op: sum(n for (o, _t, _k), n in counts.items() if o == op) for op in ("insert", "update")
    }
    assert ops == {"insert": 160, "update": updates}
    assert all(n == 1 for (op, _t, _k), n in counts.items() if op == "insert")
    shown = r.cli("offsets", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    info = info[0] if isinstance(info, list) else info
    assert info["position"].startswith("mysql:") and "gtid=" not in info["position"]
    assert info["lag_bytes"] == 0
    # Unread changes, then their binlog purged: refuse, never jump ahead.
    execute(dsn, "INSERT INTO calls VALUES (999, 'lost?')")
    _purge_to_newest(my_private_server)
    res = r.cli("check")
    assert res.returncode != 0 and "snapshot" in res.stdout + res.stderr, res.stdout
    run = r.cli("run", "--until-caught-up")
    assert run.returncode == 1 and "snapshot" in run.stderr, run.stderr[-2000:]
