"""Rules into MariaDB targets (MariaDB→MariaDB, PG→MariaDB): values, canaries, dlq, audit."""

from __future__ import annotations

import getpass
import json
import socket
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pymysql
import pytest

from tests.integration.routes import execute, fetch
from tests.integration.test_rules_routes import (
    EXPECTED,
    INSERT,
    MY_DDL,
    PG_DDL,
    ROWS,
    Rules,
    digest,
    letters,
)

pytestmark = pytest.mark.integration

# Canaries no other test data has. POISON_PHONE is no valid CN number (the phone rule
# refuses it); the emails go unmasked into the target's email column, which is unique.
PHONES = ["13957203141", "13957203142", "13957203143", "13957203144"]
EMAILS = [f"canary.m4z{i}@example.com" for i in range(1, 5)]
POISON_PHONE = "139876512"
POISON_EMAIL = "canary.m4z9@example.com"
NATIONAL = "canary-nid-m4z7734"
COLUMNS = "id, contact_name, contact_phone, email, national_id, status, amount, source_system"


class MyRules(Rules):
    """The example rule set of test_rules_routes (docs/rules.md) into a MariaDB target, where
    ``crm.contacts`` is ``<target database>.contacts``."""

    def __init__(self, tmp: Path, source_dsn: str, target_dsn: str, level: str = "INFO") -> None:
        execute(source_dsn, MY_DDL if source_dsn.startswith("mysql") else PG_DDL)
        super().__init__(tmp, source_dsn, target_dsn, level=level)
        text = self.config.read_text()
        for old, new in (
            ('tgt: {type: postgres, dsn: "${TGT_DSN}"}', 'tgt: {type: mysql, dsn: "${TGT_DSN}"}'),
            ("target: crm.contacts", f"target: {target_dsn.rsplit('/', 1)[-1]}.contacts"),
        ):
            assert text.count(old) == 1, f"the example config changed: {old!r}"
            text = text.replace(old, new)
        self.config.write_text(text)

    def rows(self) -> dict[int, tuple[Any, ...]]:
        return {r[0]: tuple(r[1:]) for r in fetch(self.target_dsn, "contacts", COLUMNS)}

    def audit(self) -> list[tuple[Any, ...]]:
        """(op, outcome, pk as JSON, detail as JSON, applied_at) in order."""
        cols = "op, outcome, pk, detail, applied_at"
        return [
            (op, oc, json.loads(pk) if pk else None, json.loads(d) if d else None, at)
            for op, oc, pk, d, at in fetch(self.target_dsn, "cdc_sync_audit", cols, "id")
        ]


def _source(request: pytest.FixtureRequest, route: str) -> str:
    return str(request.getfixturevalue("my_source_dsn" if route == "mariadb" else "source_dsn"))


def _state_dump(dsn: str) -> dict[str, str]:
    """Every ``cdc_sync_*`` table of the target database, each row as text."""
    where = "information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE"
    names = [str(r[0]) for r in fetch(dsn, f"{where} 'cdc\\_sync\\_%'", "TABLE_NAME")]
    assert {"cdc_sync_audit", "cdc_sync_dead_letters", "cdc_sync_checkpoints"} <= set(names)
    return {n: "\n".join(map(str, fetch(dsn, n))) for n in names}


