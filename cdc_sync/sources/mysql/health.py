"""Binlog retention state and the server's identity (catalog connection)."""

from __future__ import annotations

from typing import Any

from cdc_sync.sources.base import SourceHealth
from cdc_sync.sources.mysql.catalog import ServerInfo, query, variables

_DAY = 86_400.0


def _float(v: str | None) -> float:
    try:
        return float(v) if v is not None else 0.0
    except ValueError:
        return 0.0


def retention_seconds(vars_: dict[str, str]) -> float | None:
    """How long binlogs are kept, None when they never expire by age.

    MySQL 8 uses binlog_expire_logs_seconds (expire_logs_days is deprecated; when both are
    set the seconds win); MariaDB >= 10.6 keeps the two in sync as aliases.
    """
    seconds = _float(vars_.get("binlog_expire_logs_seconds"))
    if seconds > 0:
        return seconds
    days = _float(vars_.get("expire_logs_days"))
    return days * _DAY if days > 0 else None


def read_health(conn: Any) -> SourceHealth:
    v = variables(conn, "binlog_expire_logs_seconds", "expire_logs_days")
    logs = query(conn, "SHOW BINARY LOGS")
    warnings = () if logs else ("binary logging is off on the source (log_bin)",)
    return SourceHealth(
        "mysql",
        binlog_oldest_file=str(logs[0][0]) if logs else None,
        binlog_retention_seconds=retention_seconds(v),
        # Neither server tells a binlog's age over SQL (only its first event, through the
        # replication protocol): left unknown rather than guessed.
        oldest_binlog_age_seconds=None,
        warnings=warnings,
    )


# This server (``mysql:<hostname>:<port>:<datadir>``; MariaDB has no server UUID): the same
# text from a target connection means the pipeline would write into its own source. Also
# run on a MySQL / MariaDB target (runtime.self_loop): one definition for both sides.
INSTANCE_SQL = "SELECT CONCAT('mysql:', @@hostname, ':', @@port, ':', @@datadir)"


def instance(conn: Any) -> str:
    return str(query(conn, INSTANCE_SQL)[0][0])


def identity(conn: Any, info: ServerInfo) -> str:
    """``mysql:<server_uuid>`` (generated on first start, new for a rebuilt server or
    another replica). MariaDB has no server UUID: ``mariadb:server_id=<n>``, weaker; there a
    replaced server is mostly caught by the checkpoint's binlog file or GTIDs being absent."""
    if info.mariadb:
        return f"mariadb:server_id={info.server_id}"
    rows = query(conn, "SELECT @@server_uuid")
    return f"mysql:{rows[0][0]}"
