"""The binlog connection: a BinLogStreamReader set up for resuming, heartbeats and our tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import GtidEvent, HeartbeatLogEvent, QueryEvent, RotateEvent

from cdc_sync.config.dsn import MysqlDsn
from cdc_sync.errors import TransientError
from cdc_sync.records import BinlogPosition, TableId
from cdc_sync.sources.mysql import events, tablemap, wire
from cdc_sync.sources.mysql.conn import connect as connect_mysql

EVENTS = (
    QueryEvent, RotateEvent, GtidEvent, HeartbeatLogEvent, tablemap.CachedTableMapEvent,
    events.Xid, events.MariaGtid, events.WriteRows, events.UpdateRows, events.DeleteRows,
    events.XaPrepare,
)  # fmt: skip
IDLE_SECONDS = 0.5
"""The server heartbeat period is capped here: when the binlog is quiet a heartbeat arrives at
least this often, so the stream yields Idle / Heartbeat instead of blocking in a read."""


def _connector(dsn: MysqlDsn) -> Any:
    """pymysql.connect for the reader, refusing the library's silent stream reconnect.

    After a lost connection the library reconnects at the last event's position, which may
    be inside a transaction (or, with GTIDs, replays from the start state): we raise a
    TransientError instead, and the runtime restarts from the checkpoint.
    """
    streams = 0

    def connect(**kw: Any) -> pymysql.connections.Connection:
        nonlocal streams
        if "db" in kw:  # the library still passes PyMySQL's deprecated name (a warning)
            kw["database"] = kw.pop("db")
        if kw.get("database") is not None:  # the control connection (information_schema)
            return connect_mysql(**kw)
        streams += 1
        if streams > 1:
            raise TransientError("binlog connection lost; resuming from the checkpoint")
        return wire.StreamConnection(**kw)

    return connect


def open_reader(
    dsn: MysqlDsn,
    *,
    server_id: int,
    tables: Sequence[TableId],
    heartbeat_seconds: float,
    start: BinlogPosition,
    by_gtid: bool,
    mariadb: bool,
) -> Any:
    """A reader positioned after ``start``: by GTID state when ``by_gtid``, else file:pos."""
    tablemap.install()
    hb = max(0.05, min(heartbeat_seconds, IDLE_SECONDS))
    settings: dict[str, Any] = {
        "connect_timeout": 10,
        **dsn.connect_args(),
        # A dead peer shows as a read timeout: heartbeats arrive every `hb` seconds otherwise.
        "read_timeout": max(30, int(hb * 20)),
    }
    kw: dict[str, Any] = {}
    if by_gtid:
        # ARCHITECTURE: with is_mariadb=True 1.0.17 ignores log_file/log_pos, so GTID only.
        kw = {"auto_position": start.gtid, "is_mariadb": mariadb}
    else:
        kw = {"log_file": start.file, "log_pos": start.pos, "resume_stream": True}
    return BinLogStreamReader(
        connection_settings=settings,
        server_id=server_id,
        blocking=True,
        only_events=list(EVENTS),
        only_schemas=sorted({t.schema for t in tables}),
        only_tables=sorted({t.name for t in tables}),
        slave_heartbeat=hb,
        pymysql_wrapper=_connector(dsn),
        enable_logging=False,
        **kw,
    )