@pytest.mark.parametrize("route", ["mariadb", "pg"])
def test_canary_values_never_leak_into_mariadb_target(
    tmp_path: Path, route: str, request: pytest.FixtureRequest, my_target_dsn: str
) -> None:
    src = _source(request, route)
    r = MyRules(tmp_path, src, my_target_dsn, level="DEBUG")
    r.drain()  # creates the target table
    execute(my_target_dsn, "CREATE UNIQUE INDEX contacts_email_key ON contacts (email)")
    for i, (phone, email) in enumerate(zip(PHONES, EMAILS, strict=True)):
        execute(src, INSERT, params=(i + 1, "N", phone, email, NATIONAL, "1", "1", "n"))
    # Refused by a rule: the invalid phone. Refused by the target: an insert whose email,
    # lowered, is row 1's (the upsert turns that clash into 1048, reported as 1062) ...
    execute(src, INSERT, params=(10, "P", POISON_PHONE, POISON_EMAIL, NATIONAL, "1", None, None))
    execute(src, INSERT, params=(11, "D", PHONES[0], EMAILS[0].upper(), NATIONAL, "1", None, None))
    logs = r.drain().stdout
    # ... and an update of row 4 onto row 2's email: MariaDB's own 1062, whose text quotes it.
    execute(src, "UPDATE customers SET email = %s WHERE id = 4", params=(EMAILS[1].upper(),))
    logs += r.drain().stdout
    with pytest.raises(pymysql.IntegrityError) as refused:  # what the server says to anyone
        execute(my_target_dsn, "UPDATE contacts SET email = %s WHERE id = 4", params=(EMAILS[1],))
    assert refused.value.args[0] == 1062 and f"Duplicate entry '{EMAILS[1]}'" in str(refused.value)

    by_pk = {json.loads(d["pk"])["id"]: d for d in letters(my_target_dsn)}
    assert {k: (d["op"], d["stage"], d["rule"] or d["error_code"]) for k, d in by_pk.items()} == {
        10: ("insert", "rule", "phone"),
        11: ("insert", "target", "1062"),
        4: ("update", "target", "1062"),
    }
    listed = r.cli("dlq", "list")
    shown = r.cli("dlq", "show", *[a for d in by_pk.values() for a in ("--id", str(d["id"]))])
    assert listed.returncode == 0 and shown.returncode == 0, listed.stderr + shown.stderr
    assert len(listed.stdout.strip().splitlines()) == 3, listed.stdout
    assert shown.stdout.count("another target row already has this value") == 2, shown.stdout

    # Only the source and the target's unmasked columns may hold the raw values.
    assert "level: DEBUG" in r.config.read_text()
    everywhere = {
        "daemon log": r.log.read_text() + logs,
        "dlq list": listed.stdout + listed.stderr,
        "dlq show": shown.stdout + shown.stderr,
        **_state_dump(my_target_dsn),
        "masked target columns": str(
            fetch(my_target_dsn, "contacts", "contact_phone, national_id")
        ),
    }
    leaks = [
        f"{raw!r} in {where}"
        for raw in [*PHONES, POISON_PHONE, *EMAILS, POISON_EMAIL, NATIONAL]
        for where, text in everywhere.items()
        if raw.lower() in text.lower()
    ]
    assert leaks == []
    # ... and the data did arrive: emails unmasked in their column, phones masked, ids hashed.
    assert r.rows() == {
        i + 1: ("N", f"+86*******{p[-4:]}", e, digest(NATIONAL), "active", 1, "crm")
        for i, (p, e) in enumerate(zip(PHONES, EMAILS, strict=True))
    }


