"""Watch the source's retention in the daemon: warn (log + alert) before changes are lost."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from cdc_sync import logs
from cdc_sync.checkpoint.store import CheckpointStore
from cdc_sync.config.models import Config
from cdc_sync.errors import CdcSyncError
from cdc_sync.runtime.classify import classify
from cdc_sync.runtime.events import EVENTS
from cdc_sync.runtime.stop import StopFlag
from cdc_sync.runtime.wiring import build_source, target_engine
from cdc_sync.sources.health import retention_warnings

EVERY_SECONDS = 60.0


def check_once(config: Config, name: str) -> list[str]:
    """The source's retention warnings for ``name`` at its current lag (catalog reads only)."""
    schema = config.targets[config.pipelines[name].target].state_schema
    engine = target_engine(config, name)
    source = build_source(config, name)
    try:
        with engine.connect() as conn:
            cp = CheckpointStore(name, schema=schema).load(conn)
            conn.rollback()
        lag = None
        if cp is not None and cp.committed_at is not None:
            lag = max(0.0, (datetime.now(UTC) - cp.committed_at).total_seconds())
        return retention_warnings(source.health(), lag)
    except CdcSyncError:
        raise
    except Exception as e:
        raise classify(e, f"pipeline {name}: source health") from e
    finally:
        source.close()
        engine.dispose()


def start_source_watch(config: Config, name: str, stop: StopFlag) -> threading.Thread:
    """Every minute: each warning is logged as ``source_retention_warning`` and reported to
    the alerts (rate-limited there); a failed check is logged and tried again later."""
    log = logs.get().bind(pipeline=name)

    def loop() -> None:
        while not stop.wait(EVERY_SECONDS):
            try:
                warnings = check_once(config, name)
            except CdcSyncError as e:
                log.warning("source_health_failed", error_class=type(e).__name__, error=str(e))
                continue
            for w in warnings:
                log.warning("source_retention_warning", warning=w)
                EVENTS.source_warning(name, w)

    thread = threading.Thread(target=loop, name=f"source-watch-{name}", daemon=True)
    thread.start()
    return thread
