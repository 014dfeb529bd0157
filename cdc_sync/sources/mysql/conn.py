"""PyMySQL connections that share one TLS context for PyMySQL's default (PREFERRED) mode."""

from __future__ import annotations

import ssl
import threading
from typing import Any

import pymysql

_PREFERRED: ssl.SSLContext | None = None
_LOCK = threading.Lock()


class Connection(pymysql.connections.Connection):  # type: ignore[misc]
    """``pymysql.connect`` with one difference: without ssl options PyMySQL (1.1.1+) builds
    a TLS context for every connection (TLS if the server offers it), and
    ``ssl.create_default_context`` loads the system CA store each time: ~45 ms a
    connection, and a daemon opens several while it starts (catalog, binlog control and
    stream, checks). That context (no CA: no verification, no hostname check) is the same
    every time, so it is built once per process; explicit ssl options still get their own.
    Sharing one ``SSLContext`` between connections and threads is what it is made for."""

    def _create_ssl_ctx(self, sslp: Any) -> Any:
        global _PREFERRED  # noqa: PLW0603  (one context per process, by design)
        if not (isinstance(sslp, dict) and not sslp):
            return super()._create_ssl_ctx(sslp)
        with _LOCK:
            if _PREFERRED is None:
                _PREFERRED = super()._create_ssl_ctx(sslp)
            return _PREFERRED


def connect(**kwargs: Any) -> Any:
    """A connection, as ``pymysql.connect(**kwargs)`` makes it (see :class:`Connection`)."""
    return Connection(**kwargs)
