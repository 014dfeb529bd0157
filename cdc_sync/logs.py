"""structlog setup: JSON (console on a TTY), plus a last-line redaction of secrets."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_KEY = re.compile(r"(password|passwd|secret|token|dsn|key)$", re.IGNORECASE)
_URL_CREDS = re.compile(r"(?P<pre>[a-z][a-z0-9+.-]*://[^/@:\s]*:)[^@/\s]*@", re.IGNORECASE)
_KV_CREDS = re.compile(r"(password\s*=\s*)\S+", re.IGNORECASE)


def scrub(text: str) -> str:
    """Remove passwords from any DSN-looking text."""
    return _KV_CREDS.sub(r"\1***", _URL_CREDS.sub(r"\g<pre>***@", text))


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # Defence in depth: code never logs secrets or row values on purpose; this catches mistakes.
    for k, v in list(event.items()):
        if _SECRET_KEY.search(k) and k != "event":
            event[k] = "***"
        elif isinstance(v, str):
            event[k] = scrub(v)
    return event


def setup(level: str = "INFO", fmt: str = "auto") -> None:
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if use_console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get(name: str | None = None) -> Any:
    return structlog.get_logger(name)
