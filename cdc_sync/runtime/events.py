"""What the pipelines report to observers (metrics, alerts, service manager): one hub."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping


class Listener:
    """Base class with a no-op per event; observers override what they need.

    Called from pipeline threads: implementations must be quick, thread-safe and must never
    raise (a failing observer must not stop replication). Arguments never carry row values:
    table names, counts, positions as text, error classes and messages that are already
    free of values (our errors are built that way).
    """

    def pipeline_started(self, pipeline: str) -> None: ...

    def standing_by(self, pipeline: str) -> None:
        """This daemon does not hold the pipeline's lease: it waits for it, or just lost it
        to another daemon (nothing more commits from here). Alive, but not streaming."""

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
        """A target commit is durable; ``per_table`` counts (target table, op) changes."""

    def alive(self, pipeline: str) -> None:
        """The loop made progress or is idle and healthy (watchdog, /healthz)."""

    def dead_lettered(self, pipeline: str, table: str, stage: str) -> None: ...

    def conflict(self, pipeline: str, table: str, kind: str, winner: str) -> None: ...

    def retrying(
        self, pipeline: str, *, attempt: int, error_class: str, error: str, sleep: float
    ) -> None: ...

    def failed(self, pipeline: str, *, error_class: str, error: str) -> None:
        """A permanent error stopped this pipeline (others go on)."""

    def finished(self, pipeline: str, result: str) -> None:
        """The pipeline ended: caught_up, stopped, failed…"""

    def snapshot_progress(
        self, pipeline: str, *, table: str, rows_done: int, estimate: int | None, done: bool
    ) -> None: ...

    def verify_finished(
        self, pipeline: str, *, status: str, counts: Mapping[str, int], seconds: float
    ) -> None: ...

    def source_warning(self, pipeline: str, message: str) -> None:
        """The source is at risk (slot WAL near its limit, binlogs about to expire…)."""


class Events(Listener):
    """Fans every event out to the registered listeners; swallows their failures."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        self.errors = 0  # observer failures (counted, never raised into a pipeline)

    def add(self, listener: Listener) -> None:
        with self._lock:
            self._listeners = [*self._listeners, listener]

    @property
    def active(self) -> bool:
        """Someone listens: per-row bookkeeping for events is worth doing only then."""
        return bool(self._listeners)

    def clear(self) -> None:
        with self._lock:
            self._listeners = []

    def _each(self, name: str, *args: object, **kwargs: object) -> None:
        for listener in self._listeners:
            try:
                getattr(listener, name)(*args, **kwargs)
            except Exception:  # noqa: BLE001  (an observer must never stop replication)
                self.errors += 1

    def pipeline_started(self, pipeline: str) -> None:
        self._each("pipeline_started", pipeline)

    def standing_by(self, pipeline: str) -> None:
        self._each("standing_by", pipeline)

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
        self._each(
            "batch_applied",
            pipeline,
            rows=rows,
            transactions=transactions,
            lag_seconds=lag_seconds,
            seconds=seconds,
            position=position,
            per_table=per_table,
        )

    def alive(self, pipeline: str) -> None:
        self._each("alive", pipeline)

    def dead_lettered(self, pipeline: str, table: str, stage: str) -> None:
        self._each("dead_lettered", pipeline, table, stage)

    def conflict(self, pipeline: str, table: str, kind: str, winner: str) -> None:
        self._each("conflict", pipeline, table, kind, winner)

    def retrying(
        self, pipeline: str, *, attempt: int, error_class: str, error: str, sleep: float
    ) -> None:
        self._each(
            "retrying", pipeline, attempt=attempt, error_class=error_class, error=error, sleep=sleep
        )

    def failed(self, pipeline: str, *, error_class: str, error: str) -> None:
        self._each("failed", pipeline, error_class=error_class, error=error)

    def finished(self, pipeline: str, result: str) -> None:
        self._each("finished", pipeline, result)

    def snapshot_progress(
        self, pipeline: str, *, table: str, rows_done: int, estimate: int | None, done: bool
    ) -> None:
        self._each(
            "snapshot_progress",
            pipeline,
            table=table,
            rows_done=rows_done,
            estimate=estimate,
            done=done,
        )

    def verify_finished(
        self, pipeline: str, *, status: str, counts: Mapping[str, int], seconds: float
    ) -> None:
        self._each("verify_finished", pipeline, status=status, counts=counts, seconds=seconds)

    def source_warning(self, pipeline: str, message: str) -> None:
        self._each("source_warning", pipeline, message)


EVENTS = Events()
"""The process's hub: pipelines report here; ``runtime.observers`` registers listeners."""


class Throttle:
    """True at most once per ``every`` seconds (for per-row or per-poll liveness pings)."""

    def __init__(self, every: float) -> None:
        self.every, self._next = every, 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.every
        return True
