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

    def __init__(self, table: str, column: str, type_name: str, fix: str | None = None) -> None:
        self.table, self.column, self.type_name = table, column, type_name
        super().__init__(
            f"table {table}: column {column!r} has type {type_name!r}, which cdc-sync cannot "
            "replicate; " + (fix or "exclude the table or change the column type")
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


ENCODING_HINT = (
    "special characters in the user or password must be percent-encoded "
    "(# as %23, @ as %40, / as %2F, % as %25, ? as %3F, : as %3A)"
)
_KV_HINT = (
    "a value with spaces or quotes is written in single quotes, with ' and \\ escaped by a "
    "backslash (key='a b\\'c')"
)
_QUERY_KEY = re.compile(r'^invalid URI query parameter: "([A-Za-z_]{1,40})"', re.MULTILINE)
# libpq's messages when it cannot read a DSN (fe-connect.c), each quoting a part of it.
_PG_UNREADABLE = (
    ("percent", re.compile(r"^(?:invalid percent-encoded token|forbidden value %00)", re.M)),
    ("param", re.compile(r"^invalid URI query parameter: ", re.M)),
    ("separator", re.compile(r"^(?:missing|extra) key/value separator \"=\" in URI", re.M)),
    ("uri", re.compile(r" in URI(?: \(expected [^)]*\))?: \"|^invalid URI propagated", re.M)),
    ("kv", re.compile(r" in connection info string$", re.M)),
    ("spaces", re.compile(r"^unexpected spaces found in \"", re.M)),
    ("option", re.compile(r"^invalid connection option \"", re.M)),
)


def pg_dsn_problem(message: str) -> str | None:
    """What is wrong when libpq cannot read a DSN (URI or key=value), from libpq's message,
    else None. libpq quotes the part it could not read, or the whole DSN: its words never
    reach a message (the part may be a piece of the password)."""
    kind = next((k for k, rx in _PG_UNREADABLE if rx.search(message)), None)
    if kind == "percent":
        return f"the DSN has a '%' that does not start a %XX code; {ENCODING_HINT}"
    if kind == "param":
        key = _QUERY_KEY.search(message)
        name = f" {key.group(1)!r}" if key else ""
        return f"the DSN names an unknown URL parameter{name} (see libpq's connection parameters)"
    if kind == "separator":
        return "a parameter of the DSN is not one key=value (parameters are joined by &)"
    if kind == "uri":
        return (
            "the DSN cannot be read as a URL (postgresql://user:password@host:port/db?key=value)"
            f"; {ENCODING_HINT}"
        )
    if kind == "kv":
        return f"the DSN cannot be read as key=value pairs; {_KV_HINT}"
    if kind == "spaces":
        return f"the DSN has a space in its URL: write it as %20; {ENCODING_HINT}"
    if kind == "option":
        return "the DSN names an unknown connection option (see libpq's connection parameters)"
    return None


# libpq refusing a connection option before connecting, or the server refusing a setting
# given with options=-c at start-up: like the login failures, without SQLSTATE, and no retry
# can heal them. The values are option values (never the password: a DSN libpq cannot read is
# pg_dsn_problem's, and the URL's user and password are checked at load).
_PG_OPTION_REFUSED = re.compile(
    r"(invalid \"?\w+\"? value: \"[^\"\n]*\""
    r"|invalid integer value \"[^\"\n]*\" for connection option \"\w+\""
    r"|invalid port number: \"[^\"\n]*\""
    r"|could not match \d+ [\w ]+ to \d+ [\w ]+"
    r"|could not parse network address \"[^\"\n]*\""
    r"|invalid SSL protocol version range"
    r"|sslmode value \"\w+\" invalid when SSL support is not compiled in"
    r"|\w+ method \"[^\"\n]*\" (?:cannot be mixed|is specified more than once)[^\n]*"
    r"|bad value for connect_timeout: [^\n]*"
    r"|FATAL:\s+(?:invalid value for parameter \"[^\"\n]*\": \"[^\"\n]*\""
    r"|unrecognized configuration parameter \"[^\"\n]*\""
    r"|parameter \"[^\"\n]*\" cannot be (?:changed|set)[^\n]*))"
)
OPTION_FIX = "fix the connection options of this DSN"


def pg_option_refusal(exc: BaseException) -> str | None:
    """libpq's (or the server's start-up) reason when a connection option of the DSN is
    invalid (sslmode=bogus, port=abc, options=-c x=bad), else None."""
    found = _PG_OPTION_REFUSED.search(str(exc))
    if found is None:
        return None
    return found.group(1).replace("FATAL:  ", "")[:300]


def refused_setting(exc: BaseException, where: str) -> PermanentError | None:
    """A connection refused for a setting to fix, not for a passing fault: a DSN libpq cannot
    read or with an invalid option, a TLS certificate (any engine) or a PostgreSQL login.
    Retrying would only hide it; None otherwise (the caller classifies by code)."""
    # libpq's own (a psycopg error without a server's SQLSTATE); by module, so that this
    # root module needs no driver.
    libpq = type(exc).__module__.startswith("psycopg") and getattr(exc, "sqlstate", 0) is None
    if libpq:
        unreadable = pg_dsn_problem(str(exc))
        if unreadable is not None:
            return PermanentError(f"{where}: {unreadable}")
        option = pg_option_refusal(exc)
        if option is not None:
            return PermanentError(f"{where}: {option}; {OPTION_FIX}")
    refused = tls_refusal(exc)
    if refused is not None:
        return PermanentError(f"{where}: {refused}; {TLS_FIX}")
    login = pg_login_refusal(exc)
    if login is not None:
        return PermanentError(f"{where}: the server refused the login: {login}; {LOGIN_FIX}")
    return None
