"""Audit retention in the daemon: an hourly purge per pipeline, on a connection of its own."""

from __future__ import annotations

import threading

from cdc_sync import logs
from cdc_sync.audit.retention import purge
from cdc_sync.config.models import Config
from cdc_sync.errors import CdcSyncError
from cdc_sync.runtime.classify import classify
from cdc_sync.runtime.stop import StopFlag
from cdc_sync.runtime.wiring import target_engine

EVERY_SECONDS = 3600.0
FIRST_AFTER_SECONDS = 60.0  # not during start-up, when a snapshot or backlog is busiest


def purge_once(config: Config, name: str) -> int:
    """One full purge of ``name``'s audit rows past its retention; 0 when none is set."""
    days = config.pipelines[name].audit_retention_days
    if days is None:
        return 0
    schema = config.targets[config.pipelines[name].target].state_schema
    engine = target_engine(config, name)
    try:
        with engine.connect() as conn:
            return purge(conn, name, days, schema)
    except CdcSyncError:
        raise
    except Exception as e:
        raise classify(e, f"pipeline {name}: audit retention") from e
    finally:
        engine.dispose()


def start_retention(config: Config, name: str, stop: StopFlag) -> threading.Thread | None:
    """Purge every hour while the daemon runs; a failure is logged, the stream goes on."""
    if config.pipelines[name].audit_retention_days is None:
        return None
    log = logs.get().bind(pipeline=name)

    def loop() -> None:
        wait = FIRST_AFTER_SECONDS
        while not stop.wait(wait):
            wait = EVERY_SECONDS
            try:
                n = purge_once(config, name)
            except CdcSyncError as e:
                log.warning("audit_retention_failed", error_class=type(e).__name__, error=str(e))
                continue
            if n:
                log.info("audit_retention_purged", rows=n)

    thread = threading.Thread(target=loop, name=f"retention-{name}", daemon=True)
    thread.start()
    return thread
