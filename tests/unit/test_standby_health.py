"""A daemon without the lease (waiting for it, or having lost it): alive, not ready, not up."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from cdc_sync.runtime.events import Events
from cdc_sync.runtime.health import HealthTracker
from cdc_sync.runtime.metrics import MetricsListener
from tests.unit.test_metrics import Clock, value


def applied(events: Events, lag: float) -> None:
    events.batch_applied(
        "p",
        rows=1,
        transactions=1,
        lag_seconds=lag,
        seconds=0.01,
        position="pg:0/1",
        per_table={("public.t", "insert"): 1},
    )


def test_lease_lost_while_busy_is_not_ready_and_not_up() -> None:
    clock = Clock()
    events, registry = Events(), CollectorRegistry()
    health = HealthTracker(max_lag_seconds=300, alive_within=60, clock=clock)
    metrics = MetricsListener(registry, events)
    events.add(health)
    events.add(metrics)
    events.pipeline_started("p")
    applied(events, 15.05)  # the batch right after a long pause
    assert health.readyz()[0] is True
    assert value(registry, "cdc_sync_pipeline_up", pipeline="p") == 1

    events.standing_by("p")  # lease_lost: another daemon applies now
    ready, detail = health.readyz()
    assert not ready
    assert detail["pipelines"]["p"] == {"ok": False, "state": "standby", "lag_seconds": None}
    assert value(registry, "cdc_sync_pipeline_up", pipeline="p") == 0
    # a batch committed just before the loss is reported late: still no "up", no "ready"
    applied(events, 0.2)
    assert health.readyz()[0] is False
    # the wait for the lease pings alive: healthy all along (the watchdog must not kill it)
    for _ in range(5):
        clock.now += 50
        events.alive("p")
    ok, detail = health.healthz()
    assert ok and detail["pipelines"]["p"]["state"] == "standby"

    events.pipeline_started("p")  # the lease taken back
    assert health.readyz()[0] is True
    assert value(registry, "cdc_sync_pipeline_up", pipeline="p") == 1


def test_fresh_standby_is_healthy_not_ready() -> None:
    health = HealthTracker(max_lag_seconds=300, clock=Clock())
    health.standing_by("p")
    assert health.healthz()[0] is True
    ready, detail = health.readyz()
    assert not ready and detail["pipelines"]["p"]["state"] == "standby"
