"""systemd Type=notify: READY, STOPPING and WATCHDOG pings over NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping
from typing import Protocol

from cdc_sync import logs
from cdc_sync.runtime.events import EVENTS, Listener
from cdc_sync.runtime.stop import StopFlag


class Closeable(Protocol):
    def close(self) -> None: ...


def _address(value: str) -> str | None:
    """NOTIFY_SOCKET as an AF_UNIX address: '@name' is the abstract namespace."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock: and others: not supported here


class Notifier(Listener):
    """Listens to the events hub and tells the service manager how the daemon is doing.

    READY=1 at the first sign of life of any pipeline (started streaming, or waiting as a
    healthy standby for the lease); STOPPING=1 when a stop is requested (SIGTERM).
    WATCHDOG=1 every quarter of WATCHDOG_USEC, but only while every running pipeline has
    reported within half of it: a hung loop then gets the daemon restarted. A pipeline in
    retry backoff is excused until its announced sleep is over (an outage is not a hang,
    and a restart would not heal it)."""

    def __init__(self, address: str, watchdog_usec: int | None, stop: StopFlag | None) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._address, self._stop = address, stop
        self._window = watchdog_usec / 1e6 / 2 if watchdog_usec else None
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}  # running pipeline -> deadline for its next report
        self._ready = self._stopping = False
        self._done = threading.Event()
        self._log = logs.get()
        self._thread = threading.Thread(target=self._tick, name="sd-notify", daemon=True)
        self._thread.start()

    # -- what systemd is told ---------------------------------------------------------------

    def send(self, message: str) -> None:
        if self._sock.fileno() < 0:
            return  # closed: events may still arrive until the hub drops its listeners
        try:
            self._sock.sendto(message.encode(), self._address)
        except OSError as e:
            # The service manager may be gone (shutdown); never a reason to stop replicating.
            self._log.warning("sd_notify_failed", error_class=type(e).__name__)

    def healthy(self) -> bool:
        now = time.monotonic()
        with self._lock:
            return all(now <= deadline for deadline in self._seen.values())

    def _tick(self) -> None:
        every = min(self._window / 2, 1.0) if self._window else 0.5
        next_ping = 0.0
        while not self._done.wait(every):
            if self._stop is not None and self._stop.is_set:
                self._stopping_once()
            if self._window is None or not self._ready:
                continue
            now = time.monotonic()
            if now >= next_ping and self.healthy():
                self.send("WATCHDOG=1")
                next_ping = now + self._window / 2

    def _stopping_once(self) -> None:
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        self.send("STOPPING=1")

    def _report(self, pipeline: str, grace: float = 0.0) -> None:
        ready = False
        with self._lock:
            if self._window is not None:
                self._seen[pipeline] = time.monotonic() + self._window + grace
            if not self._ready:
                self._ready = ready = True
        if ready:
            self.send("READY=1\nSTATUS=pipelines running")

    def close(self) -> None:
        self._done.set()
        self._thread.join()
        self._stopping_once()
        self._sock.close()

    # -- events -------------------------------------------------------------------------------

    def pipeline_started(self, pipeline: str) -> None:
        self._report(pipeline)

    def alive(self, pipeline: str) -> None:
        self._report(pipeline)

    def batch_applied(
        self,
        pipeline: str,
        *,
        rows: int,
        transactions: int,
        lag_seconds: float,
        seconds: float,
        position: str,
        per_table: Mapping[tuple[str, str], int],
    ) -> None:
        self._report(pipeline)

    def snapshot_progress(
        self, pipeline: str, *, table: str, rows_done: int, estimate: int | None, done: bool
    ) -> None:
        self._report(pipeline)

    def retrying(
        self, pipeline: str, *, attempt: int, error_class: str, error: str, sleep: float
    ) -> None:
        self._report(pipeline, grace=sleep)

    def finished(self, pipeline: str, result: str) -> None:
        with self._lock:
            self._seen.pop(pipeline, None)


def start_notify(stop: StopFlag | None = None) -> Closeable | None:
    """Register the notifier with the events hub when run by systemd (NOTIFY_SOCKET set);
    None otherwise. WATCHDOG_PID, when set, must be this process (not a child's job)."""
    address = _address(os.environ.get("NOTIFY_SOCKET", ""))
    if address is None:
        return None
    usec_text = os.environ.get("WATCHDOG_USEC", "")
    watchdog_pid = os.environ.get("WATCHDOG_PID", "")
    usec = int(usec_text) if usec_text.isdigit() and int(usec_text) > 0 else None
    if watchdog_pid.isdigit() and int(watchdog_pid) != os.getpid():
        usec = None
    notifier = Notifier(address, usec, stop)
    EVENTS.add(notifier)
    return notifier
