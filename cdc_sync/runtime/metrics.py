"""Prometheus metrics from the pipelines' events, a lag probe, and ``start_metrics``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cdc_sync import logs
from cdc_sync.config.models import Config
from cdc_sync.errors import PermanentError
from cdc_sync.runtime import offsets
from cdc_sync.runtime.events import EVENTS, Events, Listener
from cdc_sync.runtime.health import FAILED, FINISHED, HealthTracker, HttpServer

PROBE_SECONDS = 15.0
"""How often the lag probe reads each pipeline's checkpoint and the source head."""

# Batches take milliseconds when streaming and minutes for a 1M-row source transaction.
_BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
_VERIFY_STATUSES = ("equal", "differences", "error")


class Closeable(Protocol):
    def close(self) -> None: ...


class _Clocks(Collector):
    """Gauges whose value is an age: computed at scrape time so they grow while stuck."""

    def __init__(self, events: Events) -> None:
        self.checkpoint_at: dict[str, float] = {}  # pipeline -> unix time of last checkpoint
        self._events = events

    def note(self, pipeline: str, at: float) -> None:
        self.checkpoint_at[pipeline] = max(at, self.checkpoint_at.get(pipeline, 0.0))

    def collect(self) -> Iterator[Metric]:
        age = GaugeMetricFamily(
            "cdc_sync_checkpoint_age_seconds",
            "Seconds since the pipeline's checkpoint last moved (batch or idle heartbeat).",
            labels=["pipeline"],
        )
        now = time.time()
        for pipeline, at in sorted(self.checkpoint_at.items()):
            age.add_metric([pipeline], max(0.0, now - at))
        yield age
        yield CounterMetricFamily(
            "cdc_sync_observer_errors",
            "Exceptions raised by event observers (swallowed; replication went on).",
            value=self._events.errors,
        )


