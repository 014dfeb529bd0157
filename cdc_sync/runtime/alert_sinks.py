"""Alert delivery: the JSON shape, webhook and command sinks, and a non-blocking sender."""

from __future__ import annotations

import contextlib
import json
import queue
import shlex
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from cdc_sync import logs
from cdc_sync.logs import scrub

QUEUE_SIZE = 100
_MESSAGE_CHARS = 1000  # keeps a chat message readable and the payload small
_DROP_LOG_EVERY_S = 60.0

_HEADLINES = {
    "failing": "is failing",
    "failed": "FAILED and stopped",
    "recovered": "recovered",
    "dead_letters": "dead-lettered rows",
}


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Alert:
    """One notification. Never carries row values: names, counts, classes, safe messages."""

    pipeline: str
    kind: str  # failing | failed | recovered | dead_letters
    time: float  # wall clock, epoch seconds
    error_class: str | None = None
    message: str | None = None
    attempt: int | None = None  # consecutive failed attempts so far
    since: float | None = None  # wall clock when the failure streak began
    count: int | None = None  # dead_letters: rows since the previous dead_letters alert
    tables: Mapping[str, int] = field(default_factory=dict)  # dead_letters: per source table

    def text(self, message: str | None) -> str:
        """The human line (Slack's ``text``) with the already cleaned ``message``."""
        head = f"cdc-sync: pipeline {self.pipeline} {_HEADLINES.get(self.kind, self.kind)}"
        if self.kind == "dead_letters":
            tables = ", ".join(f"{t}: {n}" for t, n in sorted(self.tables.items()))
            return f"{head}: {self.count} rows ({tables})"
        if self.kind == "recovered":
            return f"{head} after {self.attempt} failed attempts (failing since {_iso(self.since)})"
        details = []
        if self.attempt is not None:
            details.append(f"attempt {self.attempt}")
        if self.since is not None:
            details.append(f"since {_iso(self.since)}")
        line = head + (f" ({', '.join(details)})" if details else "")
        if message:
            line += f": {self.error_class}: {message}"
        return line

    def payload(self) -> dict[str, Any]:
        message = scrub(self.message)[:_MESSAGE_CHARS] if self.message else None
        return {
            "text": self.text(message),
            "pipeline": self.pipeline,
            "kind": self.kind,
            "error_class": self.error_class,
            "message": message,
            "attempt": self.attempt,
            "since": _iso(self.since),
            "count": self.count,
            "tables": dict(self.tables),
            "time": _iso(self.time),
        }

    def to_json(self) -> bytes:
        return json.dumps(self.payload(), sort_keys=True).encode()


class AlertSink(Protocol):
    name: str

    def send(self, body: bytes) -> None:
        """Deliver or raise; called from the sender thread only."""


class WebhookSink:
    """POST the alert JSON. The URL may hold a token: it never appears in logs or errors."""

    name = "webhook"

    def __init__(self, url: str, timeout: float) -> None:
        self._url, self._timeout = url, timeout

    def send(self, body: bytes) -> None:
        req = urllib.request.Request(
            self._url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as resp:
                resp.read()
        except urllib.error.HTTPError as e:
            raise DeliveryError(f"HTTP {e.code}") from None
        except (urllib.error.URLError, OSError) as e:
            # URLError wraps the socket error; its text may echo the host, never the path.
            reason = getattr(e, "reason", e)
            raise DeliveryError(type(reason).__name__) from None


class CommandSink:
    """Run a program (no shell) with the alert JSON on stdin; a non-zero exit is a failure."""

    name = "command"

    def __init__(self, command: str, timeout: float) -> None:
        self._argv: Sequence[str] = shlex.split(command)
        self._timeout = timeout

    def send(self, body: bytes) -> None:
        try:
            res = subprocess.run(
                self._argv,
                input=body,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=self._timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DeliveryError("timed out") from None
        except OSError as e:
            raise DeliveryError(type(e).__name__) from None
        if res.returncode != 0:
            raise DeliveryError(f"exit status {res.returncode}")


class DeliveryError(Exception):
    """A sink could not deliver; the text is safe to log (no URL, no arguments)."""


class Sender:
    """Delivers alerts from a daemon thread so a slow or dead sink never blocks replication.

    The queue is bounded: when full the alert is dropped and counted. ``tick`` is called on
    the thread about once a second (it may return alerts that waited for their interval).
    """

    def __init__(
        self,
        sinks: Sequence[AlertSink],
        *,
        tick_seconds: float = 1.0,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self._sinks = list(sinks)
        self._tick: Callable[[], list[Alert]] | None = None
        self._tick_seconds = tick_seconds
        self._queue: queue.Queue[Alert | None] = queue.Queue(queue_size)
        self._closing = threading.Event()
        self._log = logs.get()
        self._next_drop_log = 0.0
        self._drop_lock = threading.Lock()
        self.sent = 0
        self.failed = 0  # per sink and alert
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="alerts", daemon=True)

    def start(self, tick: Callable[[], list[Alert]] | None = None) -> None:
        self._tick = tick
        self._thread.start()

    def offer(self, alert: Alert) -> None:
        """Never blocks and never raises."""
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            with self._drop_lock:  # offered from several pipeline threads
                self.dropped += 1
                now = time.monotonic()
                if now < self._next_drop_log:
                    return
                self._next_drop_log = now + _DROP_LOG_EVERY_S
            self._log.warning("alert_dropped", reason="queue_full", dropped=self.dropped)

    def close(self, timeout: float = 3.0) -> None:
        """Deliver what is queued within ``timeout``, then stop (a daemon thread left behind
        in a hung delivery does not keep the process alive)."""
        self._closing.set()
        with contextlib.suppress(queue.Full):  # only wakes the thread; it polls anyway
            self._queue.put_nowait(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            try:
                alert = self._queue.get(timeout=self._tick_seconds)
            except queue.Empty:
                alert = None
            if alert is not None:
                self.deliver(alert)
            self._ticked()
            if self._closing.is_set():
                while not self._queue.empty():  # flush: close() bounds how long this may take
                    rest = self._queue.get_nowait()
                    if rest is not None:
                        self.deliver(rest)
                return

    def _ticked(self) -> None:
        if self._tick is None:
            return
        try:
            due = self._tick()
        except Exception as e:  # noqa: BLE001  (the alert thread must survive its own bugs)
            self._log.error("alert_tick_failed", error_class=type(e).__name__)
            return
        for alert in due:
            self.offer(alert)

    def deliver(self, alert: Alert) -> None:
        """Every sink gets the alert; failures are logged (safely) and counted, never raised."""
        body = alert.to_json()
        for sink in self._sinks:
            try:
                sink.send(body)
            except Exception as e:  # noqa: BLE001  (delivery must never raise)
                self.failed += 1
                error = str(e) if isinstance(e, DeliveryError) else type(e).__name__
                self._log.warning(
                    "alert_delivery_failed",
                    sink=sink.name,
                    pipeline=alert.pipeline,
                    kind=alert.kind,
                    error=error,
                )
            else:
                self.sent += 1
                self._log.info(
                    "alert_sent", sink=sink.name, pipeline=alert.pipeline, kind=alert.kind
                )