def test_example_rules_mysql_to_mysql_and_discard_audited(
    tmp_path: Path, my_source_dsn: str, my_target_dsn: str
) -> None:
    r = MyRules(tmp_path, my_source_dsn, my_target_dsn)
    check = r.cli("check")
    assert check.returncode == 0, check.stdout + check.stderr
    r.drain()
    for row in ROWS:
        execute(my_source_dsn, INSERT, params=row)
    r.drain()

    # Column by column what the rules must produce (rows 5 filtered, 6 and 7 refused).
    assert r.rows() == EXPECTED
    dl = letters(my_target_dsn)
    assert [(d["pk"], d["stage"], d["rule"], d["column_name"]) for d in dl] == [
        ('{"id":6}', "rule", "phone", "phone"),
        ('{"id":7}', "rule", "cast", "amount"),
    ]
    assert json.loads(dl[0]["source_pk"]) == {"id": 6}
    assert "12345" not in json.dumps(dl[0]["row_masked"]) + dl[0]["reason"]
    assert "1.234" not in json.dumps(dl[1]["row_masked"]) + dl[1]["reason"]
    counts: dict[tuple[str, str], int] = {}
    for op, oc, *_ in r.audit():
        counts[(op, oc)] = counts.get((op, oc), 0) + 1
    assert counts == {
        ("insert", "applied"): 4,
        ("insert", "filtered"): 1,
        ("insert", "dead_letter"): 2,
    }

    # Discard the cast letter: the letter and the audit record who did it, and when.
    before = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=1)
    res = r.cli("dlq", "discard", "--id", str(dl[1]["id"]), "--yes")
    after = datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=1)
    assert res.returncode == 0, res.stdout + res.stderr
    by = f"{getpass.getuser()}@{socket.gethostname()}"
    (act,) = [a for a in r.audit() if a[0] == "dlq"]
    assert act[:4] == ("dlq", "discarded", {"id": 7}, {"dead_letter_id": dl[1]["id"], "by": by})
    assert before <= act[4] <= after
    cols = "id, status, resolved_by, resolved_at"
    closed = {i: (s, b, t) for i, s, b, t in fetch(my_target_dsn, "cdc_sync_dead_letters", cols)}
    assert closed[dl[0]["id"]] == ("open", None, None)
    status, resolved_by, resolved_at = closed[dl[1]["id"]]
    assert (status, resolved_by) == ("discarded", by) and before <= resolved_at <= after
    listed = r.cli("dlq", "list")
    assert [line.split()[0] for line in listed.stdout.strip().splitlines()] == [str(dl[0]["id"])]
    # The phone letter, fixed in the source, is retried from the source's current row.
    execute(my_source_dsn, "UPDATE customers SET phone = '13800138006' WHERE id = 6")
    res = r.cli("dlq", "retry", "--id", str(dl[0]["id"]))
    assert res.returncode == 0, res.stdout + res.stderr
    fixed = ("Barbara", "+86*******8006", "barbara@example.com", digest("2"), "active")
    assert r.rows()[6] == (*fixed, Decimal("3.00"), "crm")
    assert [(a[1], a[3]["by"]) for a in r.audit() if a[1] == "retried"] == [("retried", by)]
    assert r.cli("dlq", "list").stdout.strip() == "no dead letters"


@pytest.mark.parametrize("route", ["mariadb", "pg"])
def test_audit_detail_names_rules_per_column(
    tmp_path: Path, route: str, request: pytest.FixtureRequest, my_target_dsn: str
) -> None:
    src = _source(request, route)
    r = MyRules(tmp_path, src, my_target_dsn)
    r.drain()
    for row in ROWS[:4]:
        execute(src, INSERT, params=row)
    execute(src, "UPDATE customers SET phone = '13800138009', internal_note = NULL WHERE id = 1")
    r.drain()
    # Which rule changed which target column, per row; a rule that left a value as it was
    # (validate, or lower on an already lower-case email) or met NULL is not named.
    phone, full = ["phone", "mask"], {"national_id": ["hash"], "status": ["map"]}
    first = {"contact_phone": phone, "email": ["lower", "trim"], **full, "amount": ["cast"]}
    got = [(op, pk, d) for op, oc, pk, d, _ in r.audit() if oc == "applied"]
    assert got == [
        ("insert", {"id": 1}, {"rules": first}),
        ("insert", {"id": 2}, {"rules": {"contact_phone": phone, **full, "amount": ["cast"]}}),
        ("insert", {"id": 3}, {"rules": {"contact_phone": phone, "status": ["map"]}}),
        ("insert", {"id": 4}, {"rules": {**full, "amount": ["cast"]}}),
        ("update", {"id": 1}, {"rules": first}),
    ]
    assert r.rows()[1] == (*EXPECTED[1][:1], "+86*******8009", *EXPECTED[1][2:])
