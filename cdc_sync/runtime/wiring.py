"""Build sources, target engines and table maps from the configuration."""

from __future__ import annotations

from collections.abc import Mapping

import psycopg
import sqlalchemy as sa

from cdc_sync.config.models import Config, PostgresSource
from cdc_sync.records import TableId
from cdc_sync.sources.base import Source
from cdc_sync.sources.postgres.source import PostgresSource as PgCapture

APPLICATION_NAME = "cdc-sync"


def target_engine(config: Config, pipeline: str) -> sa.Engine:
    """An engine whose URL holds no secret: libpq gets the DSN only through the creator."""
    target = config.targets[config.pipelines[pipeline].target]
    dsn = target.dsn.get_secret_value()

    def connect() -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            dsn,
            application_name=f"{APPLICATION_NAME}:{pipeline}",
            connect_timeout=10,
            # Detect a dead peer instead of hanging on a half-open socket.
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )

    return sa.create_engine(
        "postgresql+psycopg://", creator=connect, pool_size=2, pool_pre_ping=True
    )


def table_map(config: Config, pipeline: str) -> dict[TableId, TableId]:
    """Source table → target table, as configured (same name when no target is given)."""
    out = {}
    for name, tc in config.pipelines[pipeline].tables.items():
        src = TableId.parse(name)
        out[src] = TableId.parse(tc.target) if tc.target else src
    return out


def build_source(config: Config, pipeline: str) -> Source:
    pc = config.pipelines[pipeline]
    sc = config.sources[pc.source]
    assert isinstance(sc, PostgresSource)
    return PgCapture(
        dsn=sc.dsn.get_secret_value(),
        slot=config.slot_for(pipeline),
        publication=config.publication_for(pipeline),
        tables=list(table_map(config, pipeline)),
        status_interval=sc.status_interval_seconds,
    )


def may_create(config: Config, pipeline: str) -> bool:
    sc = config.sources[config.pipelines[pipeline].source]
    return sc.create_slot


def targets_of(config: Config, pipeline: str) -> Mapping[TableId, TableId]:
    return table_map(config, pipeline)
