"""Pipeline events -> Prometheus metrics, health answers, and the HTTP endpoint."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cdc_sync.config.models import Config, MetricsConfig
from cdc_sync.errors import PermanentError
from cdc_sync.runtime.events import Events
from cdc_sync.runtime.health import HealthTracker
from cdc_sync.runtime.metrics import LagProbe, MetricsListener, MetricsService, start_metrics


def samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return samples(registry).get((name, frozenset(labels.items())))


@pytest.fixture
def hub() -> tuple[Events, CollectorRegistry, MetricsListener]:
    events, registry = Events(), CollectorRegistry()
    listener = MetricsListener(registry, events)
    events.add(listener)
    return events, registry, listener


def batch(events: Events, per_table: dict[tuple[str, str], int], pipeline: str = "p") -> None:
    events.batch_applied(
        pipeline,
        rows=sum(per_table.values()),
        transactions=2,
        lag_seconds=1.5,
        seconds=0.02,
        position="pg:0/16B3748",
        per_table=per_table,
    )


def test_batches_count_rows_by_table_and_op(hub: Any) -> None:
    events, reg, _ = hub
    events.pipeline_started("p")
    batch(events, {("public.t", "insert"): 3, ("public.t", "delete"): 1, ("public.u", "update"): 2})
    batch(events, {("public.t", "insert"): 4})
    rows = "cdc_sync_rows_applied_total"
    assert value(reg, rows, pipeline="p", table="public.t", op="insert") == 7
    assert value(reg, rows, pipeline="p", table="public.t", op="delete") == 1
    assert value(reg, rows, pipeline="p", table="public.u", op="update") == 2
    assert value(reg, "cdc_sync_batches_total", pipeline="p") == 2
    assert value(reg, "cdc_sync_transactions_applied_total", pipeline="p") == 4
    assert value(reg, "cdc_sync_batch_duration_seconds_count", pipeline="p") == 2
    assert value(reg, "cdc_sync_batch_duration_seconds_bucket", pipeline="p", le="0.025") == 2
    assert value(reg, "cdc_sync_lag_seconds", pipeline="p") == 1.5
    assert value(reg, "cdc_sync_pipeline_up", pipeline="p") == 1
    age = value(reg, "cdc_sync_checkpoint_age_seconds", pipeline="p")
    assert age is not None and 0 <= age < 5


def test_errors_retries_dead_letters_and_end(hub: Any) -> None:
    events, reg, _ = hub
    events.pipeline_started("p")
    events.retrying("p", attempt=1, error_class="TransientError", error="x", sleep=0.1)
    events.retrying("p", attempt=2, error_class="TransientError", error="x", sleep=0.2)
    assert value(reg, "cdc_sync_pipeline_up", pipeline="p") == 0
    events.dead_lettered("p", "public.t", "rule")
    events.failed("p", error_class="NoKeyError", error="no key")
    events.finished("p", "failed")
    assert value(reg, "cdc_sync_retries_total", pipeline="p") == 2
    transient = {"pipeline": "p", "error_class": "TransientError", "kind": "transient"}
    assert value(reg, "cdc_sync_errors_total", **transient) == 2
    permanent = {"pipeline": "p", "error_class": "NoKeyError", "kind": "permanent"}
    assert value(reg, "cdc_sync_errors_total", **permanent) == 1
    letter = {"pipeline": "p", "table": "public.t", "stage": "rule"}
    assert value(reg, "cdc_sync_dead_letters_total", **letter) == 1
    assert value(reg, "cdc_sync_pipeline_up", pipeline="p") == 0


def test_snapshot_and_verify(hub: Any) -> None:
    events, reg, _ = hub
    events.snapshot_progress("p", table="public.t", rows_done=500, estimate=1000, done=False)
    assert value(reg, "cdc_sync_snapshot_rows", pipeline="p", table="public.t") == 500
    assert value(reg, "cdc_sync_snapshot_rows_estimate", pipeline="p", table="public.t") == 1000
    assert value(reg, "cdc_sync_snapshot_done", pipeline="p", table="public.t") == 0
    events.snapshot_progress("p", table="public.t", rows_done=1000, estimate=None, done=True)
    assert value(reg, "cdc_sync_snapshot_done", pipeline="p", table="public.t") == 1
    counts = {"rows_checked": 10, "missing": 1, "extra": 0, "different": 2, "repaired": 0}
    events.verify_finished("p", status="differences", counts=counts, seconds=3.0)
    assert value(reg, "cdc_sync_verify_status", pipeline="p", status="differences") == 1
    assert value(reg, "cdc_sync_verify_status", pipeline="p", status="equal") == 0
    assert value(reg, "cdc_sync_verify_rows", pipeline="p", kind="different") == 2
    assert value(reg, "cdc_sync_verify_duration_seconds", pipeline="p") == 3.0
    events.verify_finished("p", status="equal", counts=counts, seconds=1.0)
    assert value(reg, "cdc_sync_verify_status", pipeline="p", status="differences") == 0
    assert value(reg, "cdc_sync_verify_status", pipeline="p", status="equal") == 1


def test_disabled_listener_records_nothing(hub: Any) -> None:
    events, reg, listener = hub
    listener.enabled = False
    batch(events, {("public.t", "insert"): 3})
    assert value(reg, "cdc_sync_batches_total", pipeline="p") is None


def test_lag_probe_sets_lag_bytes_and_counts_failures(hub: Any) -> None:
    _, reg, listener = hub
    calls: list[str] = []

    def describe(_: Config, name: str, settle: float) -> dict[str, Any]:
        assert settle == 0.0  # the probe never waits for a checkpoint to settle
        calls.append(name)
        if name == "down":
            raise RuntimeError("source unreachable")
        return {"lag_bytes": 4096, "last_applied_at": "2020-01-01T00:00:00+00:00"}

    cfg = Config(sources={}, targets={}, pipelines={})
    probe = LagProbe(cfg, listener, list, every=3600, describe=describe)
    probe.close()  # only the explicit calls below
    probe.probe("p")
    probe.probe("down")
    assert value(reg, "cdc_sync_lag_bytes", pipeline="p") == 4096
    assert value(reg, "cdc_sync_lag_probe_errors_total", pipeline="down") == 1
    age = value(reg, "cdc_sync_checkpoint_age_seconds", pipeline="p")
    assert age is not None and age > 86400
    assert calls == ["p", "down"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_health_needs_recent_progress_and_ready_needs_low_lag() -> None:
    clock = Clock()
    h = HealthTracker(max_lag_seconds=10, alive_within=60, clock=clock)
    assert h.healthz()[0] is True  # nothing started yet: alive, not ready
    assert h.readyz()[0] is False
    h.pipeline_started("a")
    h.pipeline_started("b")
    assert h.readyz()[0] is True
    clock.now += 30
    h.alive("a")
    h.batch_applied(
        "b", rows=1, transactions=1, lag_seconds=20, seconds=0.1, position="x", per_table={}
    )
    assert h.healthz()[0] is True
    ready, detail = h.readyz()
    assert not ready and detail["pipelines"]["b"]["ok"] is False
    h.batch_applied(
        "b", rows=1, transactions=1, lag_seconds=2, seconds=0.1, position="x", per_table={}
    )
    assert h.readyz()[0] is True
    clock.now += 45  # b is 45 s quiet, a 45 s
    assert h.healthz()[0] is True
    clock.now += 20
    ok, detail = h.healthz()
    assert not ok and not detail["pipelines"]["a"]["ok"]


def test_health_retry_sleep_finish_and_failure() -> None:
    clock = Clock()
    h = HealthTracker(max_lag_seconds=10, alive_within=60, clock=clock)
    h.pipeline_started("a")
    h.retrying("a", attempt=1, error_class="TransientError", error="x", sleep=100)
    clock.now += 120  # still inside the backoff sleep plus the window
    assert h.healthz()[0] is True
    assert h.readyz()[0] is False  # not streaming while it retries
    h.pipeline_started("a")
    h.finished("a", "stopped")
    clock.now += 1000
    assert h.healthz()[0] is True
    h.pipeline_started("b")
    h.failed("b", error_class="NoKeyError", error="no key")
    h.finished("b", "failed")
    ok, detail = h.healthz()
    assert not ok and detail["pipelines"]["b"]["state"] == "failed"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_http_endpoints() -> None:
    events = Events()
    port = free_port()
    listen = MetricsConfig(listen=f"127.0.0.1:{port}")
    cfg = Config(sources={}, targets={}, pipelines={}, metrics=listen)
    service = MetricsService(cfg, events)
    try:
        base = f"http://127.0.0.1:{port}"
        assert get(base + "/healthz")[0] == 200
        assert get(base + "/readyz")[0] == 503
        assert get(base + "/nothing")[0] == 404
        events.pipeline_started("p")
        batch(events, {("public.t", "insert"): 3})
        code, body = get(base + "/readyz")
        assert code == 200 and json.loads(body)["pipelines"]["p"]["ok"] is True
        code, text = get(base + "/metrics")
        assert code == 200
        names = {f.name for f in text_string_to_metric_families(text)}
        assert {"cdc_sync_rows_applied", "cdc_sync_lag_seconds", "cdc_sync_pipeline_up"} <= names
        with pytest.raises(PermanentError, match="cannot listen"):
            MetricsService(cfg, Events())
    finally:
        service.close()
    events.pipeline_started("q")  # after close: a no-op
    assert value(service.registry, "cdc_sync_pipeline_up", pipeline="q") is None
    with pytest.raises(urllib.error.URLError):
        get(f"http://127.0.0.1:{port}/healthz")  # the listener is closed


def test_start_metrics_without_listen_starts_nothing() -> None:
    assert start_metrics(Config(sources={}, targets={}, pipelines={})) is None
