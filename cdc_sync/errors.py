"""Typed, classified errors: transient (retry), permanent (stop), row-level (dead-letter)."""

from __future__ import annotations

import re


class CdcSyncError(Exception):
    """Root of every error cdc-sync raises on purpose.

    Messages must never contain row values, DSNs with passwords or other secrets:
    they are logged and shown to operators as they are.
    """


class TransientError(CdcSyncError):
    """Worth retrying with backoff: connection lost, serialization failure, deadlock."""


class PermanentError(CdcSyncError):
    """Retrying cannot help: stop with a clear message naming the table, column or setting."""


class RowLevelError(CdcSyncError):
    """One row cannot be applied; the rest of the stream can (a rule or target refusal is
    dead-lettered; a source value that cannot be decoded travels as ``RowProblem`` on its
    record instead, and is dead-lettered or stops the pipeline by ``on_error``)."""


class ConfigError(PermanentError):
    """The configuration is invalid; ``problems`` holds one line per problem, key path first."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class PrerequisiteError(PermanentError):
    """A server-side prerequisite is missing; ``fix_sql`` tells the DBA what to run."""

    def __init__(self, message: str, fix_sql: str | None = None) -> None:
        self.fix_sql = fix_sql
        super().__init__(message if fix_sql is None else f"{message}\n  fix: {fix_sql}")


class UnsupportedTypeError(PermanentError):
    """A source column type cannot be mapped; names table, column and type."""

    def __init__(self, table: str, column: str, type_name: str) -> None:
        self.table, self.column, self.type_name = table, column, type_name
        super().__init__(
            f"table {table}: column {column!r} has type {type_name!r}, which cdc-sync cannot "
            "replicate; exclude the table or change the column type"
        )


class NoKeyError(PermanentError):
    """A configured table has no primary key / replica identity: never skipped silently."""


class FencedError(PermanentError):
    """Another daemon instance took over the pipeline; this one must not commit."""


class ShutdownRequested(CdcSyncError):
    """Raised inside the loop when a stop signal arrives while blocked."""


_TLS_REFUSED = (
    "certificate verify failed",
    "CERTIFICATE_VERIFY_FAILED",
    "does not match host name",
    "root certificate file",
    "server does not support SSL, but SSL was required",
)
TLS_FIX = (
    "the server's TLS certificate was refused (wrong CA, or the host name in the DSN is not "
    "one the certificate names); fix the DSN's sslrootcert / ssl_ca or its host"
)


def tls_refusal(exc: BaseException) -> str | None:
    """The first line of a TLS verification failure anywhere in ``exc``'s chain, else None.
    A refused certificate is a setting to fix: retrying it forever would hide it (dropped
    TLS connections, "SSL SYSCALL error", stay transient)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        for line in str(cur).splitlines():
            if any(m in line for m in _TLS_REFUSED):
                return line.strip()[:300]
        nxt = getattr(cur, "original_exception", None)
        cur = cur.__cause__ or cur.__context__ or (nxt if isinstance(nxt, BaseException) else None)
    return None


# PostgreSQL refusing a connection at start-up for a reason no retry heals. libpq gives these
# without SQLSTATE (the server's FATAL is only in the message), like a network failure, which
# is transient; "the database system is starting up", "too many clients" stay transient.
_PG_LOGIN_REFUSED = re.compile(
    r"FATAL:\s+(password authentication failed for user \"[^\"]*\""
    r"|role \"[^\"]*\" does not exist|database \"[^\"]*\" does not exist"
    r"|no pg_hba\.conf entry for [^\n]*|pg_hba\.conf rejects [^\n]*"
    r"|\w+ authentication failed for user \"[^\"]*\"|permission denied [^\n]*"
    r"|must be superuser or (?:have the )?replication [^\n]*)"
    r"|(fe_sendauth: no password supplied)"
)
LOGIN_FIX = "check the user, the password and the database of this DSN"


def pg_login_refusal(exc: BaseException) -> str | None:
    """The server's reason when PostgreSQL refused the login itself (wrong password, unknown
    role or database, pg_hba.conf), else None. Names the user or database, never a password."""
    found = _PG_LOGIN_REFUSED.search(str(exc))
    if found is None:
        return None
    return (found.group(1) or found.group(2))[:300]


def refused_setting(exc: BaseException, where: str) -> PermanentError | None:
    """A connection the server refused for a setting to fix, not for a passing fault: a TLS
    certificate (any engine) or a PostgreSQL login. Retrying would only hide it; None
    otherwise (the caller classifies by code)."""
    refused = tls_refusal(exc)
    if refused is not None:
        return PermanentError(f"{where}: {refused}; {TLS_FIX}")
    login = pg_login_refusal(exc)
    if login is not None:
        return PermanentError(f"{where}: the server refused the login: {login}; {LOGIN_FIX}")
    return None
