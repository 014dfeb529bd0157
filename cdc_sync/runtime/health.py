"""Liveness and readiness of the pipelines, from their events, and the HTTP server for both."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cdc_sync.runtime.events import Listener

ALIVE_WITHIN_SECONDS = 60.0
"""A running pipeline that reported nothing for this long counts as stuck (/healthz)."""

STARTING, STANDBY, RUNNING, RETRYING, FINISHED, FAILED = (
    "starting",
    "standby",
    "running",
    "retrying",
    "finished",
    "failed",
)


@dataclass
class _Pipeline:
    state: str
    deadline: float  # monotonic time by which the next sign of life is due
    lag_seconds: float | None = None
    result: str | None = None


class HealthTracker(Listener):
    """What /healthz and /readyz answer, kept up to date by the pipelines' events.

    Only pipelines that reported something are known: ``start_metrics`` does not know which
    pipelines ``run -p`` selected, and a pipeline that has not begun cannot be stuck yet.
    """

    def __init__(
        self,
        max_lag_seconds: float,
        alive_within: float = ALIVE_WITHIN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_lag, self.alive_within, self._clock = max_lag_seconds, alive_within, clock
        self._pipelines: dict[str, _Pipeline] = {}
        self._lock = threading.Lock()

    def _seen(self, pipeline: str, state: str | None = None, grace: float = 0.0) -> _Pipeline:
        with self._lock:
            p = self._pipelines.get(pipeline)
            if p is None:
                p = self._pipelines[pipeline] = _Pipeline(STARTING, 0.0)
            if p.state in (FINISHED, FAILED) and state is None:
                return p  # a late event after the end changes nothing
            p.deadline = self._clock() + self.alive_within + grace
            if state is not None:
                p.state = state
            return p

    # -- events ------------------------------------------------------------------------------

    def pipeline_started(self, pipeline: str) -> None:
        self._seen(pipeline, RUNNING)

    def standing_by(self, pipeline: str) -> None:
        # Healthy (the wait pings alive) but not ready: another daemon applies. The lag of
        # our last batch describes that daemon's past, not ours: forgotten.
        self._seen(pipeline, STANDBY).lag_seconds = None

    def batch_applied(self, pipeline: str, *, lag_seconds: float, **_: Any) -> None:
        self._seen(pipeline).lag_seconds = lag_seconds

    def alive(self, pipeline: str) -> None:
        self._seen(pipeline)

    def retrying(self, pipeline: str, *, sleep: float, **_: Any) -> None:
        # The backoff sleep may be longer than the liveness window; it is not a hang.
        self._seen(pipeline, RETRYING, grace=sleep)

    def failed(self, pipeline: str, **_: Any) -> None:
        self._seen(pipeline, FAILED)

    def finished(self, pipeline: str, result: str) -> None:
        with self._lock:
            p = self._pipelines.setdefault(pipeline, _Pipeline(FINISHED, 0.0))
            p.result = result
            if p.state != FAILED:
                p.state = FAILED if result == "failed" else FINISHED

    def snapshot_progress(self, pipeline: str, **_: Any) -> None:
        self._seen(pipeline)  # the initial copy runs before the stream starts

    # -- answers -----------------------------------------------------------------------------

    def states(self) -> dict[str, str]:
        with self._lock:
            return {name: p.state for name, p in self._pipelines.items()}

    def healthz(self) -> tuple[bool, dict[str, Any]]:
        """Healthy unless a pipeline failed or stopped reporting while it should run."""
        now = self._clock()
        out: dict[str, Any] = {}
        ok = True
        with self._lock:
            for name, p in sorted(self._pipelines.items()):
                if p.state == FINISHED:
                    good, why = True, f"finished: {p.result}"
                elif p.state == FAILED:
                    good, why = False, "failed"
                elif now > p.deadline:
                    good, why = False, f"{p.state}, no progress for over {self.alive_within:g} s"
                else:
                    good, why = True, p.state
                ok = ok and good
                out[name] = {"ok": good, "state": why}
        return ok, {"ok": ok, "pipelines": out}

    def readyz(self) -> tuple[bool, dict[str, Any]]:
        """Ready when healthy, at least one pipeline streams, every known one streams, and
        the last applied transaction's lag is below ``ready_max_lag_seconds``."""
        healthy, _ = self.healthz()
        out: dict[str, Any] = {}
        ok = healthy
        with self._lock:
            if not self._pipelines:
                ok = False
            for name, p in sorted(self._pipelines.items()):
                lag = p.lag_seconds or 0.0
                good = p.state == RUNNING and lag <= self.max_lag
                ok = ok and good
                out[name] = {"ok": good, "state": p.state, "lag_seconds": p.lag_seconds}
        return ok, {"ok": ok, "healthy": healthy, "pipelines": out}


Page = Callable[[], tuple[int, str, bytes]]


def _json_page(check: Callable[[], tuple[bool, dict[str, Any]]]) -> Page:
    def page() -> tuple[int, str, bytes]:
        ok, detail = check()
        return (200 if ok else 503), "application/json", json.dumps(detail).encode()

    return page


def _handler(pages: dict[str, Page]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            page = pages.get(self.path.split("?", 1)[0])
            if page is None:
                code, ctype, body = 404, "text/plain", b"not found\n"
            else:
                try:
                    code, ctype, body = page()
                except Exception:  # noqa: BLE001  (a scrape must never take the daemon down)
                    code, ctype, body = 500, "text/plain", b"internal error\n"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per scrape would drown the daemon's own log

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hanging scraper must not delay the daemon's exit


class _Server6(_Server):
    address_family = socket.AF_INET6


class HttpServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` in a daemon thread."""

    def __init__(self, listen: str, metrics: Page, health: HealthTracker) -> None:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        pages = {
            "/metrics": metrics,
            "/healthz": _json_page(health.healthz),
            "/readyz": _json_page(health.readyz),
        }
        cls = _Server6 if ":" in host else _Server
        self._server = cls((host, int(port)), _handler(pages))
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="cdc-sync-http", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
