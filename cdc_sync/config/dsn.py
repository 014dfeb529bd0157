"""DSNs: MySQL / MariaDB URLs (``mysql://user[:pw]@host[:port]/db?ssl_ca=…``) parsed into parts,
PostgreSQL ones (libpq URI or key=value) checked as libpq reads them.

The messages hold no part of the DSN but known parameter names: a user or password with an
unencoded ``#``, ``/``, ``?`` or ``@`` shifts its pieces into the host, port, database or
parameters, so any of them may be a piece of the password."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from cdc_sync.errors import ENCODING_HINT, pg_dsn_problem

_SCHEMES = ("mysql", "mariadb", "mysql+pymysql")
_PG_SCHEMES = ("postgresql", "postgres")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _flag(value: str) -> bool:
    if value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    raise ValueError("true or false")


def _whole(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ValueError("a whole number of seconds, 1 or more")
    return int(value)


# Query parameters passed through to PyMySQL (TLS and timeouts); anything else is refused.
_PARAMS: dict[str, Callable[[str], Any]] = {
    "ssl_ca": str,
    "ssl_cert": str,
    "ssl_key": str,
    "ssl_verify_cert": _flag,
    "ssl_verify_identity": _flag,
    "connect_timeout": _whole,
    "read_timeout": _whole,
    "write_timeout": _whole,
}
_NAME = re.compile(r"[A-Za-z_]{1,40}")

UNREADABLE_URL = (
    "the DSN cannot be read as a URL: an unencoded '#', '/', '?' or '@' in the user or "
    f"password cuts it short; {ENCODING_HINT}, and an '@' anywhere else in the URL as %40"
)


def _unreadable_userinfo(text: str, ends: str, first_at: bool) -> bool:
    """True when an unencoded character of the user or password shifts a URL's parts. The
    host part runs from ``://`` to the first of ``ends``; an ``@`` after it means one of
    those characters was in the password (or an ``@`` elsewhere, which is refused too: it
    cannot be told apart). ``first_at``: the parser ends the user info at the first ``@``
    (libpq), so a second one in the host part is a piece of the password."""
    rest = text.partition("://")[2]
    end = min((i for i in map(rest.find, ends) if i >= 0), default=len(rest))
    return "@" in rest[end:] or (first_at and rest[:end].count("@") > 1)


@dataclass(frozen=True)
class MysqlDsn:
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    database: str | None
    params: tuple[tuple[str, Any], ...] = ()

    def connect_args(self) -> dict[str, Any]:
        """Keyword arguments for ``pymysql.connect`` (without the database)."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            **dict(self.params),
        }

    def safe(self) -> str:
        """For messages: never the password."""
        return f"mysql://{self.user}@{self.host}:{self.port}/{self.database or ''}"


def parse_mysql_dsn(text: str) -> MysqlDsn:
    """Raise ValueError for anything that is not a MySQL URL; the message holds no part of
    ``text`` (see the module's docstring)."""
    scheme, sep, _ = text.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        pg = " (this is a PostgreSQL DSN)" if scheme.lower() in _PG_SCHEMES else ""
        raise ValueError(f"expected a mysql://user:password@host:port/database URL{pg}")
    if _unreadable_userinfo(text, "/?#", first_at=False):  # urlsplit: the last '@' of the host part
        raise ValueError(UNREADABLE_URL)
    try:
        parts = urlsplit(text)
        host, port = parts.hostname, parts.port
    except ValueError:  # its text quotes the port, which may be a piece of the password
        raise ValueError(
            "the DSN's host or port cannot be read (mysql://user:password@host:port/database, "
            f"the port a number up to 65535); {ENCODING_HINT}"
        ) from None
    if not host:
        raise ValueError("the MySQL URL names no host")
    if any("=" not in f for f in parts.query.split("&") if f):
        raise ValueError("a parameter of the DSN is not key=value (parameters are joined by &)")
    params: list[tuple[str, Any]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        conv = _PARAMS.get(key)
        if conv is None:
            name = f" {key!r}" if _NAME.fullmatch(key) else ""
            raise ValueError(f"unknown MySQL URL parameter{name} (known: {sorted(_PARAMS)})")
        try:
            params.append((key, conv(value)))
        except ValueError as e:
            raise ValueError(f"the MySQL URL parameter {key} must be {e}") from None
    db = unquote(parts.path.lstrip("/")) or None
    return MysqlDsn(
        host=host,
        port=port or 3306,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        database=db,
        params=tuple(params),
    )


def check_postgres_dsn(text: str) -> None:
    """Raise ValueError when libpq cannot read ``text`` (URI or key=value) as the DSN it was
    meant to be; the message holds no part of ``text`` (see the module's docstring). Option
    values (sslmode=…) are libpq's to check when connecting."""
    scheme, sep, _ = text.partition("://")
    if sep and scheme.lower() in _SCHEMES:
        raise ValueError("expected a PostgreSQL DSN (postgresql://… or key=value), got a MySQL URL")
    # libpq ends the user info at the first '@' (if before any '/'), the host part at '/'
    if text.startswith(tuple(f"{s}://" for s in _PG_SCHEMES)) and _unreadable_userinfo(
        text, "/", first_at=True
    ):
        raise ValueError(UNREADABLE_URL)
    try:
        conninfo_to_dict(text)
    except psycopg.Error as e:
        problem = pg_dsn_problem(str(e))
        raise ValueError(problem or "the DSN cannot be read as a PostgreSQL DSN") from None
