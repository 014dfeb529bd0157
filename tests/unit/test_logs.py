"""Log redaction catches secrets even when code passes them by mistake."""

from __future__ import annotations

from cdc_sync.logs import scrub


def test_scrub_urls_and_keyvalue() -> None:
    assert scrub("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert scrub("host=h password=abc user=u") == "host=h password=*** user=u"
    assert scrub("no secrets here") == "no secrets here"