class MetricsListener(Listener):
    """Turns pipeline events into metrics in its own registry (never the global one, so
    tests and embedders can hold several). Labels carry pipeline, table, op and error class
    names only, never row values (invariant 5)."""

    def __init__(self, registry: CollectorRegistry, events: Events = EVENTS) -> None:
        self.enabled = True
        self.clocks = _Clocks(events)
        registry.register(self.clocks)
        r, p = registry, ["pipeline"]
        self.up = Gauge("cdc_sync_pipeline_up", "1 while the pipeline streams.", p, registry=r)
        self.lag_seconds = Gauge(
            "cdc_sync_lag_seconds",
            "Source commit to target commit of the last applied transaction.",
            p,
            registry=r,
        )
        self.lag_bytes = Gauge(
            "cdc_sync_lag_bytes",
            "Source log bytes between the checkpoint and the source head (lag probe).",
            p,
            registry=r,
        )
        self.probe_errors = Counter(
            "cdc_sync_lag_probe_errors", "Failed lag probes.", p, registry=r
        )
        self.rows = Counter(
            "cdc_sync_rows_applied",
            "Changes applied to the target, by target table and op.",
            [*p, "table", "op"],
            registry=r,
        )
        self.transactions = Counter(
            "cdc_sync_transactions_applied", "Source transactions applied.", p, registry=r
        )
        self.batches = Counter("cdc_sync_batches", "Target commits of changes.", p, registry=r)
        self.batch_seconds = Histogram(
            "cdc_sync_batch_duration_seconds",
            "From a batch's first change to its durable target commit.",
            p,
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.last_batch = Gauge(
            "cdc_sync_last_batch_timestamp_seconds",
            "Unix time of the last applied batch.",
            p,
            registry=r,
        )
        self.retries = Counter(
            "cdc_sync_retries", "Restarts after a transient error.", p, registry=r
        )
        self.errors = Counter(
            "cdc_sync_errors",
            "Errors by class; kind is transient (retried) or permanent (pipeline stopped).",
            [*p, "error_class", "kind"],
            registry=r,
        )
        self.dead_letters = Counter(
            "cdc_sync_dead_letters",
            "Rows parked as dead letters, by source table and stage (rule or target).",
            [*p, "table", "stage"],
            registry=r,
        )
        self.conflicts = Counter(
            "cdc_sync_conflicts",
            "Two-way link conflicts, by target table, kind and winner.",
            [*p, "table", "kind", "winner"],
            registry=r,
        )
        t = [*p, "table"]
        self.snap_rows = Gauge(
            "cdc_sync_snapshot_rows", "Rows copied by the table's snapshot.", t, registry=r
        )
        self.snap_estimate = Gauge(
            "cdc_sync_snapshot_rows_estimate", "The source's row estimate.", t, registry=r
        )
        self.snap_done = Gauge(
            "cdc_sync_snapshot_done", "1 once the table's snapshot finished.", t, registry=r
        )
        self.verify_status = Gauge(
            "cdc_sync_verify_status",
            "1 for the status of the last verify run (equal, differences, error).",
            [*p, "status"],
            registry=r,
        )
        self.verify_rows = Gauge(
            "cdc_sync_verify_rows",
            "Counts of the last verify run (rows_checked, missing, extra, different, repaired).",
            [*p, "kind"],
            registry=r,
        )
        self.verify_seconds = Gauge(
            "cdc_sync_verify_duration_seconds", "Duration of the last verify run.", p, registry=r
        )
        self.verify_at = Gauge(
            "cdc_sync_verify_timestamp_seconds",
            "Unix time the last verify run finished.",
            p,
            registry=r,
        )

    def pipeline_started(self, pipeline: str) -> None:
        if self.enabled:
            self.up.labels(pipeline).set(1)

    def standing_by(self, pipeline: str) -> None:
        if self.enabled:
            self.up.labels(pipeline).set(0)  # another daemon applies: never two "up" at once

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
        if not self.enabled:
            return
        now = time.time()
        self.lag_seconds.labels(pipeline).set(lag_seconds)
        self.transactions.labels(pipeline).inc(transactions)
        self.batches.labels(pipeline).inc()
        self.batch_seconds.labels(pipeline).observe(seconds)
        self.last_batch.labels(pipeline).set(now)
        for (table, op), n in per_table.items():
            self.rows.labels(pipeline, table, op).inc(n)
        self.clocks.note(pipeline, now)

    def dead_lettered(self, pipeline: str, table: str, stage: str) -> None:
        if self.enabled:
            self.dead_letters.labels(pipeline, table, stage).inc()

    def conflict(self, pipeline: str, table: str, kind: str, winner: str) -> None:
        if self.enabled:
            self.conflicts.labels(pipeline, table, kind, winner).inc()

    def retrying(
        self, pipeline: str, *, attempt: int, error_class: str, error: str, sleep: float
    ) -> None:
        if self.enabled:
            self.up.labels(pipeline).set(0)
            self.retries.labels(pipeline).inc()
            self.errors.labels(pipeline, error_class, "transient").inc()

    def failed(self, pipeline: str, *, error_class: str, error: str) -> None:
        if self.enabled:
            self.errors.labels(pipeline, error_class, "permanent").inc()

    def finished(self, pipeline: str, result: str) -> None:
        if self.enabled:
            self.up.labels(pipeline).set(0)

    def snapshot_progress(
        self, pipeline: str, *, table: str, rows_done: int, estimate: int | None, done: bool
    ) -> None:
        if not self.enabled:
            return
        self.snap_rows.labels(pipeline, table).set(rows_done)
        if estimate is not None:
            self.snap_estimate.labels(pipeline, table).set(estimate)
        self.snap_done.labels(pipeline, table).set(1 if done else 0)

    def verify_finished(
        self, pipeline: str, *, status: str, counts: Mapping[str, int], seconds: float
    ) -> None:
        if not self.enabled:
            return
        for s in {*_VERIFY_STATUSES, status}:
            self.verify_status.labels(pipeline, s).set(1 if s == status else 0)
        for kind, n in counts.items():
            self.verify_rows.labels(pipeline, kind).set(n)
        self.verify_seconds.labels(pipeline).set(seconds)
        self.verify_at.labels(pipeline).set(time.time())


Describe = Callable[[Config, str, float], dict[str, Any]]


class LagProbe:
    """Every ``every`` seconds, per started pipeline, reads the stored checkpoint and the
    source head (``offsets.describe``) and sets ``cdc_sync_lag_bytes`` and the checkpoint's
    age. Why a probe and not a scrape-time collector: a scrape must not cost database round
    trips (nor hang when a server does), and 15 s is finer than lag in bytes needs. Why read
    the checkpoint and not the last batch's position: idle pipelines move their checkpoint
    to the source heartbeat without a batch, which the events do not report."""

    def __init__(
        self,
        config: Config,
        metrics: MetricsListener,
        pipelines: Callable[[], list[str]],
        every: float = PROBE_SECONDS,
        describe: Describe = offsets.describe,
    ) -> None:
        self._config, self._metrics, self._pipelines = config, metrics, pipelines
        self._every, self._describe = every, describe
        self._due: dict[str, float] = {}
        self._stop = threading.Event()
        self._log = logs.get().bind(component="lag_probe")
        self._thread = threading.Thread(target=self._run, name="cdc-sync-lag-probe", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for name in self._pipelines():
                if self._stop.is_set():
                    return
                now = time.monotonic()
                if now >= self._due.get(name, 0.0):  # a new pipeline is probed at once
                    self._due[name] = now + self._every
                    self.probe(name)

    def probe(self, name: str) -> None:
        try:
            # Bytes and the last applied time only: no waiting for the checkpoint to settle.
            out = self._describe(self._config, name, 0.0)
        except Exception as e:  # noqa: BLE001  (the probe must outlive a server being down)
            self._metrics.probe_errors.labels(name).inc()
            self._log.warning("lag_probe_failed", pipeline=name, error_class=type(e).__name__)
            return
        if out.get("lag_bytes") is not None:
            self._metrics.lag_bytes.labels(name).set(float(out["lag_bytes"]))
        if out.get("last_applied_at"):
            at = datetime.fromisoformat(str(out["last_applied_at"])).timestamp()
            self._metrics.clocks.note(name, at)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


class MetricsService:
    """What ``start_metrics`` started; ``close`` stops it (listeners become no-ops, since
    the events hub has no way to remove one)."""

    def __init__(self, config: Config, events: Events = EVENTS) -> None:
        self.registry = CollectorRegistry()
        self.metrics = MetricsListener(self.registry, events)
        self.health = HealthTracker(config.metrics.ready_max_lag_seconds)
        try:
            self.http = HttpServer(str(config.metrics.listen), self.page, self.health)
        except OSError as e:
            raise PermanentError(
                f"metrics.listen: cannot listen on {config.metrics.listen}: {e.strerror}"
            ) from e
        events.add(self.metrics)
        events.add(self.health)
        self.probe = LagProbe(config, self.metrics, self._streaming)

    def _streaming(self) -> list[str]:
        return sorted(n for n, s in self.health.states().items() if s not in (FINISHED, FAILED))

    def page(self) -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)

    def close(self) -> None:
        self.metrics.enabled = False
        self.probe.close()
        self.http.close()


def start_metrics(config: Config) -> Closeable | None:
    """Register the metrics and health listeners with ``EVENTS`` and serve ``/metrics``,
    ``/healthz`` and ``/readyz`` on ``metrics.listen``; None when it is not set."""
    if not config.metrics.listen:
        return None
    return MetricsService(config)
