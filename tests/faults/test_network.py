"""Network faults between the daemon and its PostgreSQL servers (issue #8).

A. A link that goes silent without an RST (a local proxy black-holes the traffic of every
   connection, new ones included, while its kernel keeps acknowledging: TCP keepalives
   cannot tell): the daemon notices within the configured timeout, retries, reconnects once
   the proxy drops the dead connections and forwards again, and nothing is lost or doubled.
B. The target server stopped for a while, then started again: retries, the "failing" and
   "recovered" alerts, catch-up, exactly-once.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cdc_sync.testing.pgserver import PgServer
from tests.conftest import Report
from tests.faults.proxy import TcpProxy
from tests.integration.harness import Cli, audit_rows, kill, rows_as_text, sql, wait_until
from tests.integration.workload import DDL, Workload, audit_changes

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
    batch: {{max_rows: 500, max_seconds: 0.1}}
    retry: {{initial_seconds: 0.1, max_seconds: 1}}
    tables:
      public.accounts: {{}}
      public.events: {{target: public.events_copy}}
alerts:
  command: "{python} {script} {out}"
  after_attempts: 3
  min_interval_seconds: 0
logging: {{level: INFO, format: json}}
"""

APPEND_SCRIPT = """import sys
with open(sys.argv[1], "ab") as f:
    f.write(sys.stdin.buffer.read() + b"\\n")
"""

PAIRS = (("accounts", "accounts"), ("events", "events_copy"))
RETRY = "transient_error_retrying"
GAVE_UP = "connection_given_up"  # a watched connection heard nothing and gave up
# libpq's tcp_user_timeout in the proxied DSN: the daemon's dead-peer time for that side
# (cdc_sync.sources.postgres.liveness); the proxied source's wal_sender_timeout bounds the
# replication stream's silence the same way.
TIMEOUT_S = 5
SLACK_S = 5.0  # scheduling, the probe connection, the first backoff


class StillHangs(AssertionError):
    """The daemon noticed the cut, then hung in its retry instead of trying again."""


SIDES = ["source", "target"]


class Daemon(Cli):
    """The pipeline src → tgt through the CLI; alerts go to ``alerts.jsonl`` by command."""

    def __init__(self, tmp: Path, pipeline: str, source_dsn: str, target_dsn: str) -> None:
        script, self.alerts_file = tmp / "append_alert.py", tmp / "alerts.jsonl"
        script.write_text(APPEND_SCRIPT)
        text = CONFIG.format(
            pipeline=pipeline, python=sys.executable, script=script, out=self.alerts_file
        )
        self._configure(tmp, pipeline, text, source_dsn, target_dsn)

    def events(
        self, name: str | None = None, after: datetime | None = None
    ) -> list[dict[str, Any]]:
        """The daemon's JSON log lines (``name``: only that event; ``after``: only later)."""
        out: list[dict[str, Any]] = []
        if not self.log.exists():
            return out
        for line in self.log.read_text().splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if name is not None and ev.get("event") != name:
                continue
            if after is not None and _at(ev) < after:
                continue
            out.append(ev)
        return out

    def alert_kinds(self) -> list[str]:
        if not self.alerts_file.exists():
            return []
        lines = self.alerts_file.read_text().splitlines()
        return [json.loads(line)["kind"] for line in lines if line]


