"""MySQL / MariaDB DSNs (``mysql://user[:pw]@host[:port]/db?ssl_ca=…``) parsed into parts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

_SCHEMES = ("mysql", "mariadb", "mysql+pymysql")
# Query parameters passed through to PyMySQL (TLS and timeouts); anything else is refused.
_PARAMS: dict[str, Callable[[str], Any]] = {
    "ssl_ca": str,
    "ssl_cert": str,
    "ssl_key": str,
    "ssl_verify_cert": lambda v: v.lower() in ("1", "true", "yes"),
    "ssl_verify_identity": lambda v: v.lower() in ("1", "true", "yes"),
    "connect_timeout": int,
    "read_timeout": int,
    "write_timeout": int,
}


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
    """Raise ValueError (no secret in the text) for anything that is not a MySQL URL."""
    parts = urlsplit(text)
    if parts.scheme not in _SCHEMES:
        raise ValueError(f"expected a mysql:// URL, got scheme {parts.scheme!r}")
    if not parts.hostname:
        raise ValueError("the MySQL URL names no host")
    params: list[tuple[str, Any]] = []
    for key, value in parse_qsl(parts.query):
        conv = _PARAMS.get(key)
        if conv is None:
            raise ValueError(f"unknown MySQL URL parameter {key!r} (known: {sorted(_PARAMS)})")
        params.append((key, conv(value)))
    db = unquote(parts.path.lstrip("/")) or None
    return MysqlDsn(
        host=parts.hostname,
        port=parts.port or 3306,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        database=db,
        params=tuple(params),
    )
