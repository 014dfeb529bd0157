"""Set-up steps of one pipeline run: source identity, first checkpoint, link parts, re-snapshots."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Engine

from cdc_sync.audit.conflicts import ConflictStore
from cdc_sync.checkpoint.snapshots import RESNAPSHOT, SnapshotStore, SnapshotTask
from cdc_sync.checkpoint.store import Checkpoint, CheckpointStore
from cdc_sync.config.links import origin_name
from cdc_sync.config.models import Config, MysqlSource, PostgresSource
from cdc_sync.errors import PermanentError
from cdc_sync.records import TableId, TableSchema
from cdc_sync.runtime.link import LinkApplier, require_full_images
from cdc_sync.runtime.link_clock import Clock, CurrentTimes
from cdc_sync.runtime.link_stamp import Stamper
from cdc_sync.runtime.pipeline import PipelineLoop
from cdc_sync.runtime.resnapshot import Resnapshot
from cdc_sync.runtime.source_identity import check_source_identity
from cdc_sync.runtime.wiring import table_map, target_engine
from cdc_sync.sinks.sql.origin import OriginTag
from cdc_sync.sinks.sql.sink import is_mysql
from cdc_sync.sources.base import Source
from cdc_sync.state.migrate import upgrade


def resnapshot(
    *,
    engine: Engine,
    source: Source,
    store: SnapshotStore,
    schemas: Mapping[TableId, TableSchema],
    loop: PipelineLoop,
    log: Any,
    config: Config,
    name: str,
) -> Resnapshot:
    """Requests are polled on a connection of their own: the loop's belongs to the writer."""
    pc = config.pipelines[name]
    assert pc.signal_table is not None

    def poll() -> list[SnapshotTask]:
        with engine.connect() as c:
            return store.tasks(c, RESNAPSHOT, active_only=True)

    return Resnapshot(
        pipeline=name,
        source=source,
        signal_table=TableId.parse(pc.signal_table),
        schemas=schemas,
        store=store,
        poll=poll,
        chunk_rows=pc.snapshot_chunk_rows,
        emit=loop.feed_copied,
        in_tx=loop.in_open_transaction,
        log=log,
    )


def link_parts(
    config: Config, name: str, conn: Connection, log: Any
) -> tuple[LinkApplier | None, OriginTag | None]:
    """A link direction tags what it writes (loop prevention) and checks for conflicts."""
    role = config.link_role(name)
    if role is None:
        return None, None
    pc = config.pipelines[name]
    sc = config.sources[pc.source]
    if isinstance(sc, PostgresSource):
        require_full_images(sc.dsn.get_secret_value(), list(table_map(config, name)))
    schema = config.targets[pc.target].state_schema
    tag = OriginTag(origin_name(name), schema)
    conn.commit()
    tag.ensure(conn)
    conn.commit()
    times = None
    if any(t.conflict.rule == "last_write_wins" for t in role.tables.values()):
        times = CurrentTimes(Clock(role.link, schema), origin_name(name), role.to_side)
        if not is_mysql(conn):
            on = conn.exec_driver_sql("SHOW track_commit_timestamp").scalar()
            conn.commit()
            if on != "on":
                raise PermanentError(
                    f"link {role.link}: last_write_wins needs the commit time of rows on "
                    f"{role.to_side}; fix: ALTER SYSTEM SET track_commit_timestamp = on; "
                    "then restart that PostgreSQL server"
                )
    return LinkApplier(name, role, ConflictStore(schema), log, times), tag


def link_stamper(config: Config, name: str) -> Stamper | None:
    """A link direction reading a MySQL side stamps local commit times for the other
    direction's last_write_wins decisions (PostgreSQL keeps them itself)."""
    role = config.link_role(name)
    if role is None or not any(t.conflict.rule == "last_write_wins" for t in role.tables.values()):
        return None
    pc = config.pipelines[name]
    if not isinstance(config.sources[pc.source], MysqlSource):
        return None
    schema = config.targets[pc.source].state_schema
    engine = target_engine(config, role.reverse)
    # The stamps go into the clock table on this direction's source side, whose tables the
    # other direction creates: at a link's first start that one may not have run yet.
    with engine.connect() as conn:
        upgrade(conn, schema=schema)
        conn.commit()
    tables = {TableId.parse(t) for t in role.tables}
    return Stamper(engine, Clock(role.link, schema), role.from_side, tables)


def same_source(
    conn: Connection, checkpoints: CheckpointStore, source: Source, cp: Checkpoint | None
) -> None:
    """Refuse to resume against another server or a lost slot, before anything is created
    (a slot recreated here would start at today's WAL end and hold WAL for nothing)."""
    current = source.identity()
    before = checkpoints.set_source_id(conn, current)
    if cp is not None:
        check_source_identity(before, current)
        probe = getattr(source, "checkpoint_problems", None)
        problems: list[str] = probe(cp.position) if probe is not None else []
        if problems:
            raise PermanentError("; ".join(problems))
    conn.commit()


def initial_checkpoint(
    conn: Connection, checkpoints: CheckpointStore, source: Source, token: int
) -> Checkpoint | None:
    """A new pipeline on a source without a server-side slot (MySQL / MariaDB) starts at the
    source's current head. That start is stored before streaming: otherwise a crash before
    the first commit would restart at a later head and lose what was written in between.
    A PostgreSQL slot keeps its start point itself (``start_position`` is absent there)."""
    start = getattr(source, "start_position", None)
    if start is None:
        return None
    position = start()
    checkpoints.save(conn, position, None, None, token)
    conn.commit()
    return checkpoints.load(conn)
