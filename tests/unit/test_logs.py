"""Log redaction catches secrets even when code passes them by mistake."""

from __future__ import annotations

import json

import pytest
import structlog

from cdc_sync import logs
from cdc_sync.logs import scrub


def test_scrub_urls_and_keyvalue() -> None:
    assert scrub("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert scrub("host=h password=abc user=u") == "host=h password=*** user=u"
    assert scrub("no secrets here") == "no secrets here"


def test_library_lines_are_json_redacted_and_without_tracebacks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """psycopg's own warnings ("error ignored terminating <psycopg.Pipeline …>") came out as
    raw text in the JSON log."""
    import logging  # noqa: PLC0415

    logs.setup("INFO", "json")
    logging.getLogger("psycopg").warning("lost postgresql://u:hunter2@h/db")
    try:
        raise ValueError("Duplicate entry 'alice@example.com'")
    except ValueError:
        logging.getLogger("pymysql").error("failed", exc_info=True)
    # Both write to this test's captured stderr, which closes after it: back to the defaults.
    root = logging.getLogger()
    for h in [h for h in root.handlers if h.get_name() == "cdc-sync"]:
        root.removeHandler(h)
    structlog.reset_defaults()
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert lines[0]["logger"] == "psycopg" and "hunter2" not in lines[0]["event"]
    assert lines[1]["error_class"] == "ValueError" and "alice" not in json.dumps(lines[1])
