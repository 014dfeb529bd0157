"""Classify target database errors (SQLSTATE, MySQL errno): transient / row-level / permanent."""

from __future__ import annotations

import re

import psycopg
import pymysql
import sqlalchemy.exc

from cdc_sync.errors import (
    LOGIN_FIX,
    CdcSyncError,
    PermanentError,
    RowLevelError,
    TransientError,
    refused_setting,
)


class TargetRowError(RowLevelError):
    """The target refused one row's values. Fields are identifiers and codes only, so a
    dead letter can store them: never the driver's message (DETAIL holds row values)."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None,
        reason: str,
        constraint: str | None = None,
        column: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.constraint, self.column = code, reason, constraint, column


# Why the target refused a row, by SQLSTATE: what a DBA reads in the dead letter.
_PG_REASONS = {
    "23505": "another target row already has this value of a unique key",
    "23503": "the row it references does not exist in the target (foreign key)",
    "23502": "the target column is NOT NULL and the row has no value for it",
    "23514": "the row violates a check constraint of the target",
    "23P01": "the row violates an exclusion constraint of the target",
    "22001": "a value is longer than the target column allows",
    "22003": "a number is out of range for the target column's type",
    "22P02": "a value is not valid input for the target column's type",
    "22007": "a date / time value is not valid for the target column",
    "22008": "a date / time value is out of range for the target column",
}
_MY_REASONS = {
    1062: "another target row already has this value of a unique key",
    1452: "the row it references does not exist in the target (foreign key)",
    1451: "a row referencing it exists in the target (foreign key)",
    1048: "the target column is NOT NULL and the row has no value for it",
    1364: "the target column has no default and the row has no value for it",
    1406: "a value is longer than the target column allows",
    1264: "a number is out of range for the target column's type",
    1265: "a value was truncated by the target column's type",
    1366: "a value is not valid input for the target column's type",
    1292: "a value is not valid for the target column's type",
    3819: "the row violates a check constraint of the target",
    4025: "the row violates a check constraint of the target",
    3140: "a JSON value is not valid for the target",
    1300: "a string has characters the target column's character set cannot hold",
    1153: "the row is larger than the server's max_allowed_packet",
}


# PostgreSQL's 22001 names the type, never the value or the column:
# "value too long for type character varying(5)".
_TOO_LONG = re.compile(r"^value too long for type (?:character varying|character)\((\d+)\)$")


def pg_too_long_limit(err: psycopg.Error) -> int | None:
    """The length limit of a PG 22001 refusal (from the type in its primary message)."""
    found = _TOO_LONG.match(getattr(err.diag, "message_primary", None) or "")
    return int(found.group(1)) if found else None


def _pg_row_error(
    err: psycopg.Error, where: str, state: str, column: str | None = None
) -> TargetRowError:
    diag = err.diag
    constraint = getattr(diag, "constraint_name", None) or None
    column = getattr(diag, "column_name", None) or column
    reason = _PG_REASONS.get(state) or f"the target refused the row ({type(err).__name__})"
    named = "".join(
        (
            f" (constraint {constraint})" if constraint else "",
            f" (column {column!r})" if column else "",
        )
    )
    return TargetRowError(
        f"{where}: {reason}{named} (SQLSTATE {state})",
        code=state,
        reason=reason,
        constraint=constraint,
        column=column,
    )


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
    1146: "table does not exist",
    1054: "unknown column",
}
# "INSERT command denied to user 'u'@'h' for table `hub`.`t`" (1142; 1143 names a column):
# the command and the table are identifiers, never values, so they go into the message.
_DENIED = re.compile(
    r"^(\w+) command denied to user .*? for (?:column '([^']*)' in )?table "
    r"[`']?([^`'.]*)[`']?(?:\.[`']?([^`']*)[`']?)?",
    re.IGNORECASE,
)
# Only identifiers are ever taken from a server message: "for column 'x'", "column `d`.`t`.`x`".
_COLUMN = re.compile(r"column (?:`[^`]*`\.`[^`]*`\.`([^`]*)`|'([^']*)')", re.IGNORECASE)


# A CHECK refusal names the constraint: MariaDB "CONSTRAINT `c` failed for `d`.`t`" (4025),
# MySQL "Check constraint 'c' is violated." (3819). An identifier, never a value.
_CHECK = re.compile(r"^(?:CONSTRAINT `([^`]*)` failed|Check constraint '([^']*)' is violated)")


def mysql_constraint(err: BaseException) -> str | None:
    """The CHECK constraint a MySQL / MariaDB refusal names, if any."""
    if mysql_errno(err) not in (3819, 4025):
        return None
    found = _CHECK.search(str(err.args[1]) if len(err.args) > 1 else "")
    return (found.group(1) or found.group(2)) if found else None


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
    refused = refused_setting(err, where)
    if refused is not None:
        return refused
    errno = mysql_errno(err)
    column = mysql_column(err)
    what = f"column {column!r}: " if column else ""
    hint = _MYSQL_HINTS.get(errno or 0)
    if errno in (1142, 1143):
        hint = _denied(err) or hint
    if errno in (1045, 1049, 1044):
        # Login refusals name the user, host and database, never the password ("Access
        # denied for user 'x'@'h' (using password: YES)"), and are a setting to fix.
        text = str(err.args[1]).splitlines()[0][:300] if len(err.args) > 1 else ""
        fix = (
            "grant the user its privileges on that database, or fix the DSN's database"
            if errno == 1044
            else LOGIN_FIX
        )
        return PermanentError(f"{where}: {text or type(err).__name__} (MySQL error {errno}); {fix}")
    msg = f"{where}: {what}{hint or type(err).__name__} (MySQL error {errno})"
    if not errno or errno in MYSQL_TRANSIENT or 2000 <= errno < 3000:
        # No number (0: connection closed) or a client-side 2xxx: the connection failed.
        return TransientError(msg)
    if errno in MYSQL_ROW_LEVEL:
        reason = _MY_REASONS.get(errno or 0, "the target refused the row")
        constraint = mysql_constraint(err)
        named = f" (constraint {constraint})" if constraint else ""
        return TargetRowError(
            f"{where}: {what}{reason}{named} (MySQL error {errno})",
            code=str(errno),
            reason=reason,
            constraint=constraint,
            column=column,
        )
    return PermanentError(msg)


def _denied(err: BaseException) -> str | None:
    """ "permission denied: DROP on table hub.t; fix: GRANT DROP ON `hub`.`t` TO <cdc user>" """
    text = str(err.args[1]) if len(err.args) > 1 else ""
    m = _DENIED.search(text)
    if m is None:
        return None
    command, column, first, second = m.groups()
    table = f"{first}.{second}" if second else first
    quoted = ".".join(f"`{p}`" for p in table.split("."))
    on = f" ({column})" if column else ""
    return (
        f"permission denied: {command.upper()}{on} on table {table}; "
        f"fix: GRANT {command.upper()}{on} ON {quoted} TO <cdc user>"
    )


def _primary_message(err: psycopg.Error) -> str:
    # Only the primary message, never DETAIL / CONTEXT / the statement: a DETAIL such as
    # "Key (email)=(jane@example.com) already exists" carries row values, i.e. possibly PII.
    primary = err.diag.message_primary if err.diag is not None else None
    return (primary or str(err)).split("\n", 1)[0]


def classify_db_error(
    exc: BaseException, table: object | None = None, column: str | None = None
) -> CdcSyncError:
    """Map a driver exception (psycopg or SQLAlchemy-wrapped) to a cdc-sync error.

    ``table`` (the target table being written) is named in the message, and ``column`` for a
    row-level refusal whose error names none (the sink may know it better). Parameter values
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
        refused = refused_setting(orig, where)
        if refused is not None:
            return refused
        # libpq-level failure without a server answer (connection refused/reset/timeout).
        if isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError):
            return TransientError(msg)
        return PermanentError(msg)
    if state in _TRANSIENT_CODES or state.startswith(_TRANSIENT_CLASSES):
        return TransientError(msg)
    if state.startswith(("23", "22")):
        # Integrity violation or data exception caused by one row's values: the stream can
        # go on without it (dead letter). Built from SQLSTATE and identifiers only: the
        # primary message of a 22 error quotes the value ('invalid input syntax …: "x"').
        return _pg_row_error(orig, where, state, column)
    # 42 (undefined table/column, syntax, privilege), 28 (auth) and everything else:
    # retrying the same statement cannot succeed.
    return PermanentError(msg)
