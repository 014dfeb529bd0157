"""Classify target database errors by SQLSTATE into transient / row-level / permanent."""

from __future__ import annotations

import psycopg
import sqlalchemy.exc

from cdc_sync.errors import CdcSyncError, PermanentError, RowLevelError, TransientError

# Heal by themselves: retry the whole target transaction from the checkpoint.
_TRANSIENT_CODES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03", "53300", "55P03"})
_TRANSIENT_CLASSES = ("08", "53")


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
