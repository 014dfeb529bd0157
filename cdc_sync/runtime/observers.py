"""Start what watches the pipelines (metrics, alerts, service manager, retention) for `run`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Protocol

from cdc_sync.config.models import Config
from cdc_sync.runtime.events import EVENTS
from cdc_sync.runtime.retention import start_retention
from cdc_sync.runtime.source_watch import start_source_watch
from cdc_sync.runtime.stop import StopFlag


class Closeable(Protocol):
    def close(self) -> None: ...


@contextlib.contextmanager
def observing(
    config: Config, names: list[str], stop: StopFlag, daemon: bool
) -> Iterator[list[Closeable]]:
    """Observers for the duration of a `run`; closed (alerts flushed) when it ends.

    ``daemon``: a long-running `run` (not `--until-caught-up`), which also purges old audit
    rows on a schedule."""
    started: list[Closeable] = []
    try:
        for got in _start(config, stop):
            if got is not None:
                started.append(got)
        if daemon:
            for name in names:
                start_retention(config, name, stop)
                start_source_watch(config, name, stop)
        yield started
    finally:
        for c in reversed(started):
            with contextlib.suppress(Exception):
                c.close()
        EVENTS.clear()


def _start(config: Config, stop: StopFlag) -> Iterator[Closeable | None]:
    """Each observer that is configured; imported only then (prometheus-client, the HTTP
    server, urllib), which keeps a plain `run` from paying for them at start. One at a time:
    those started before one that fails (a port in use) are closed again."""
    if config.metrics.listen is not None:
        from cdc_sync.runtime.metrics import start_metrics  # noqa: PLC0415

        yield start_metrics(config)
    if config.alerts.webhook is not None or config.alerts.command is not None:
        from cdc_sync.runtime.alerts import start_alerts  # noqa: PLC0415

        yield start_alerts(config)
    if os.environ.get("NOTIFY_SOCKET"):  # systemd Type=notify
        from cdc_sync.runtime.sdnotify import start_notify  # noqa: PLC0415

        yield start_notify(stop)
