"""sd_notify over a real AF_UNIX datagram socket: READY, STOPPING, WATCHDOG only when healthy."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdc_sync.runtime.events import EVENTS
from cdc_sync.runtime.sdnotify import start_notify
from cdc_sync.runtime.stop import StopFlag


@pytest.fixture
def manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """What systemd listens on: a datagram socket named by NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.05)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield sock
    sock.close()
    EVENTS.clear()


def received(sock: socket.socket, seconds: float) -> list[str]:
    out: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
    return out


def test_unset_socket_means_no_notifier(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert start_notify() is None


def test_ready_once_then_stopping_on_stop(manager: socket.socket) -> None:
    stop = StopFlag()
    notifier = start_notify(stop)
    assert notifier is not None
    try:
        assert received(manager, 0.2) == []  # nothing started yet: not ready
        EVENTS.pipeline_started("a")
        EVENTS.alive("a")
        EVENTS.pipeline_started("b")
        got = received(manager, 0.3)
        assert len(got) == 1 and got[0].startswith("READY=1\n")
        stop.request()  # what SIGTERM does
        assert received(manager, 1.5) == ["STOPPING=1"]
    finally:
        notifier.close()
    assert received(manager, 0.2) == []  # STOPPING is said once


def test_watchdog_pings_only_while_every_pipeline_reports(
    manager: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "800000")  # window 0.4 s, pings every 0.4 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = start_notify(StopFlag())
    assert notifier is not None
    try:
        EVENTS.pipeline_started("a")
        EVENTS.pipeline_started("b")
        assert received(manager, 0.1)[0].startswith("READY=1")
        deadline = time.monotonic() + 1.2
        pings = 0
        while time.monotonic() < deadline:
            EVENTS.alive("a")
            EVENTS.alive("b")
            pings += received(manager, 0.1).count("WATCHDOG=1")
        assert pings >= 2
        # "b" hangs: once its report is older than half the watchdog period, no more pings
        deadline = time.monotonic() + 1.2
        while time.monotonic() < deadline:
            EVENTS.alive("a")
            time.sleep(0.1)
        # b's last report stays fresh for half a period (0.4 s), in which the 0.4 s pinger can
        # fire twice when the machine is loaded; after that, silence
        assert received(manager, 0.05).count("WATCHDOG=1") <= 2
        assert "WATCHDOG=1" not in received(manager, 0.6)
        # a pipeline in retry backoff is excused for its sleep; a finished one is forgotten
        EVENTS.retrying("b", attempt=1, error_class="TransientError", error="x", sleep=5.0)
        EVENTS.finished("a", "stopped")
        assert "WATCHDOG=1" in received(manager, 0.8)
    finally:
        notifier.close()


def test_watchdog_for_another_pid_is_ignored(
    manager: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    notifier = start_notify()
    assert notifier is not None
    try:
        EVENTS.alive("a")
        got = received(manager, 0.5)
        assert len(got) == 1 and got[0].startswith("READY=1")
    finally:
        notifier.close()


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"cdc-sync-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(0.05)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    notifier = start_notify()
    assert notifier is not None
    try:
        EVENTS.pipeline_started("a")
        assert received(sock, 0.2)[0].startswith("READY=1")
    finally:
        notifier.close()
        sock.close()
        EVENTS.clear()
