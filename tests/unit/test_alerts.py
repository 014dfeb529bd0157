"""Alert policy (thresholds, rate limits, recovery, dead letters) and delivery (HTTP, command)."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from cdc_sync.config.models import AlertsConfig, Config
from cdc_sync.runtime.alert_sinks import Alert, CommandSink, DeliveryError, Sender, WebhookSink
from cdc_sync.runtime.alerts import STABLE_SECONDS, AlertPolicy, start_alerts
from cdc_sync.runtime.events import EVENTS

TOKEN_PATH = "/hook/T0KEN-secret"
APPEND_SCRIPT = """import sys
with open(sys.argv[1], "ab") as f:
    f.write(sys.stdin.buffer.read() + b"\\n")
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Hook:
    """A local webhook: records JSON bodies, answers ``status``."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.status = 200
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers["Content-Length"])
                hook.bodies.append(json.loads(self.rfile.read(n)))
                self.send_response(hook.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{TOKEN_PATH}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


def _policy(**cfg: Any) -> tuple[AlertPolicy, list[Alert], Clock]:
    clock, sent = Clock(), list[Alert]()
    settings: dict[str, Any] = {"webhook": SecretStr("http://x"), "min_interval_seconds": 0}
    policy = AlertPolicy(
        AlertsConfig(**(settings | cfg)), sent.append, clock=clock, wall=lambda: clock.now
    )
    return policy, sent, clock


def _fail(policy: AlertPolicy, pipeline: str = "p", attempt: int = 1) -> None:
    policy.retrying(
        pipeline, attempt=attempt, error_class="TransientError", error="target: refused", sleep=1
    )


def _batch(policy: AlertPolicy, pipeline: str = "p") -> None:
    policy.batch_applied(
        pipeline,
        rows=1,
        transactions=1,
        lag_seconds=0,
        seconds=0,
        position="0/1",
        per_table={},
    )


def test_failing_after_attempts_once_per_streak() -> None:
    policy, sent, _clock = _policy(after_attempts=3)
    for _ in range(2):
        _fail(policy)
    assert sent == []
    _fail(policy)
    _fail(policy)
    assert [(a.kind, a.attempt, a.error_class) for a in sent] == [("failing", 3, "TransientError")]
    assert sent[0].since == 1000.0
    assert "attempt 3" in sent[0].text(sent[0].message)


def test_failing_after_seconds_even_without_a_new_event() -> None:
    policy, sent, clock = _policy(after_attempts=100, after_seconds=30)
    _fail(policy)
    clock.now += 29
    assert policy.tick() == []
    clock.now += 2
    due = policy.tick()  # a hanging attempt still alerts
    assert [(a.kind, a.attempt) for a in due] == [("failing", 1)]
    _fail(policy)
    assert sent == [] and policy.tick() == []


def test_recovered_only_after_an_alert() -> None:
    policy, sent, _clock = _policy(after_attempts=2)
    _fail(policy)
    _batch(policy)  # healed before the threshold: silence
    _fail(policy)
    assert sent == []
    _fail(policy)
    _batch(policy)
    _batch(policy)
    assert [(a.kind, a.attempt) for a in sent] == [("failing", 2), ("recovered", 2)]
    assert "recovered after 2 failed attempts" in sent[1].text(None)


def test_stable_streaming_heals_without_batches() -> None:
    policy, sent, clock = _policy(after_attempts=1)
    _fail(policy)
    policy.pipeline_started("p")
    policy.alive("p")
    clock.now += STABLE_SECONDS - 1
    policy.alive("p")
    assert [a.kind for a in sent] == ["failing"]
    clock.now += 2
    policy.alive("p")
    assert [a.kind for a in sent] == ["failing", "recovered"]


def test_restart_that_fails_again_is_the_same_streak() -> None:
    policy, sent, clock = _policy(after_attempts=3)
    for _ in range(2):
        _fail(policy)
        policy.pipeline_started("p")
        clock.now += STABLE_SECONDS / 2
        policy.alive("p")
    _fail(policy)
    assert [(a.kind, a.attempt) for a in sent] == [("failing", 3)]


def test_rate_limit_per_pipeline_and_kind() -> None:
    policy, sent, clock = _policy(after_attempts=1, min_interval_seconds=60)
    _fail(policy, "a")
    _fail(policy, "b")  # another pipeline has its own budget
    _batch(policy, "a")
    clock.now += 10
    _fail(policy, "a")  # a new streak within the interval: held back
    assert [(a.pipeline, a.kind) for a in sent] == [
        ("a", "failing"),
        ("b", "failing"),
        ("a", "recovered"),
    ]
    clock.now += 51
    due = policy.tick()  # still failing once the interval has passed: sent now
    assert [(a.pipeline, a.kind, a.since) for a in due] == [("a", "failing", 1010.0)]


def test_held_back_streak_that_heals_sends_nothing() -> None:
    policy, sent, clock = _policy(after_attempts=1, min_interval_seconds=60)
    _fail(policy)
    _batch(policy)
    _fail(policy)
    _batch(policy)  # its failing was never sent, so no recovered either
    clock.now += 100
    assert [a.kind for a in sent] == ["failing", "recovered"] and policy.tick() == []


def test_permanent_failure() -> None:
    policy, sent, clock = _policy(after_attempts=5)
    _fail(policy)
    clock.now += 3
    policy.failed("p", error_class="PermanentError", error="target: permission denied")
    policy.finished("p", "failed")
    _batch(policy)
    (alert,) = sent
    assert (alert.kind, alert.error_class, alert.attempt, alert.since) == (
        "failed",
        "PermanentError",
        2,
        1000.0,
    )
    assert alert.payload()["message"] == "target: permission denied"


def test_stopped_while_failing_is_not_a_recovery() -> None:
    policy, sent, _clock = _policy(after_attempts=1)
    _fail(policy)
    policy.finished("p", "stopped")
    _batch(policy)
    assert [a.kind for a in sent] == ["failing"]


def test_dead_letters_are_counted_between_alerts() -> None:
    policy, sent, clock = _policy(min_interval_seconds=60)
    for table in ("public.a", "public.a", "public.b"):
        policy.dead_lettered("p", table, "target")
    assert sent == []
    (first,) = policy.tick()
    assert (first.kind, first.count, dict(first.tables)) == (
        "dead_letters",
        3,
        {"public.a": 2, "public.b": 1},
    )
    assert first.text(None) == (
        "cdc-sync: pipeline p dead-lettered rows: 3 rows (public.a: 2, public.b: 1)"
    )
    policy.dead_lettered("p", "public.a", "rule")
    clock.now += 30
    assert policy.tick() == []
    policy.dead_lettered("p", "public.a", "rule")
    clock.now += 31
    (second,) = policy.tick()
    assert second.count == 2


def test_payload_shape_and_scrubbing() -> None:
    alert = Alert(
        pipeline="p",
        kind="failing",
        time=0.0,
        error_class="TransientError",
        message="target: postgresql://u:hunter2@db/x refused " + "x" * 2000,
        attempt=3,
        since=0.0,
    )
    body = json.loads(alert.to_json())
    assert set(body) == {
        "text",
        "pipeline",
        "kind",
        "error_class",
        "message",
        "attempt",
        "since",
        "count",
        "tables",
        "time",
    }
    assert body["since"] == "1970-01-01T00:00:00Z"
    assert "hunter2" not in body["text"] and "hunter2" not in body["message"]
    assert len(body["message"]) <= 1000


def test_webhook_delivery_and_safe_failure(hook: Hook) -> None:
    sender = Sender([WebhookSink(hook.url, timeout=5)])
    alert = Alert(pipeline="p", kind="failing", time=0.0, error_class="E", message="m", attempt=1)
    sender.deliver(alert)
    assert hook.bodies[0]["kind"] == "failing" and hook.bodies[0]["text"].startswith("cdc-sync")
    hook.status = 500
    with capture_logs() as logs:
        sender.deliver(alert)
    assert (sender.sent, sender.failed) == (1, 1)
    assert logs[-1]["event"] == "alert_delivery_failed" and logs[-1]["error"] == "HTTP 500"
    assert "T0KEN" not in repr(logs)


def test_unreachable_webhook_does_not_leak_the_url() -> None:
    sink = WebhookSink("http://127.0.0.1:9/hook/T0KEN", timeout=2)
    with pytest.raises(DeliveryError) as ei:
        sink.send(b"{}")
    assert "T0KEN" not in str(ei.value) and ei.value.__cause__ is None


def test_command_sink(tmp_path: Path) -> None:
    out = tmp_path / "alerts.jsonl"
    script = tmp_path / "append.py"
    script.write_text(APPEND_SCRIPT)
    CommandSink(f"{sys.executable} {script} {out}", timeout=10).send(b'{"kind": "failing"}')
    assert json.loads(out.read_text()) == {"kind": "failing"}
    with pytest.raises(DeliveryError, match="exit status 3"):
        CommandSink(f"{sys.executable} -c 'import sys; sys.exit(3)'", timeout=10).send(b"{}")
    with pytest.raises(DeliveryError, match="timed out"):
        CommandSink(f"{sys.executable} -c 'import time; time.sleep(5)'", timeout=0.2).send(b"{}")
    with pytest.raises(DeliveryError, match="FileNotFoundError"):
        CommandSink(str(tmp_path / "missing"), timeout=1).send(b"{}")


class _Blocking:
    name = "blocking"

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.got: list[bytes] = []

    def send(self, body: bytes) -> None:
        self.entered.set()
        self.release.wait(10)
        self.got.append(body)


def test_full_queue_drops_and_counts_without_blocking() -> None:
    sink = _Blocking()
    sender = Sender([sink], queue_size=2)
    sender.start()
    alert = Alert(pipeline="p", kind="failing", time=0.0)
    sender.offer(alert)
    assert sink.entered.wait(5)  # the thread is stuck in a delivery
    started = time.monotonic()
    for _ in range(5):
        sender.offer(alert)
    assert time.monotonic() - started < 0.5
    assert sender.dropped == 3
    sink.release.set()
    sender.close()
    assert len(sink.got) == 3 and sender.sent == 3


def test_close_gives_up_on_a_hung_sink() -> None:
    sink = _Blocking()
    sender = Sender([sink])
    sender.start()
    sender.offer(Alert(pipeline="p", kind="failing", time=0.0))
    assert sink.entered.wait(5)
    started = time.monotonic()
    sender.close(timeout=0.3)
    assert time.monotonic() - started < 1
    sink.release.set()


def _config(alerts: dict[str, Any]) -> Config:
    return Config.model_validate(
        {
            "sources": {"s": {"type": "postgres", "dsn": "postgresql://u@h/db"}},
            "targets": {"t": {"type": "postgres", "dsn": "postgresql://u@h/db"}},
            "pipelines": {"p": {"source": "s", "target": "t", "tables": {"public.a": {}}}},
            "alerts": alerts,
        }
    )


def test_start_alerts_none_without_a_sink() -> None:
    assert start_alerts(_config({})) is None


def test_start_alerts_through_the_event_hub(hook: Hook) -> None:
    running = start_alerts(_config({"webhook": hook.url, "after_attempts": 2}))
    assert running is not None
    try:
        for n in (1, 2):
            EVENTS.retrying("p", attempt=n, error_class="TransientError", error="down", sleep=0)
        EVENTS.dead_lettered("p", "public.a", "target")
        deadline = time.monotonic() + 10
        while len(hook.bodies) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        running.close()
    assert sorted(b["kind"] for b in hook.bodies) == ["dead_letters", "failing"]
    EVENTS.retrying("p", attempt=3, error_class="TransientError", error="down", sleep=0)
    EVENTS.batch_applied(
        "p", rows=1, transactions=1, lag_seconds=0, seconds=0, position="0/1", per_table={}
    )
    time.sleep(0.2)
    assert len(hook.bodies) == 2  # closed: quiet
