"""Classify driver exceptions into transient / permanent errors with safe messages."""

from __future__ import annotations

import psycopg
import pymysql
import sqlalchemy.exc

from cdc_sync.errors import (
    CdcSyncError,
    PermanentError,
    TransientError,
    refused_setting,
)
from cdc_sync.logs import scrub
from cdc_sync.sinks.sql.errors import classify_mysql_error

# SQLSTATE classes/codes that heal by themselves: connection problems, shutdowns, overload,
# serialization failures and deadlocks.
_TRANSIENT_PREFIXES = ("08", "53", "57P", "40001", "40P01", "55P03", "58")


def _safe_message(err: psycopg.Error) -> str:
    # Only the primary message: DETAIL lines can carry row values (PII), e.g. "Key (id)=(5)".
    primary = err.diag.message_primary if err.diag else None
    text = primary or str(err).split("\n", 1)[0]
    return scrub(text)


def classify(exc: BaseException, where: str) -> CdcSyncError:
    """Map any exception to TransientError or PermanentError; ``where`` names the side."""
    if isinstance(exc, CdcSyncError):
        return exc
    orig: BaseException = exc
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig is not None:
        orig = exc.orig
    refused = refused_setting(orig, where)
    if refused is not None:
        return PermanentError(scrub(str(refused)))
    if isinstance(orig, psycopg.Error):
        state = orig.sqlstate or ""
        msg = f"{where}: {_safe_message(orig)}" + (f" (SQLSTATE {state})" if state else "")
        if not state and isinstance(orig, psycopg.OperationalError):
            # No SQLSTATE: libpq-level failure (refused, reset, timeout) or a start-up FATAL
            # other than a refused login (checked above): the server may come back.
            return TransientError(msg)
        if state.startswith(_TRANSIENT_PREFIXES):
            return TransientError(msg)
        return PermanentError(msg)
    if isinstance(orig, pymysql.MySQLError):
        # By error number, with no server text: it can carry row values. Here (outside the
        # sink's dead-letter path) a row-level error stops the pipeline like any other.
        err = classify_mysql_error(orig, where)
        return err if isinstance(err, TransientError) else PermanentError(str(err))
    if isinstance(orig, ConnectionError | TimeoutError):
        return TransientError(f"{where}: {type(orig).__name__}: {scrub(str(orig))}")
    return PermanentError(f"{where}: unexpected {type(exc).__name__}: {scrub(str(exc))}")