def _at(ev: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(ev["timestamp"])


def _now() -> datetime:
    return datetime.now(UTC)


def _first(d: Daemon, name: str, after: datetime, timeout: float) -> dict[str, Any]:
    """The first ``name`` event logged after ``after``, waiting up to ``timeout`` for it."""
    found: list[dict[str, Any]] = []

    def seen() -> bool:
        found[:] = d.events(name, after)
        return bool(found)

    try:
        wait_until(seen, timeout=timeout, every=0.05)
    except AssertionError:
        tail = "\n".join(json.dumps(e) for e in d.events()[-15:])
        raise AssertionError(f"no {name} within {timeout:g} s; log tail:\n{tail}") from None
    return found[0]


@dataclass
class Exactness:
    rows: int  # changes the workload committed: each must be audited exactly once
    same_content: bool
    lost: int
    duplicated: int
    extra: int


def _exactness(source_dsn: str, target_dsn: str, pipeline: str, work: Workload) -> Exactness:
    same = all(rows_as_text(target_dsn, t) == rows_as_text(source_dsn, s) for s, t in PAIRS)
    audited = audit_changes(audit_rows(target_dsn, pipeline))
    # a row updated twice in one transaction is two changes: compare with the workload's count
    dupes = {k: n for k, n in audited.items() if n > work.changes.get(k, 0) > 0}
    return Exactness(
        rows=sum(work.changes.values()),
        same_content=same,
        lost=len(work.changes - audited),
        duplicated=len(dupes),
        extra=len(audited - work.changes),
    )


def _caught_up(source_dsn: str, target_dsn: str) -> bool:
    try:
        return all(rows_as_text(target_dsn, t) == rows_as_text(source_dsn, s) for s, t in PAIRS)
    except psycopg.Error:  # a table not created yet
        return False


def _assert_exact(x: Exactness) -> None:
    assert x.same_content, "source and target contents differ"
    assert not x.duplicated, f"{x.duplicated} changes audited more than once"
    assert not x.lost, f"{x.lost} changes missing from the audit"
    assert not x.extra, f"{x.extra} audited changes the workload never made"


@contextlib.contextmanager
def _until_checked(report: Report, proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """A failure before the final check still gets its summary line, and never leaves the
    daemon running."""
    try:
        yield
    except BaseException as e:
        first_line = (str(e).splitlines() or [""])[0][:200]
        report(rows=0, message=f"not completed: {type(e).__name__}: {first_line}")
        if proc.poll() is None:
            kill(proc)
        raise


@pytest.fixture
def proxies() -> Iterator[Callable[[PgServer], TcpProxy]]:
    made: list[TcpProxy] = []

    def make(server: PgServer) -> TcpProxy:
        made.append(TcpProxy("127.0.0.1", server.port))
        return made[-1]

    yield make
    for p in made:
        p.close()


# -- A: a link that goes silent --------------------------------------------------------------


def _blackhole(
    side: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    private: PgServer,
    proxies: Callable[[PgServer], TcpProxy],
    report: Report,
    timeout: int | None,
) -> None:
    """Black-hole the ``side`` link while a workload runs; ``timeout``: the dead-peer time
    the proxied DSN (and the proxied source's wal_sender_timeout) set, None: the defaults."""
    proxy = proxies(private)
    suffix = f"?tcp_user_timeout={timeout * 1000}" if timeout else ""
    if side == "source":
        source_dsn = private.create_database("net_src")
        target_dsn = request.getfixturevalue("target_dsn")
        if timeout:
            sql(private.dsn(), f"ALTER SYSTEM SET wal_sender_timeout = '{timeout}s'")
            sql(private.dsn(), "SELECT pg_reload_conf()")
        daemon_src, daemon_tgt = proxy.dsn(source_dsn) + suffix, target_dsn
        # Stream silence: the server's wal_sender_timeout; catalog queries: tcp_user_timeout.
        bound = (timeout or 60) + SLACK_S
    else:
        source_dsn = request.getfixturevalue("source_dsn")
        target_dsn = private.create_database("net_tgt")
        daemon_src, daemon_tgt = source_dsn, proxy.dsn(target_dsn) + suffix
        bound = (timeout or 30) + SLACK_S
    sql(source_dsn, *DDL)
    pipeline = "p_net_" + source_dsn.rsplit("/", 1)[-1]
    d = Daemon(tmp_path, pipeline, daemon_src, daemon_tgt)
    d.drain()
    proc = d.start()
    work = Workload(source_dsn, seed=17, pause=0.005)
    work.start()
    with _until_checked(report, proc):
        try:
            _first(d, "batch_applied", _now(), timeout=30)
            time.sleep(1.0)
            cut = _now()
            proxy.blackhole()
            seen = _first(d, RETRY, cut, timeout=bound * 3)
            retried = (_at(seen) - cut).total_seconds()
            # The first sign: a watched connection giving up, or the retry itself.
            first = min([*d.events(GAVE_UP, cut), seen], key=_at)
            detected = (_at(first) - cut).total_seconds()
            # Black-holed for a few more dead-peer times: the daemon must keep trying.
            time.sleep(3 * timeout if timeout else 30)
            assert proc.poll() is None, "the daemon exited during the black hole"
            retries_while_cut = len(d.events(RETRY, cut))
            healed = _now()
            proxy.recover()
            restarted = _first(d, "pipeline_started", healed, timeout=60)
            applied = _first(d, "batch_applied", healed, timeout=60)
            recovered = (_at(applied) - healed).total_seconds()
            time.sleep(1.0)
        finally:
            work.stop()
        # The running daemon catches up by itself: no restart, no drain.
        wait_until(lambda: _caught_up(source_dsn, target_dsn), timeout=60, every=0.5)
        assert kill(proc, signal.SIGTERM) == 0, d.log.read_text()[-3000:]
        x = _exactness(source_dsn, target_dsn, pipeline, work)
    alerts = d.alert_kinds()
    sign = f"{first['event']} after {detected:.1f} s, " if first is not seen else ""
    message = (
        f"{sign}{RETRY} after {retried:.1f} s: {seen['error']} | {retries_while_cut} "
        f"retries while cut | first batch {recovered:.1f} s after recovery | "
        f"alerts: {alerts or 'none'}"
    )
    report(rows=x.rows, lost=x.lost, duplicated=x.duplicated, leaked=0, message=message)
    print(f"\n{request.node.name}: {message}")
    assert detected <= bound, f"silent {side} noticed only after {detected:.1f} s"
    # Cleaning up after the failure waits for the lease thread's own bounded attempt.
    assert retried <= 2 * bound, f"first retry only {retried:.1f} s after the cut"
    assert _at(restarted) <= _at(applied)
    assert work.transactions > 100
    _assert_exact(x)
    if retries_while_cut < 2:
        raise StillHangs(f"{retries_while_cut} attempt(s) during the black hole, then none")


@pytest.mark.parametrize("side", SIDES)
def test_blackhole(
    side: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    pg_private_server: PgServer,
    proxies: Callable[[PgServer], TcpProxy],
    report: Report,
) -> None:
    """Detected within the configured timeout (here 5 s), then reconnect — never hang."""
    _blackhole(side, tmp_path, request, pg_private_server, proxies, report, TIMEOUT_S)


@pytest.mark.faults_full
@pytest.mark.parametrize("side", SIDES)
def test_blackhole_default_timeouts(
    side: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    pg_private_server: PgServer,
    proxies: Callable[[PgServer], TcpProxy],
    report: Report,
) -> None:
    """The same with nothing configured: the stock wal_sender_timeout (60 s) for the stream,
    the built-in 30 s dead-peer time for every other connection."""
    _blackhole(side, tmp_path, request, pg_private_server, proxies, report, None)


# -- B: the target server goes away ---------------------------------------------------------


@pytest.mark.parametrize(
    "down",
    [pytest.param(5.0, id="5s"), pytest.param(60.0, id="60s", marks=pytest.mark.faults_full)],
)
def test_target_down(
    down: float,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    source_dsn: str,
    pg_private_server: PgServer,
    report: Report,
) -> None:
    """Target stopped (fast) for ``down`` seconds, then back: retries, alert, catch-up."""
    target_dsn = pg_private_server.create_database("down_tgt")
    sql(source_dsn, *DDL)
    pipeline = "p_down_" + source_dsn.rsplit("/", 1)[-1]
    d = Daemon(tmp_path, pipeline, source_dsn, target_dsn)
    d.drain()
    proc = d.start()
    work = Workload(source_dsn, seed=23, pause=0.005)
    work.start()
    with _until_checked(report, proc):
        try:
            _first(d, "batch_applied", _now(), timeout=30)
            time.sleep(1.0)
            stopped = _now()
            pg_private_server.stop("fast")
            time.sleep(down)
            assert proc.poll() is None, "the daemon exited while the target was down"
            retries = d.events(RETRY, stopped)
            failing_seen = "failing" in d.alert_kinds()
            back = _now()
            pg_private_server.start()
            applied = _first(d, "batch_applied", back, timeout=60)
            recovered = (_at(applied) - back).total_seconds()
            time.sleep(1.0)
        finally:
            work.stop()
        wait_until(lambda: _caught_up(source_dsn, target_dsn), timeout=120, every=0.5)
        wait_until(lambda: "recovered" in d.alert_kinds(), timeout=30)
        assert kill(proc, signal.SIGTERM) == 0, d.log.read_text()[-3000:]
        x = _exactness(source_dsn, target_dsn, pipeline, work)
    first_error = retries[0]["error"] if retries else "-"
    message = (
        f"{len(retries)} x {RETRY} while down ({first_error}) | alerts: {d.alert_kinds()} | "
        f"first batch {recovered:.1f} s after the restart"
    )
    report(rows=x.rows, lost=x.lost, duplicated=x.duplicated, leaked=0, message=message)
    print(f"\n{request.node.name}: {message}")
    assert retries, "no retry while the target was down"
    assert failing_seen, "no 'failing' alert while the target was down"
    assert work.transactions > 100
    _assert_exact(x)
