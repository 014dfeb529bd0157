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


_HANDLER = "cdc-sync"


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
    # Libraries log through the standard library (psycopg: "error ignored terminating
    # <psycopg.Pipeline …>"): the same lines as ours (JSON, redacted), not raw text in a
    # JSON log that a collector would drop or choke on. Their warnings and errors only.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                _no_traceback,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _redact,
                renderer,
            ],
        )
    )
    handler.set_name(_HANDLER)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER]:  # a second setup
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)


def _no_traceback(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # A driver's exception text can quote row values ("Duplicate entry 'x'"): its type only.
    exc = event.pop("exc_info", None)
    if isinstance(exc, tuple) and exc[0] is not None:
        event["error_class"] = exc[0].__name__
    return event


def get(name: str | None = None) -> Any:
    return structlog.get_logger(name)
