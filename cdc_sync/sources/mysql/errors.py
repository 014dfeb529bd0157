"""PyMySQL / python-mysql-replication errors classified as transient or permanent."""

from __future__ import annotations

import pymysql

from cdc_sync.errors import (
    LOGIN_FIX,
    CdcSyncError,
    PermanentError,
    TransientError,
    refused_setting,
)

# Heal by themselves: connection refused / lost / gone away, server shutting down, too many
# connections, lock wait timeout and deadlock (the catalog queries can hit those).
TRANSIENT_CODES = frozenset({2002, 2003, 2006, 2013, 2055, 1053, 1040, 1205, 1213, 1927})
# The binlog position asked for is gone (purged, or a GTID the server never had / lost).
BINLOG_GONE_CODES = frozenset({1236})

RESNAPSHOT_HINT = (
    "the checkpointed binlog position is no longer on the source server (binlogs purged "
    "or the server was replaced); changes in between are lost for cdc-sync, which will not "
    "silently jump ahead: re-snapshot the table(s) with `cdc-sync snapshot` (issue #5) and "
    "start from the new position"
)


def error_code(err: BaseException) -> int | None:
    args = getattr(err, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    return None


def _server_message(err: BaseException) -> str:
    # PyMySQL's message is the server's text: it names objects, never row values or the
    # password ("Access denied for user 'x'@'h' (using password: YES)").
    args: tuple[object, ...] = tuple(getattr(err, "args", ()))
    if len(args) >= 2 and isinstance(args[1], str):
        return args[1].splitlines()[0][:300]
    return type(err).__name__


def classify(err: BaseException, where: str) -> CdcSyncError:
    """Transient or permanent, with a message holding neither secrets nor row values."""
    if isinstance(err, CdcSyncError):
        return err
    refused = refused_setting(err, where)
    if refused is not None:
        return refused
    code = error_code(err)
    text = f"{where}: {_server_message(err)}"
    if code is not None:
        text += f" (MySQL error {code})"
    if code in BINLOG_GONE_CODES:
        return PermanentError(f"{text}; {RESNAPSHOT_HINT}")
    if code in TRANSIENT_CODES:
        return TransientError(text)
    if code is None and isinstance(err, (pymysql.err.OperationalError, pymysql.err.InterfaceError)):
        return TransientError(text)
    if isinstance(err, (ConnectionError, TimeoutError, EOFError)):
        return TransientError(f"{where}: connection lost ({type(err).__name__})")
    if code == 1045:
        return PermanentError(f"{text}; {LOGIN_FIX}")
    if code == 1049:
        return PermanentError(f"{text}; the database in the source DSN does not exist")
    return PermanentError(text)
