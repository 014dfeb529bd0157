"""Server prerequisites (with the exact fix), the binlog head, and checkpoint availability."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pymysql

from cdc_sync.errors import PermanentError
from cdc_sync.records import BinlogPosition, TableId
from cdc_sync.sources.mysql.catalog import ServerInfo, query, variables
from cdc_sync.sources.mysql.errors import error_code
from cdc_sync.sources.mysql.fetch import ident
from cdc_sync.sources.mysql.gtids import MariaGtidState

_GLOBAL_GRANT = re.compile(r"^GRANT (.+?) ON \*\.\* TO ", re.IGNORECASE)
_NO_PRIVILEGE = (1227, 1142, 1143)


def _master_status(conn: Any) -> tuple[Any, ...] | None:
    try:
        rows = query(conn, "SHOW MASTER STATUS")
    except pymysql.err.ProgrammingError:  # MySQL 8.4 renamed it
        rows = query(conn, "SHOW BINARY LOG STATUS")
    return rows[0] if rows else None


def _no_binlog() -> PermanentError:
    return PermanentError(
        "binary logging is off on the source (log_bin); fix: in my.cnf set "
        "log_bin = mysql-bin and a unique server_id, then restart the server"
    )


def gtid_at(conn: Any, file: str, pos: int) -> str:
    rows = query(conn, "SELECT BINLOG_GTID_POS(%s, %s)", (file, pos))
    return str(rows[0][0]) if rows and rows[0][0] is not None else ""


def head(conn: Any, info: ServerInfo, by_gtid: bool) -> BinlogPosition:
    """SHOW MASTER STATUS file:pos and, with GTIDs, the GTID state at exactly that point."""
    row = _master_status(conn)
    if row is None:
        raise _no_binlog()
    file, pos = str(row[0]), int(row[1])
    gtid = ""
    if by_gtid and info.mariadb:
        gtid = gtid_at(conn, file, pos)
    elif by_gtid:
        gtid = str(row[4] or "").replace("\n", "") if len(row) > 4 else ""
    return BinlogPosition(file, pos, gtid)


def checkpoint_problems(
    conn: Any, info: ServerInfo, pos: BinlogPosition, by_gtid: bool
) -> list[str]:
    """Whether the binlog (file, or GTIDs) after ``pos`` is still on the server, and ``pos``
    is one this server wrote (not past its head: a replaced server under the same DSN)."""
    rows = query(conn, "SHOW BINARY LOGS")
    logs = [str(r[0]) for r in rows]
    sizes = {str(r[0]): int(r[1]) for r in rows}
    if not logs:
        return [str(_no_binlog())]
    if by_gtid and pos.gtid and info.mariadb:
        oldest = gtid_at(conn, logs[0], 4)
        missing = MariaGtidState(pos.gtid).missing_from(MariaGtidState(oldest))
        if missing:
            return [
                f"the checkpoint's GTID state {pos.gtid} is older than the oldest binlog "
                f"{logs[0]} (which starts after {oldest}; purged for {', '.join(missing)})"
            ]
        head = MariaGtidState(str(query(conn, "SELECT @@GLOBAL.gtid_binlog_pos")[0][0] or ""))
        ahead = MariaGtidState(pos.gtid).ahead_of(head)
        if ahead:
            return [_ahead(f"GTID state {pos.gtid}", head.text() or "empty", ahead)]
        return []
    if by_gtid and pos.gtid:
        rows = query(conn, "SELECT GTID_SUBSET(@@GLOBAL.gtid_purged, %s)", (pos.gtid,))
        if rows and not int(rows[0][0]):
            return [f"GTIDs after the checkpoint {pos.gtid} were purged (@@gtid_purged)"]
        rows = query(conn, "SELECT GTID_SUBSET(%s, @@GLOBAL.gtid_executed)", (pos.gtid,))
        if rows and not int(rows[0][0]):
            return [_ahead(f"GTID set {pos.gtid}", "@@gtid_executed", ["GTIDs"])]
        return []
    if pos.file not in logs:
        return [f"binlog file {pos.file} is no longer on the server (oldest is {logs[0]})"]
    if pos.pos > sizes[pos.file]:
        return [_ahead(f"position {pos.file}:{pos.pos}", f"{sizes[pos.file]} bytes", ["file"])]
    return []


# Events that are never inside a transaction (MariaDB and MySQL >= 5.7 open every transaction,
# DDL included, with a Gtid / Anonymous_Gtid event): a position to resume from must be at one
# of them or at a file's end. Elsewhere, reading starts with half a transaction.
_BOUNDARY_EVENTS = frozenset(
    {
        "Gtid", "Anonymous_Gtid", "Format_desc", "Rotate", "Stop", "Gtid_list",
        "Binlog_checkpoint", "Previous_gtids", "Start_encryption",
    }
)  # fmt: skip
_ER_WRONG_OFFSET = 1220  # "Error when executing command SHOW BINLOG EVENTS: Wrong offset …"
_LOOK_AHEAD = 1000  # events read to name the next transaction's start


def boundary_problem(conn: Any, pos: BinlogPosition) -> str | None:
    """Why ``pos`` is not a transaction boundary (the start of an event outside any
    transaction, or a file's end), naming the next boundary when it is near; None if it is."""
    where = f"{pos.file}:{pos.pos}"
    logs = [str(r[0]) for r in query(conn, "SHOW BINARY LOGS")]
    if pos.file not in logs:
        return f"binlog file {pos.file} is not on the server (oldest: {logs[0] if logs else None})"
    try:
        rows = query(
            conn, "SHOW BINLOG EVENTS IN %s FROM %s LIMIT %s", (pos.file, pos.pos, _LOOK_AHEAD)
        )
    except pymysql.err.MySQLError as e:
        if error_code(e) != _ER_WRONG_OFFSET:
            raise
        return (
            f"{where} is not the start of an event in that binlog file: give the position of "
            "a Gtid event (SHOW BINLOG EVENTS), a GTID set or a time"
        )
    if not rows or str(rows[0][2]) in _BOUNDARY_EVENTS:
        return None
    nxt = next((r for r in rows if str(r[2]) in _BOUNDARY_EVENTS), None)
    hint = f"; the next transaction starts at {pos.file}:{nxt[1]}" if nxt is not None else ""
    return (
        f"{where} is inside a transaction (a {rows[0][2]} event): resuming there would skip "
        f"the rest of that transaction{hint}; give the position of a Gtid event (SHOW BINLOG "
        "EVENTS), a GTID set or a time"
    )


def _ahead(what: str, head: str, where: list[str]) -> str:
    return (
        f"the checkpoint's {what} is past this server's binlog ({head}; {', '.join(where)}): "
        "the checkpoint was taken on another server (the source was replaced or rebuilt "
        "under the same address) or this server lost binlogs it had written"
    )


def _setting(vars_: dict[str, str], name: str, want: str, fix: str) -> list[str]:
    got = vars_.get(name)
    if got is None:
        return [f"the server has no {name} setting (need MariaDB >= 10.5 or MySQL >= 8.0.14)"]
    if got.upper() != want:
        return [f"{name} is {got}, must be {want}; fix: {fix}"]
    return []


def _enabled_roles(conn: Any) -> list[tuple[object, ...]]:
    try:
        rows = query(conn, "SELECT ROLE_NAME FROM information_schema.ENABLED_ROLES")
        return [r for r in rows if r[0] is not None]  # MariaDB: one NULL row for "none"
    except pymysql.err.MySQLError:
        return []  # a server without roles (MySQL < 8 has no such view)


def _grant_problems(conn: Any, info: ServerInfo) -> list[str]:
    user = str(query(conn, "SELECT CURRENT_USER()")[0][0])
    name, _, host = user.rpartition("@")
    have: set[str] = set()
    lines = [str(r[0]) for r in query(conn, "SHOW GRANTS FOR CURRENT_USER()")]
    # Privileges can come through roles (granted, and enabled for the session by default).
    for (role,) in _enabled_roles(conn):
        quoted = "`" + str(role).replace("`", "``") + "`"
        lines += [str(r[0]) for r in query(conn, f"SHOW GRANTS FOR {quoted}")]
    for line in lines:
        m = _GLOBAL_GRANT.match(line)  # only the privilege list: lines can hold hashes
        if m:
            have.update(p.strip().upper() for p in m.group(1).split(","))
    if "ALL PRIVILEGES" in have:
        return []
    need = ["REPLICATION SLAVE", "BINLOG MONITOR" if info.mariadb else "REPLICATION CLIENT"]
    if info.mariadb and "REPLICATION CLIENT" in have:
        have.add("BINLOG MONITOR")  # its old name, still accepted as an alias
    missing = [p for p in need if p not in have]
    if not missing:
        return []
    return [
        f"user {user} lacks {', '.join(missing)} (needed to read the binlog); fix: "
        f"GRANT {', '.join(need)} ON *.* TO '{name}'@'{host}';"
    ]


def unreadable(conn: Any, tables: Sequence[TableId]) -> list[TableId]:
    """The tables this user may not SELECT from (information_schema hides them as well)."""
    out = []
    for t in tables:
        try:
            query(conn, f"SELECT 1 FROM {ident(t.schema)}.{ident(t.name)} LIMIT 0")
        except pymysql.err.MySQLError as e:
            if error_code(e) in _NO_PRIVILEGE:
                out.append(t)
    return out


def _select_problems(conn: Any, tables: Sequence[TableId]) -> list[str]:
    denied = unreadable(conn, tables)
    if not denied:
        return []
    name, _, host = str(query(conn, "SELECT CURRENT_USER()")[0][0]).rpartition("@")
    return [
        f"no SELECT on table {t}; fix: GRANT SELECT ON `{t.schema}`.`{t.name}` "
        f"TO '{name}'@'{host}';"
        for t in denied
    ]


def _server_id_problems(conn: Any, info: ServerInfo, server_id: int) -> list[str]:
    if server_id == info.server_id:
        return [
            f"server_id {server_id} is the source server's own @@server_id; choose another "
            "value, unique among the server's replicas and cdc-sync pipelines"
        ]
    try:
        rows = query(conn, "SHOW SLAVE HOSTS")
    except pymysql.err.MySQLError as e:
        if error_code(e) in _NO_PRIVILEGE:
            return []  # cannot tell without REPLICATION MASTER ADMIN; not a blocker
        raise
    if any(int(r[0]) == server_id for r in rows):
        return [
            f"server_id {server_id} is already used by a replica of the source "
            "(SHOW SLAVE HOSTS); choose another value"
        ]
    return []


def problems(
    conn: Any, info: ServerInfo, server_id: int, mode: str, tables: Sequence[TableId]
) -> list[str]:
    """Every unmet prerequisite, each with its exact fix."""
    out = settings_problems(conn, info, server_id, mode)
    out += filter_problems(conn, tables)
    out += _grant_problems(conn, info)
    out += _select_problems(conn, tables)
    return out


def filter_problems(conn: Any, tables: Sequence[TableId]) -> list[str]:
    """Configured tables whose database the server's binlog_do_db / binlog_ignore_db keep out
    of the binlog (with row logging they filter by the changed table's database): their
    changes would never be read, without any error."""
    try:
        row = _master_status(conn)
    except pymysql.err.MySQLError as e:
        if error_code(e) in _NO_PRIVILEGE:
            return []  # the missing BINLOG MONITOR / REPLICATION CLIENT is reported itself
        raise
    if row is None or len(row) < 4:
        return []
    do = [d for d in str(row[2] or "").split(",") if d]
    ignore = {d for d in str(row[3] or "").split(",") if d}
    out = []
    for schema in sorted({t.schema for t in tables}):
        names = ", ".join(str(t) for t in tables if t.schema == schema)
        if schema in ignore:
            out.append(
                f"the source server's binlog_ignore_db leaves database {schema!r} out of the "
                f"binlog: changes to {names} are never written there; fix: remove "
                f"binlog_ignore_db = {schema} from my.cnf and restart the server"
            )
        elif do and schema not in do:
            out.append(
                f"the source server's binlog_do_db ({', '.join(do)}) leaves database "
                f"{schema!r} out of the binlog: changes to {names} are never written there; "
                f"fix: add binlog_do_db = {schema} to my.cnf (or remove every binlog_do_db "
                "line) and restart the server"
            )
    return out


def settings_problems(conn: Any, info: ServerInfo, server_id: int, mode: str) -> list[str]:
    """The server settings without which the binlog cannot be read completely and exactly;
    a start refuses on these (grants are left to the server: roles may grant them)."""
    v = variables(
        conn, "log_bin", "binlog_format", "binlog_row_image", "binlog_row_metadata", "gtid_mode"
    )
    out: list[str] = []
    if v.get("log_bin", "OFF").upper() != "ON":
        out.append(str(_no_binlog()))
    for name in ("binlog_format", "binlog_row_image", "binlog_row_metadata"):
        want = "ROW" if name == "binlog_format" else "FULL"
        fix = f"SET GLOBAL {name} = '{want}'; and in my.cnf {name} = {want}"
        out += _setting(v, name, want, fix)
    extra = variables(conn, "binlog_checksum", "log_bin_compress", "binlog_row_value_options")
    # Compressed (MariaDB) and partial-JSON (MySQL) row events are types this reader does not
    # decode: refused up front, because a row event we cannot read must never be skipped.
    if extra.get("log_bin_compress", "OFF").upper() == "ON":
        out.append(
            "log_bin_compress is ON (compressed row events cannot be read); fix: SET GLOBAL "
            "log_bin_compress = OFF; and in my.cnf log_bin_compress = OFF"
        )
    if "PARTIAL_JSON" in extra.get("binlog_row_value_options", "").upper():
        out.append(
            "binlog_row_value_options is PARTIAL_JSON (JSON updates logged as diffs); fix: "
            "SET GLOBAL binlog_row_value_options = ''; and in my.cnf binlog_row_value_options ="
        )
    checksum = extra.get("binlog_checksum", "CRC32").upper()
    if checksum != "CRC32":
        # python-mysql-replication 1.0.17 mis-reads table maps without a checksum (the key
        # columns are lost); refusing is better than replicating with a wrong key.
        out.append(
            f"binlog_checksum is {checksum}, must be CRC32; fix: SET GLOBAL binlog_checksum "
            "= 'CRC32'; and in my.cnf binlog_checksum = CRC32"
        )
    if not info.mariadb and mode == "gtid" and v.get("gtid_mode", "OFF").upper() != "ON":
        out.append(
            "gtid_mode is OFF but position_mode is 'gtid'; fix: in my.cnf gtid_mode = ON and "
            "enforce_gtid_consistency = ON, restart (or use position_mode 'file')"
        )
    out += _server_id_problems(conn, info, server_id)
    return out


# -- the signal table (DBLog watermarks) ------------------------------------------------------


def _qualified(table: TableId) -> str:
    return f"`{table.schema.replace('`', '``')}`.`{table.name.replace('`', '``')}`"


def signal_table_sql(table: TableId) -> str:
    """The DDL of a signal table: one watermark row per pipeline, updated in place."""
    return (
        f"CREATE TABLE IF NOT EXISTS {_qualified(table)} (pipeline VARCHAR(100) NOT NULL "
        "PRIMARY KEY, value VARCHAR(200) NOT NULL, updated_at DATETIME(6) NOT NULL DEFAULT "
        "CURRENT_TIMESTAMP(6)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;"
    )


def table_exists(conn: Any, table: TableId) -> bool:
    return bool(
        query(
            conn,
            "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
            (table.schema, table.name),
        )
    )


def create_signal_table(conn: Any, table: TableId) -> None:
    query(conn, signal_table_sql(table).rstrip(";").replace("%", "%%"))


def write_signal(conn: Any, table: TableId, pipeline: str, value: str) -> None:
    """Upsert the pipeline's watermark; ``conn`` is in autocommit, so it commits at once.

    ``updated_at`` changes every time: an upsert that changes nothing writes no row event.
    """
    query(
        conn,
        f"INSERT INTO {_qualified(table).replace('%', '%%')} (pipeline, value, updated_at) "
        "VALUES (%s, %s, NOW(6)) ON DUPLICATE KEY UPDATE value = VALUES(value), "
        "updated_at = NOW(6)",
        (pipeline, value),
    )
