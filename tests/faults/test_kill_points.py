"""SIGKILL at each named fault point (CDC_SYNC_FAULT), and at random moments under load:
nothing lost, nothing applied twice, every transfer atomic, no canary leaked."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cdc_sync.runtime.faults import POINTS
from tests.conftest import Report
from tests.faults.checks import (
    TABLES,
    Poller,
    Writer,
    compare,
    files,
    leaks,
    metrics_text,
    reset,
    state_texts,
    with_password,
)
from tests.integration.harness import Cli, kill

pytestmark = [pytest.mark.integration]

CONFIG = """
sources:
  src: {{type: postgres, dsn: "${{SRC_DSN}}"}}
targets:
  tgt: {{type: postgres, dsn: "${{TGT_DSN}}"}}
pipelines:
  {pipeline}:
    source: src
    target: tgt
    audit: row
    snapshot: never
    batch: {{max_rows: 40, max_seconds: 0.05, flush_rows: 9}}
    retry: {{initial_seconds: 0.1, max_seconds: 1}}
    tables:
{tables}
metrics: {{listen: "127.0.0.1:{port}"}}
logging: {{level: DEBUG, format: json}}
"""


class Daemon(Cli):
    """One PG→PG pipeline over the fault workload's tables, DEBUG logs, metrics on."""

    def __init__(self, tmp: Path, source: str, target: str) -> None:
        pipeline = "f_" + source.rsplit("/", 1)[-1]
        self.port = _free_port()
        text = CONFIG.format(pipeline=pipeline, tables=TABLES, port=self.port)
        self._configure(tmp, pipeline, text, with_password(source), with_password(target))

    def killed_at(self, point: str, timeout: float = 90) -> int:
        """Run with the fault armed; return the exit status (-9: killed at the point)."""
        env = {**self.env, "CDC_SYNC_FAULT": point}
        with self.log.open("ab") as f:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cdc_sync", "run", "-c", str(self.config)],
                env=env,
                stdout=f,
                stderr=f,
            )
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"the fault point {point} was never reached") from None

    def scan(self, w: Writer) -> list[str]:
        """Canaries in the logs (DEBUG), the daemon's tables, CLI outputs and /metrics."""
        places = files(self.log)
        places += list(state_texts(self.target_dsn))
        for args in (("dlq", "list", "--json"), ("status",), ("offsets", "show")):
            res = self.cli(*args)
            places.append((" ".join(args), res.stdout + res.stderr))
        proc = self.start()
        try:
            places.append(("/metrics", metrics_text(f"http://127.0.0.1:{self.port}/metrics")))
        finally:
            kill(proc, signal.SIGTERM)
        places += files(self.log)  # what the last run wrote
        return leaks(w.canaries(), places)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _check(d: Daemon, source: str, w: Writer, poller: Poller, report: Report, message: str) -> None:
    c = compare(source, d.target_dsn, d.pipeline, w)
    leaked = d.scan(w)
    report(
        rows=c.rows,
        lost=c.lost,
        duplicated=c.duplicated,
        leaked=len(leaked),
        message=message + (f"; {len(poller.violations)} torn reads" if poller.violations else ""),
    )
    assert not c.problems, c.problems
    assert not leaked, leaked
    assert poller.looks > 0 and not poller.violations, poller.violations[:5]


@pytest.mark.parametrize(
    "point", [f"{p}@{n}" for p, n in zip(POINTS, (700, 3, 1, 4, 4), strict=True)]
)
def test_sigkill_at_fault_point(
    tmp_path: Path, source_dsn: str, target_dsn: str, point: str, report: Report
) -> None:
    reset(source_dsn, target_dsn)
    d = Daemon(tmp_path, source_dsn, target_dsn)
    d.drain()  # the slot exists from here on: what follows is captured
    w = Writer(source_dsn)
    w.setup()
    w.write(240)
    status = d.killed_at(point)
    assert status == -signal.SIGKILL, f"exit {status}: {d.log.read_text()[-2000:]}"
    poller = Poller(target_dsn)
    poller.start()
    try:
        w.write(60)  # more changes after the crash, applied by the restart
        d.drain()
    finally:
        poller.stop()
    _check(d, source_dsn, w, poller, report, f"SIGKILL at {point}, restart")


@pytest.mark.faults_full
def test_random_sigkill_every_2_to_20_s_under_load(
    tmp_path: Path, source_dsn: str, target_dsn: str, report: Report
) -> None:
    _random_kills(tmp_path, source_dsn, target_dsn, report, (2, 20), seconds=300)


@pytest.mark.faults_full  # the default run has tests/integration/test_crash_safety.py's
def test_random_sigkill_short(
    tmp_path: Path, source_dsn: str, target_dsn: str, report: Report
) -> None:
    _random_kills(tmp_path, source_dsn, target_dsn, report, (0.5, 3), seconds=20)


def _random_kills(
    tmp: Path,
    source: str,
    target: str,
    report: Report,
    every: tuple[float, float],
    seconds: float,
) -> None:
    reset(source, target)
    d = Daemon(tmp, source, target)
    d.drain()
    w = Writer(source)
    w.setup()
    poller = Poller(target)
    poller.start()
    rng = random.Random(int(os.environ.get("CDC_SYNC_FAULT_SEED", "3")))
    kills = 0
    end = time.monotonic() + seconds
    proc = d.start()
    try:
        while time.monotonic() < end:
            wait = rng.uniform(*every)
            t = time.monotonic()
            while time.monotonic() - t < wait:
                w.write(5, pause=0.01)
            kill(proc)
            kills += 1
            proc = d.start()
    finally:
        kill(proc, signal.SIGTERM)
    try:
        d.drain()
    finally:
        poller.stop()
    _check(d, source, w, poller, report, f"{kills} random SIGKILLs over {seconds:.0f} s")
