"""Alerts: turn pipeline events into failing / failed / recovered / dead_letters notices."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from cdc_sync import logs
from cdc_sync.config.models import AlertsConfig, Config
from cdc_sync.runtime.alert_sinks import Alert, AlertSink, CommandSink, Sender, WebhookSink
from cdc_sync.runtime.events import EVENTS, Listener

# A pipeline that has streamed this long since its last (re)start without a failure is
# healthy again even if nothing was written: otherwise rare blips on an idle pipeline would
# add up, over days, to a "failing" streak.
STABLE_SECONDS = 60.0


class Closeable(Protocol):
    def close(self) -> None: ...


@dataclass
class _Streak:
    """Consecutive failed attempts of one pipeline since it last made progress."""

    started: float  # monotonic
    started_wall: float
    last_failure: float  # monotonic
    attempts: int = 0
    error_class: str = ""
    error: str = ""
    alerted: bool = False  # a "failing" alert went out for this streak


@dataclass
class _Pipeline:
    streak: _Streak | None = None
    running_since: float | None = None  # monotonic, at the last pipeline_started
    dead: Counter[str] = field(default_factory=Counter)


class AlertPolicy(Listener):
    """Decides when an event becomes an alert and hands it to ``offer`` (which must not block).

    Thresholds: a streak of failed attempts alerts once it reaches ``after_attempts`` or has
    lasted ``after_seconds``; ``recovered`` follows an alerted streak at the first applied
    batch (or after ``STABLE_SECONDS`` of streaming). Each (pipeline, kind) is sent at most
    once per ``min_interval_seconds``; a "failing" held back by that interval goes out later
    if the streak lasts, and dead-letter counts accumulate until the next allowed alert.
    """

    def __init__(
        self,
        config: AlertsConfig,
        offer: Callable[[Alert], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._config, self._offer = config, offer
        self._clock, self._wall = clock, wall
        self._lock = threading.Lock()
        self._pipelines: dict[str, _Pipeline] = {}
        self._last_sent: dict[tuple[str, str], float] = {}
        self.closed = False

    def _state(self, pipeline: str) -> _Pipeline:
        return self._pipelines.setdefault(pipeline, _Pipeline())

    def _allowed(self, pipeline: str, kind: str, now: float) -> bool:
        last = self._last_sent.get((pipeline, kind))
        if last is not None and now - last < self._config.min_interval_seconds:
            return False
        self._last_sent[(pipeline, kind)] = now
        return True

    def _send(self, alerts: list[Alert]) -> None:
        if self.closed:
            return
        for alert in alerts:
            self._offer(alert)

    # -- events (pipeline threads) -------------------------------------------------------------

    def pipeline_started(self, pipeline: str) -> None:
        with self._lock:
            self._state(pipeline).running_since = self._clock()

    def retrying(
        self, pipeline: str, *, attempt: int, error_class: str, error: str, sleep: float
    ) -> None:
        # ``attempt`` is tenacity's count over the pipeline's whole life (it never resets
        # while streaming works), so the streak is counted here instead.
        with self._lock:
            now = self._clock()
            state = self._state(pipeline)
            state.running_since = None
            streak = state.streak
            if streak is None:
                streak = state.streak = _Streak(now, self._wall(), now)
            streak.attempts += 1
            streak.last_failure = now
            streak.error_class, streak.error = error_class, error
            alerts = self._failing_due(pipeline, streak, now)
        self._send(alerts)

    def failed(self, pipeline: str, *, error_class: str, error: str) -> None:
        with self._lock:
            now = self._clock()
            state = self._state(pipeline)
            streak, state.streak = state.streak, None
            state.running_since = None
            alerts = []
            if self._allowed(pipeline, "failed", now):
                alerts.append(
                    self._alert(
                        pipeline,
                        "failed",
                        error_class=error_class,
                        message=error,
                        attempt=streak.attempts + 1 if streak else 1,
                        since=streak.started_wall if streak else self._wall(),
                    )
                )
        self._send(alerts)

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
        self._healed(pipeline, stable_only=False)

    def alive(self, pipeline: str) -> None:
        self._healed(pipeline, stable_only=True)

    def source_warning(self, pipeline: str, message: str) -> None:
        with self._lock:
            alerts = []
            if self._allowed(pipeline, "source_warning", self._clock()):
                alerts.append(self._alert(pipeline, "source_warning", message=message))
        self._send(alerts)

    def dead_lettered(self, pipeline: str, table: str, stage: str) -> None:
        # Counted only; ``tick`` sends them so a burst becomes one alert, not one per row.
        with self._lock:
            self._state(pipeline).dead[table] += 1

    def finished(self, pipeline: str, result: str) -> None:
        if result != "failed":  # stopped or caught up while failing: nothing healed
            with self._lock:
                self._state(pipeline).streak = None

    def _healed(self, pipeline: str, *, stable_only: bool) -> None:
        state = self._pipelines.get(pipeline)
        if state is None or state.streak is None:
            return  # the hot path: nothing to decide, no lock
        with self._lock:
            now = self._clock()
            streak = state.streak
            if streak is None:
                return
            if stable_only and (
                state.running_since is None
                or streak.last_failure > state.running_since
                or now - state.running_since < STABLE_SECONDS
            ):
                return
            state.streak = None
            if not streak.alerted:
                return
            # Paired with the "failing" that was sent: not rate limited on its own.
            self._last_sent[(pipeline, "recovered")] = now
            alert = self._alert(
                pipeline,
                "recovered",
                error_class=streak.error_class,
                attempt=streak.attempts,
                since=streak.started_wall,
            )
        self._send([alert])

    # -- the sender thread ---------------------------------------------------------------------

    def tick(self) -> list[Alert]:
        """Alerts that became due without an event: a long attempt passing ``after_seconds``,
        a "failing" that waited for its interval, dead-letter counts."""
        if self.closed:
            return []
        alerts: list[Alert] = []
        with self._lock:
            now = self._clock()
            for name, state in self._pipelines.items():
                if state.streak is not None:
                    alerts += self._failing_due(name, state.streak, now)
                if state.dead and self._allowed(name, "dead_letters", now):
                    counts, state.dead = dict(state.dead), Counter()
                    alerts.append(
                        self._alert(name, "dead_letters", count=sum(counts.values()), tables=counts)
                    )
        return alerts

    # -- helpers (under the lock) --------------------------------------------------------------

    def _failing_due(self, pipeline: str, streak: _Streak, now: float) -> list[Alert]:
        cfg = self._config
        if streak.alerted or streak.attempts == 0:
            return []
        if streak.attempts < cfg.after_attempts and now - streak.started < cfg.after_seconds:
            return []
        if not self._allowed(pipeline, "failing", now):
            return []
        streak.alerted = True
        return [
            self._alert(
                pipeline,
                "failing",
                error_class=streak.error_class,
                message=streak.error,
                attempt=streak.attempts,
                since=streak.started_wall,
            )
        ]

    def _alert(
        self,
        pipeline: str,
        kind: str,
        *,
        error_class: str | None = None,
        message: str | None = None,
        attempt: int | None = None,
        since: float | None = None,
        count: int | None = None,
        tables: Mapping[str, int] | None = None,
    ) -> Alert:
        return Alert(
            pipeline=pipeline,
            kind=kind,
            time=self._wall(),
            error_class=error_class,
            message=message,
            attempt=attempt,
            since=since,
            count=count,
            tables=dict(tables or {}),
        )


class _Running:
    def __init__(self, policy: AlertPolicy, sender: Sender) -> None:
        self.policy, self.sender = policy, sender

    def close(self) -> None:
        # The sender's last tick still flushes waiting dead-letter counts; then the listener
        # goes quiet (the hub has no way to remove it).
        self.sender.close()
        self.policy.closed = True


def sinks_for(config: AlertsConfig) -> list[AlertSink]:
    sinks: list[AlertSink] = []
    if config.webhook is not None:
        sinks.append(WebhookSink(config.webhook.get_secret_value(), config.timeout_seconds))
    if config.command:
        sinks.append(CommandSink(config.command, config.timeout_seconds))
    return sinks


def start_alerts(config: Config) -> Closeable | None:
    """Register the alert listener with ``EVENTS`` and start its sender thread; None when no
    sink is configured. ``close()`` flushes for a few seconds at most and stops the thread."""
    sinks = sinks_for(config.alerts)
    if not sinks:
        return None
    sender = Sender(sinks)
    policy = AlertPolicy(config.alerts, sender.offer)
    sender.start(tick=policy.tick)
    EVENTS.add(policy)
    logs.get().info("alerts_enabled", sinks=[s.name for s in sinks])
    return _Running(policy, sender)
