"""The oldest binlog point a MySQL / MariaDB server still has (``offsets reset --to earliest``)."""

from __future__ import annotations

from typing import Any

import pymysql

from cdc_sync.config.dsn import MysqlDsn
from cdc_sync.errors import PermanentError
from cdc_sync.records import BinlogPosition
from cdc_sync.sources.mysql.admin import gtid_at
from cdc_sync.sources.mysql.catalog import ServerInfo, query, server_info
from cdc_sync.sources.mysql.conn import connect as connect_mysql
from cdc_sync.sources.mysql.errors import classify

# A binlog file's first event starts after its 4-byte magic number.
_FIRST_EVENT = 4


def connect(dsn: MysqlDsn) -> tuple[Any, ServerInfo]:
    try:
        conn = connect_mysql(
            **{"connect_timeout": 10, "read_timeout": 60, **dsn.connect_args()},
            charset="utf8mb4",
            autocommit=True,
            program_name="cdc-sync",
        )
        return conn, server_info(conn)
    except pymysql.err.MySQLError as e:
        raise classify(e, "cannot connect to the source server") from e


def by_gtid(info: ServerInfo, mode: str) -> bool:
    """Whether the pipeline positions by GTID (as MysqlCapture decides it)."""
    return mode != "file" and info.gtid_on


def earliest(conn: Any, info: ServerInfo, gtid: bool) -> BinlogPosition:
    """The start of the oldest binlog file and, with GTIDs, the GTID state reached there
    (MariaDB: BINLOG_GTID_POS; MySQL: @@gtid_purged, what is no longer in any binlog)."""
    try:
        logs = [str(r[0]) for r in query(conn, "SHOW BINARY LOGS")]
        if not logs:
            raise PermanentError("binary logging is off on the source (log_bin)")
        state = ""
        if gtid and info.mariadb:
            state = gtid_at(conn, logs[0], _FIRST_EVENT)
        elif gtid:
            rows = query(conn, "SELECT @@GLOBAL.gtid_purged")
            state = str(rows[0][0] or "").replace("\n", "") if rows else ""
    except pymysql.err.MySQLError as e:
        raise classify(e, "cannot list the source's binlogs") from e
    return BinlogPosition(logs[0], _FIRST_EVENT, state)
