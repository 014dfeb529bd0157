"""Custom row functions (``custom: "pkg.mod:fn"``) through the daemon: the snapshot and the
stream call them, None skips the row, a raising function dead-letters the row without its
values reaching the log or the dead letter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.routes import Route, execute, fetch

pytestmark = pytest.mark.integration

CANARY = "cust0m-canary-5521"

MODULE = """
from cdc_sync.transforms import Change


def fix_customer(change: Change) -> Change | None:
    name = change.values.get("name")
    if name == "TEST":
        return None  # a test row: not replicated
    if "boom" in str(change.values.get("note")):
        raise ValueError(f"cannot fix {change.values!r}")  # the row's values in the message
    return change.replace(name=name.title() if isinstance(name, str) else name)
"""


def test_custom_function_in_snapshot_and_stream(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    pkg = tmp_path / "lib" / "my_rules"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "crm.py").write_text(MODULE)
    execute(source_dsn, "CREATE TABLE people (id int PRIMARY KEY, name text, note text)")
    execute(
        source_dsn,
        "INSERT INTO people VALUES (1, 'ann lee', 'a'), (2, 'TEST', 'b'), "
        f"(3, 'bob', 'boom {CANARY}'), (4, 'cy', 'd')",
    )
    r = Route(tmp_path, source_dsn, target_dsn, {"public.people": None}, pipeline="custom_p")
    text = r.config.read_text()
    r.config.write_text(
        text.replace(
            "      public.people: {}",
            '      public.people: {custom: ["my_rules.crm:fix_customer"]}',
        )
    )
    r.env["PYTHONPATH"] = str(tmp_path / "lib")

    check = r.cli("check")
    assert check.returncode == 0, check.stdout + check.stderr[-2000:]
    r.drain()  # the initial snapshot goes through the function
    assert fetch(target_dsn, "people") == [(1, "Ann Lee", "a"), (4, "Cy", "d")]

    execute(
        source_dsn,
        "INSERT INTO people VALUES (5, 'dee', 'e'), (6, 'TEST', 'f'), (7, 'eve', 'boom')",
        "UPDATE people SET name = 'cy young' WHERE id = 4",
        "DELETE FROM people WHERE id = 1",
    )
    r.drain()
    assert fetch(target_dsn, "people") == [(4, "Cy Young", "d"), (5, "Dee", "e")]

    letters = fetch(target_dsn, "cdc_sync_dead_letters", "pk, stage, rule, reason", "id")
    assert [(json.loads(pk), stage, rule) for pk, stage, rule, _ in letters] == [
        ({"id": 3}, "rule", "custom"),
        ({"id": 7}, "rule", "custom"),
    ]
    assert {reason for *_, reason in letters} == {"my_rules.crm:fix_customer raised ValueError"}
    outcomes = fetch(target_dsn, "cdc_sync_audit", "outcome, pk", "id")
    assert sorted((o, json.loads(pk)["id"]) for o, pk in outcomes if o != "applied") == [
        ("dead_letter", 3),
        ("dead_letter", 7),
        ("filtered", 2),
        ("filtered", 6),
    ]
    everywhere = r.log.read_text() + r.cli("dlq", "list").stdout + json.dumps(letters)
    assert CANARY not in everywhere and "ann lee" not in everywhere

    # dlq list filters: table, status, limit, JSON; discard one, fix and retry the other.
    def ids(*args: str) -> list[int]:
        res = r.cli("dlq", "list", "--json", *args)
        assert res.returncode == 0, res.stderr[-2000:]
        return [int(d["id"]) for d in json.loads(res.stdout)]

    first, second = ids()
    assert ids("--table", "public.people") == [first, second]
    assert ids("--table", "people") == [first, second] and ids("--status", "retried") == []
    other = r.cli("dlq", "list", "--table", "public.other")
    assert other.returncode == 2 and "is not a table of pipeline custom_p" in other.stderr
    assert ids("--limit", "1") == [first]
    assert ids("-p", "custom_p", "--status", "all") == [first, second]
    assert r.cli("dlq", "discard", "--id", str(first), "--yes").returncode == 0
    assert ids() == [second] and ids("--status", "discarded") == [first]
    execute(source_dsn, "UPDATE people SET note = 'fixed' WHERE id = 7")
    r.drain()
    res = r.cli("dlq", "retry", "--id", str(second))
    assert res.returncode == 0, res.stdout + res.stderr[-2000:]
    assert ids() == [] and ids("--status", "retried") == [second]
    assert fetch(target_dsn, "people") == [
        (4, "Cy Young", "d"),
        (5, "Dee", "e"),
        (7, "Eve", "fixed"),
    ]
    assert "no dead letters" in r.cli("dlq", "list").stdout
