"""Classify target database errors (SQLSTATE, MySQL errno): transient / row-level / permanent."""

from __future__ import annotations

import re

import psycopg
import pymysql
import sqlalchemy.exc

from cdc_sync.errors import CdcSyncError, PermanentError, RowLevelError, TransientError

# Heal by themselves: retry the whole target transaction from the checkpoint.
_TRANSIENT_CODES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03", "53300", "55P03"})
_TRANSIENT_CLASSES = ("08", "53")


# MySQL / MariaDB server and client error numbers. Transient: deadlock, lock wait timeout,
# connection lost / refused / gone, too many connections, server shutting down, killed,
# read-only during a failover, disconnected for inactivity.
MYSQL_TRANSIENT = frozenset(
    {1213, 1205, 2002, 2003, 2006, 2013, 2055, 1040, 1053, 1927, 1290, 4031, 1180, 1181}
)
# One row's data cannot be stored (strict mode turns these into errors): out of range, too
# long, truncated, incorrect value / datetime, invalid JSON (MySQL 3140, MariaDB's json_valid
# CHECK 4025, MySQL CHECK 3819), NULL into NOT NULL, no default, duplicate key, foreign key,
# invalid character, row too large for max_allowed_packet.
MYSQL_ROW_LEVEL = frozenset(
    {1264, 1406, 1265, 1366, 1292, 3140, 4025, 3819, 1048, 1364, 1062, 1452, 1451, 1300, 1153}
)
# Schema-level problems worth a hint (the server's text is not shown, see below).
_MYSQL_HINTS = {
    1071: "key too long: InnoDB indexes at most 3072 bytes (768 utf8mb4 characters)",
    1118: "row size too large: move long columns to TEXT / BLOB types",
    1142: "permission denied",
    1044: "permission denied on the database",
    1146: "table does not exist",
    1054: "unknown column",
}
# Only identifiers are ever taken from a server message: "for column 'x'", "column `d`.`t`.`x`".
_COLUMN = re.compile(r"column (?:`[^`]*`\.`[^`]*`\.`([^`]*)`|'([^']*)')", re.IGNORECASE)


def mysql_errno(err: BaseException) -> int | None:
    """The MySQL error number of a PyMySQL error (its first argument), else None."""
    if isinstance(err, pymysql.MySQLError) and err.args and isinstance(err.args[0], int):
        return err.args[0]
    return None


def mysql_column(err: BaseException) -> str | None:
    """The column a MySQL data error names, if any (identifiers only, never values)."""
    text = str(err.args[1]) if len(err.args) > 1 else ""
    found = _COLUMN.search(text)
    return (found.group(1) or found.group(2)) if found else None


def classify_mysql_error(err: pymysql.MySQLError, where: str) -> CdcSyncError:
    """By error number only: PyMySQL's message text can carry values ("Duplicate entry
    'jane@example.com' for key …", "Incorrect datetime value: '2100-…'"), so the message we
    build holds the number, the class name and at most a column name."""
    errno = mysql_errno(err)
    column = mysql_column(err)
    what = f"column {column!r}: " if column else ""
    hint = _MYSQL_HINTS.get(errno or 0)
    msg = f"{where}: {what}{hint or type(err).__name__} (MySQL error {errno})"
    if not errno or errno in MYSQL_TRANSIENT or 2000 <= errno < 3000:
        # No number (0: connection closed) or a client-side 2xxx: the connection failed.
        return TransientError(msg)
    if errno in MYSQL_ROW_LEVEL:
        return RowLevelError(msg)
    return PermanentError(msg)


def _primary_message(err: psycopg.Error) -> str:
    # Only the primary message, never DETAIL / CONTEXT / the statement: a DETAIL such as
    # "Key (email)=(jane@example.com) already exists" carries row values, i.e. possibly PII.
    primary = err.diag.message_primary if err.diag is not None else None
    return (primary or str(err)).split("\n", 1)[0]


def classify_db_error(exc: BaseException, table: object | None = None) -> CdcSyncError:
    """Map a driver exception (psycopg or SQLAlchemy-wrapped) to a cdc-sync error.

    ``table`` (the target table being written) is named in the message. Parameter values
    are never included: SQLAlchemy's str() of a DBAPIError appends them, so we build the
    message from the driver's primary message only.
    """
    if isinstance(exc, CdcSyncError):
        return exc
    orig: BaseException = exc
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig is not None:
        orig = exc.orig
    where = f"target table {table}" if table is not None else "target"
    if isinstance(orig, pymysql.MySQLError):
        return classify_mysql_error(orig, where)
    if not isinstance(orig, psycopg.Error):
        return PermanentError(f"{where}: unexpected {type(orig).__name__}")
    state = orig.sqlstate or ""
    msg = f"{where}: {_primary_message(orig)}" + (f" (SQLSTATE {state})" if state else "")
    if not state:
        # libpq-level failure without a server answer (connection refused/reset/timeout).
        if isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError):
            return TransientError(msg)
        return PermanentError(msg)
    if state in _TRANSIENT_CODES or state.startswith(_TRANSIENT_CLASSES):
        return TransientError(msg)
    if state.startswith("23"):
        # Integrity violation caused by one row's values: the stream can go on without it
        # (dead-lettered in a later issue; for now the runtime stops on it).
        return RowLevelError(msg)
    # 42 (undefined table/column, syntax, privilege), 28 (auth), 22 (data exception) and
    # everything else: retrying the same statement cannot succeed.
    return PermanentError(msg)
