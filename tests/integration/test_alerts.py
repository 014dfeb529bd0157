"""Alerts from the daemon: the target goes away (failing), comes back (recovered), by webhook
and by command."""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cdc_sync.testing.pgserver import PgServer
from tests.integration.harness import Cli, kill, rows_as_text, sql, wait_until

pytestmark = pytest.mark.integration

CONFIG = """
sources:
  src: {{type: postgres, dsn: "${{SRC_DSN}}"}}
targets:
  tgt: {{type: postgres, dsn: "${{TGT_DSN}}"}}
pipelines:
  {pipeline}:
    source: src
    target: tgt
    batch: {{max_rows: 1000, max_seconds: 0.1}}
    retry: {{initial_seconds: 0.1, max_seconds: 0.5}}
    tables:
      public.t: {{}}
alerts:
{alerts}
    after_attempts: 3
    min_interval_seconds: 0
logging: {{level: INFO, format: json}}
"""

APPEND_SCRIPT = """import sys
with open(sys.argv[1], "ab") as f:
    f.write(sys.stdin.buffer.read() + b"\\n")
"""


class Hook:
    """A local webhook that keeps every JSON body it is sent."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers["Content-Length"])
                bodies.append(json.loads(self.rfile.read(n)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/T0KEN-abc"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kinds(self) -> list[str]:
        return [b["kind"] for b in self.bodies]


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.server.shutdown()
    h.server.server_close()


class Daemon(Cli):
    def __init__(
        self, tmp: Path, source_dsn: str, target_dsn: str, alerts: str, env: dict[str, str]
    ) -> None:
        pipeline = "p_" + source_dsn.rsplit("/", 1)[-1]
        text = CONFIG.format(pipeline=pipeline, alerts=alerts)
        self._configure(tmp, pipeline, text, source_dsn, target_dsn)
        self.env.update(env)


def _outage(d: Daemon, target: PgServer, alerts: Any) -> None:
    """Stream, stop the target, write while it is down, start it again; ``alerts()`` lists
    the kinds received so far."""
    sql(d.source_dsn, "CREATE TABLE t (id int PRIMARY KEY, note text)")
    sql(d.source_dsn, "INSERT INTO t SELECT g, 'before' FROM generate_series(1, 10) g")
    proc = d.start()
    try:
        wait_until(lambda: _count(d.target_dsn) == 10, timeout=60)
        target.stop()
        sql(d.source_dsn, "INSERT INTO t SELECT g, 'during' FROM generate_series(11, 20) g")
        wait_until(lambda: "failing" in alerts(), timeout=60)
        assert "recovered" not in alerts()
        target.start()
        wait_until(lambda: "recovered" in alerts(), timeout=60)
        wait_until(lambda: _count(d.target_dsn) == 20, timeout=30)
        assert rows_as_text(d.target_dsn, "t") == rows_as_text(d.source_dsn, "t")
    finally:
        assert kill(proc, signal.SIGTERM) == 0, d.log.read_text()[-3000:]


def _count(dsn: str) -> int:
    try:
        return len(rows_as_text(dsn, "t"))
    except psycopg.Error:  # not created yet, or the server is down
        return -1


def test_webhook_failing_then_recovered(
    tmp_path: Path, source_dsn: str, pg_private_server: PgServer, hook: Hook
) -> None:
    target_dsn = pg_private_server.create_database("alerts_tgt")
    alerts = '    webhook: "${ALERT_URL}"'  # the URL may hold a token: a secret, from the env
    d = Daemon(tmp_path, source_dsn, target_dsn, alerts, {"ALERT_URL": hook.url})
    _outage(d, pg_private_server, hook.kinds)

    failing = next(b for b in hook.bodies if b["kind"] == "failing")
    assert failing["pipeline"] == d.pipeline
    assert failing["attempt"] == 3
    assert failing["error_class"] == "TransientError"
    assert failing["since"] and failing["text"].startswith(f"cdc-sync: pipeline {d.pipeline}")
    recovered = next(b for b in hook.bodies if b["kind"] == "recovered")
    assert recovered["since"] == failing["since"] and recovered["attempt"] >= 3
    assert hook.kinds().index("failing") < hook.kinds().index("recovered")
    assert "T0KEN" not in d.log.read_text()  # the URL never reaches the logs


def test_command_sink(tmp_path: Path, source_dsn: str, pg_private_server: PgServer) -> None:
    target_dsn = pg_private_server.create_database("alerts_cmd_tgt")
    script, out = tmp_path / "append.py", tmp_path / "alerts.jsonl"
    script.write_text(APPEND_SCRIPT)
    alerts = f'    command: "{sys.executable} {script} {out}"'
    d = Daemon(tmp_path, source_dsn, target_dsn, alerts, {})

    def kinds() -> list[str]:
        if not out.exists():
            return []
        return [json.loads(line)["kind"] for line in out.read_text().splitlines() if line]

    _outage(d, pg_private_server, kinds)
    assert kinds()[0] == "failing"
