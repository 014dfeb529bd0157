"""Canary: unique raw values must appear nowhere but the source and unmasked target columns."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.integration.harness import rows_as_text
from tests.integration.routes import execute
from tests.integration.test_rules_routes import INSERT, Rules, _prepare

pytestmark = pytest.mark.integration

# Digits no test data elsewhere has; the emails carry a marker that survives lower().
PHONES = ["13898761234", "13898761235", "13898761236"]
EMAILS = ["canary.q7x1@example.com", "canary.q7x2@example.com", "canary.q7x3@example.com"]
POISON_PHONE = "98761"  # not a valid number: the row is dead-lettered by the phone rule
POISON_EMAIL = "canary.q7x9@example.com"
NATIONAL = "canary-nid-5551234"


def _dump(dsn: str, query: str) -> str:
    with psycopg.connect(dsn) as conn:
        return "\n".join(str(r[0]) for r in conn.execute(query))  # type: ignore[arg-type]


def test_canary_values_never_leak(tmp_path: Path, source_dsn: str, target_dsn: str) -> None:
    _prepare(source_dsn, target_dsn)
    r = Rules(tmp_path, source_dsn, target_dsn, level="DEBUG")
    r.drain()
    execute(target_dsn, "CREATE UNIQUE INDEX contacts_email_key ON crm.contacts (email)")
    for i, (phone, email) in enumerate(zip(PHONES, EMAILS, strict=True)):
        execute(source_dsn, INSERT, params=(i + 1, "N", phone, email, NATIONAL, "1", "1", "n"))
    # Poison (rule): invalid phone. Constraint violation (target): a second row whose email
    # collides with the first one's on the target's unique index.
    execute(
        source_dsn, INSERT, params=(10, "P", POISON_PHONE, POISON_EMAIL, NATIONAL, "1", None, None)
    )
    execute(
        source_dsn,
        INSERT,
        params=(11, "D", PHONES[0], EMAILS[0].upper(), NATIONAL, "1", None, None),
    )
    res = r.drain()
    # CLI output seen by an operator, at DEBUG too.
    listed = r.cli("dlq", "list")
    shown = r.cli("dlq", "show", "--id", "1", "--id", "2")
    assert listed.returncode == 0 and shown.returncode == 0, listed.stderr + shown.stderr
    assert len(listed.stdout.strip().splitlines()) == 2

    logs = r.log.read_text() + res.stdout + listed.stdout + listed.stderr + shown.stdout
    logs += shown.stderr
    # DEBUG really logged more: the schema it learned, each flush and commit.
    for event in ("table_schema", "batch_flushed", "batch_committing"):
        assert f'"event": "{event}"' in logs and '"level": "debug"' in logs, event
    audit = _dump(target_dsn, "SELECT t::text FROM cdc_sync_audit t")
    dead = _dump(target_dsn, "SELECT t::text FROM cdc_sync_dead_letters t")
    state = _dump(target_dsn, "SELECT t::text FROM cdc_sync_checkpoints t")
    # Target columns that are masked / hashed must not hold a raw value either; the email
    # column is replicated unmasked (by the config), so only that column may hold emails.
    masked_cols = _dump(
        target_dsn, "SELECT concat_ws('|', contact_phone, national_id) FROM crm.contacts"
    )
    everywhere = {
        "logs": logs,
        "audit": audit,
        "dead letters": dead,
        "checkpoints": state,
        "masked target columns": masked_cols,
    }
    for raw in [*PHONES, POISON_PHONE, *EMAILS, POISON_EMAIL, NATIONAL]:
        for where, text in everywhere.items():
            assert raw.lower() not in text.lower(), f"{raw!r} leaked into {where}"
    # ... and the data did arrive: unmasked emails in their column, masked phones.
    rows = rows_as_text(target_dsn, "crm.contacts")
    assert len(rows) == 3 and all("canary.q7x" in row for row in rows)
    assert "+86*******1234" in "\n".join(rows)
    assert "phone" in dead and "23505" in dead, dead
