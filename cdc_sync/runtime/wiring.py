"""Build sources, target engines and table maps from the configuration."""

from __future__ import annotations

from collections.abc import Mapping

import psycopg
import sqlalchemy as sa

from cdc_sync.config.dsn import parse_mysql_dsn
from cdc_sync.config.links import origin_name
from cdc_sync.config.models import Config, MysqlSource, MysqlTarget, PostgresSource
from cdc_sync.records import TableId
from cdc_sync.sources.base import Source
from cdc_sync.sources.postgres.liveness import WatchedConnection

APPLICATION_NAME = "cdc-sync"


# Every MySQL / MariaDB target session: strict mode so nothing is silently truncated or
# zero-dated, UTC so TIMESTAMP values keep their instant. No ANSI_QUOTES: our statements and
# SQLAlchemy's quote identifiers with backticks, and '"' stays a string quote as MySQL users
# expect. utf8mb4 with a binary collation is set by PyMySQL (charset / collation below).
MYSQL_SESSION_SQL = (
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,"
    "ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO', "
    "time_zone = '+00:00'"
)


def _mysql_engine(target: MysqlTarget, pipeline: str) -> sa.Engine:
    """PyMySQL under SQLAlchemy; the password reaches PyMySQL only through the creator."""
    import pymysql  # noqa: PLC0415  (only MySQL targets pay for the import)
    from pymysql.constants import CLIENT  # noqa: PLC0415

    from cdc_sync.sources.mysql.conn import connect as connect_mysql  # noqa: PLC0415

    dsn = parse_mysql_dsn(target.dsn.get_secret_value())

    def connect() -> pymysql.connections.Connection:
        args = {"connect_timeout": 10, "read_timeout": 300, "write_timeout": 300}
        args.update(dsn.connect_args())
        return connect_mysql(
            database=dsn.database,
            charset="utf8mb4",
            collation="utf8mb4_bin",
            autocommit=False,
            init_command=MYSQL_SESSION_SQL,
            program_name=f"{APPLICATION_NAME}:{pipeline}",
            # Row counts are rows *matched*, as SQLAlchemy's MySQL dialect normally asks for
            # (the creator bypasses it): the fenced checkpoint UPDATE must count 1 even when
            # it writes the same values again within one second.
            client_flag=CLIENT.FOUND_ROWS,
            **args,
        )

    return sa.create_engine("mysql+pymysql://", creator=connect, pool_size=2, pool_pre_ping=True)


def target_engine(config: Config, pipeline: str, *, daemon: bool = False) -> sa.Engine:
    """An engine whose URL holds no secret: libpq gets the DSN only through the creator.

    ``daemon``: the running pipeline's own sessions, named ``cdc-sync:<pipeline>``; a
    starting daemon ends its earlier owner's sessions by that name when they sit idle in a
    transaction (``lease.end_stalled_writers``). Every other user (verify, dlq, offsets,
    status, …) is named ``cdc-sync-tool:<pipeline>``, so a daemon (re)start never ends an
    operator's verify or dlq retry that is between two statements of its transaction (the
    marker leads: PostgreSQL cuts names at 63 bytes)."""
    target = config.targets[config.pipelines[pipeline].target]
    if isinstance(target, MysqlTarget):
        return _mysql_engine(target, pipeline)
    dsn = target.dsn.get_secret_value()
    name = f"{APPLICATION_NAME}{'' if daemon else '-tool'}:{pipeline}"

    def connect() -> psycopg.Connection[tuple[object, ...]]:
        # Watched: a dead or silent peer is noticed instead of hanging (see liveness).
        return WatchedConnection.open(dsn, application_name=name)

    return sa.create_engine(
        "postgresql+psycopg://", creator=connect, pool_size=2, pool_pre_ping=True
    )


def accepted_cascades(config: Config, pipeline: str) -> frozenset[TableId]:
    """The source tables whose unlogged foreign-key actions are accepted (``fk_cascades``)."""
    tables = config.pipelines[pipeline].tables
    return frozenset(TableId.parse(t) for t, tc in tables.items() if tc.fk_cascades == "accept")


def table_map(config: Config, pipeline: str) -> dict[TableId, TableId]:
    """Source table → target table, as configured (same name when no target is given)."""
    out = {}
    for name, tc in config.pipelines[pipeline].tables.items():
        src = TableId.parse(name)
        out[src] = TableId.parse(tc.target) if tc.target else src
    return out


def state_schema_of(config: Config, target: str) -> str | None:
    """Where a target keeps the cdc_sync_* tables (MySQL: its DSN's database by default)."""
    tc = config.targets[target]
    if tc.state_schema or not isinstance(tc, MysqlTarget):
        return tc.state_schema
    return parse_mysql_dsn(tc.dsn.get_secret_value()).database


def build_source(config: Config, pipeline: str) -> Source:
    pc = config.pipelines[pipeline]
    sc = config.sources[pc.source]
    signal = TableId.parse(pc.signal_table) if pc.signal_table else None
    role = config.link_role(pipeline)
    # Loop prevention: what the link's other direction applied here is not captured again.
    skip = (origin_name(role.reverse),) if role is not None else ()
    if isinstance(sc, MysqlSource):
        from cdc_sync.sources.mysql.source import MysqlCapture  # noqa: PLC0415

        marker = None
        if role is not None:
            from cdc_sync.sinks.sql.origin import MARKER_TABLE  # noqa: PLC0415

            marker = TableId(state_schema_of(config, pc.source) or "", MARKER_TABLE)
        return MysqlCapture(
            dsn=parse_mysql_dsn(sc.dsn.get_secret_value()),
            server_id=sc.server_id,
            tables=list(table_map(config, pipeline)),
            position_mode=sc.position_mode,
            heartbeat_seconds=sc.heartbeat_seconds,
            signal_table=signal,
            skip_origins=frozenset(skip),
            marker_table=marker,
            cascades_accepted=accepted_cascades(config, pipeline),
        )
    assert isinstance(sc, PostgresSource)
    # Each source kind imports its own capture (as MySQL above): start-up time only.
    from cdc_sync.sources.postgres.source import PostgresSource as PgCapture  # noqa: PLC0415

    return PgCapture(
        dsn=sc.dsn.get_secret_value(),
        slot=config.slot_for(pipeline),
        publication=config.publication_for(pipeline),
        tables=list(table_map(config, pipeline)),
        status_interval=sc.status_interval_seconds,
        signal_table=signal,
        heartbeat_seconds=sc.heartbeat_seconds,
        skip_origins=skip,
        # As `run` decides (prepare(create=...)): `check` must refuse what a start refuses.
        may_create=may_create(config, pipeline),
    )


def may_create(config: Config, pipeline: str) -> bool:
    sc = config.sources[config.pipelines[pipeline].source]
    return sc.create_slot if isinstance(sc, PostgresSource) else True


def targets_of(config: Config, pipeline: str) -> Mapping[TableId, TableId]:
    return table_map(config, pipeline)
