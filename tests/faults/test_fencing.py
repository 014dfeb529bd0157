"""Two daemons on one pipeline, and SIGSTOP / SIGCONT of the active one: the standby takes
over once the lease expires, and the paused one, woken up, is fenced (commits nothing)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from cdc_sync.runtime.lease import TTL_SECONDS
from tests.conftest import Report
from tests.integration.harness import kill, wait_until
from tests.integration.test_ha import (
    assert_applied_once,
    count,
    insert,
    lease,
    owner_of,
    setup,
    two_daemons,
)

pytestmark = [pytest.mark.integration]


def test_paused_daemon_cannot_commit_after_losing_the_lease(
    tmp_path: Path, source_dsn: str, target_dsn: str, report: Report
) -> None:
    s = setup(tmp_path, source_dsn, target_dsn)
    a_log = tmp_path / "a.log"
    with two_daemons(s, tmp_path) as (a, b):
        insert(s, range(1, 21))
        wait_until(lambda: count(s) == 20, timeout=30)
        # Paused right after a write: it may hold that transaction uncommitted.
        insert(s, range(21, 41))
        a.send_signal(signal.SIGSTOP)
        paused = time.monotonic()
        wait_until(lambda: lease(s)[0] == owner_of(b), timeout=TTL_SECONDS + 20)
        took_over = time.monotonic() - paused
        assert took_over >= TTL_SECONDS - 1  # a live pid on this host: waited for expiry
        insert(s, range(41, 61))
        wait_until(lambda: count(s) == 60, timeout=30)

        a.send_signal(signal.SIGCONT)
        # Its renewal thread finds the token gone; anything it still had is fenced.
        wait_until(lambda: "lease_lost" in a_log.read_text(), timeout=15)
        insert(s, range(61, 81))
        wait_until(lambda: count(s) == 80, timeout=30)
        time.sleep(2)
        assert lease(s) == (owner_of(b), True)
        assert a.poll() is None or a.returncode == 1  # standing by again (or failed)
        assert "lease_waiting" in a_log.read_text().split("lease_lost", 1)[1]
        assert kill(a, signal.SIGTERM) == 0  # a standby stops cleanly
        assert kill(b, signal.SIGTERM) == 0
    s.drain()
    report(
        rows=80,
        message=f"SIGSTOP of the active daemon: standby took over after {took_over:.1f} s; "
        "SIGCONT: lease_lost, nothing committed by it",
    )
    assert_applied_once(s, 80)
