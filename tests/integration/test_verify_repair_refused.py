"""``verify --repair`` when the target refuses some rows: the others are repaired, the refused
ones are skipped, reported, dead-lettered once, and verify exits 1 (differences remain)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.routes import Route, execute, fetch
from tests.integration.test_verify import run_verify

pytestmark = pytest.mark.integration

DDL = (
    "CREATE TABLE items (id int PRIMARY KEY, name varchar(50), note varchar(50), code varchar(50))"
)
COLS = "id, name, note, code"
# Row values that must never reach an output, a log line, a dead letter or the audit.
SECRETS = ("forbidden",)

# Per target engine: the DBA's changes (after the initial copy) and the codes of the refusals.
TIGHTEN = {
    "pg": [
        "ALTER TABLE items ADD CONSTRAINT name_chk CHECK (name <> 'forbidden')",
        "ALTER TABLE items ALTER COLUMN note SET NOT NULL",
        "ALTER TABLE items ADD CONSTRAINT code_key UNIQUE (code)",
        "CREATE TABLE refs (id int PRIMARY KEY, item_id int REFERENCES items (id))",
    ],
    "my": [
        "ALTER TABLE items ADD CONSTRAINT name_chk CHECK (name <> 'forbidden')",
        "ALTER TABLE items MODIFY note varchar(50) NOT NULL",
        "ALTER TABLE items ADD CONSTRAINT code_key UNIQUE (code)",
        "CREATE TABLE refs (id int PRIMARY KEY, item_id int, "
        "FOREIGN KEY (item_id) REFERENCES items (id)) ENGINE=InnoDB",
    ],
}
# key → (op, code, constraint, column)
CODES = {
    "pg": {
        5: ("update", "23502", None, "note"),
        6: ("update", "23505", "code_key", None),
        21: ("update", "23514", "name_chk", None),
        1000: ("delete", "23503", "refs_item_id_fkey", None),
    },
    "my": {
        5: ("update", "1048", None, "note"),
        6: ("update", "1062", None, None),
        21: ("update", "4025", "name_chk", None),
        1000: ("delete", "1451", None, None),
    },
}


def _route(tmp_path: Path, source_dsn: str, tgt: str, target: str, **kw: Any) -> Route:
    """Rows 1..20 copied; row 5 has no note, row 6 the code of row 1."""
    sdb = source_dsn.rsplit("/", 1)[-1]
    ttable = f"{tgt.rsplit('/', 1)[-1]}.items" if target == "my" else "public.items"
    execute(source_dsn, DDL)
    r = Route(tmp_path, source_dsn, tgt, {"public.items": ttable},
              pipeline=f"vr_{target}_{sdb}", **kw)  # fmt: skip
    r.drain()
    rows = [(i, f"n{i}", None if i == 5 else f"note {i}", f"c{i}") for i in range(1, 21)]
    rows[5] = (6, "n6", "note 6", "c1")
    marks = ", ".join(["(%s, %s, %s, %s)"] * len(rows))
    execute(source_dsn, f"INSERT INTO items ({COLS}) VALUES {marks}", params=sum(rows, ()))
    r.drain()
    return r


def _key(refusal: dict[str, Any]) -> int:
    return int(json.loads(refusal["key"])["id"])


def _letters(dsn: str) -> list[tuple[Any, ...]]:
    cols = "pk, op, stage, error_code, constraint_name, column_name, reason, row_masked, status"
    return fetch(dsn, "cdc_sync_dead_letters", cols, "id")


def _outcomes(dsn: str, pipeline: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for p, outcome in fetch(dsn, "cdc_sync_audit", "pipeline, outcome", "id"):
        if p == pipeline:
            out[outcome] = out.get(outcome, 0) + 1
    return out


@pytest.mark.parametrize("target", ["pg", "my"])
def test_repair_skips_rows_the_target_refuses(
    tmp_path: Path, source_dsn: str, target: str, request: pytest.FixtureRequest
) -> None:
    """A CHECK constraint, a NOT NULL and a unique constraint on the target, and a row
    another target table references: those keys stay as they are (one dead letter each, none twice
    for the row the stream dead-lettered already); every other key is repaired."""
    tgt = request.getfixturevalue("my_target_dsn" if target == "my" else "target_dsn")
    r = _route(tmp_path, source_dsn, tgt, target)
    # Damage the target (keys 5 and 6 are deleted before the constraints they break).
    execute(
        tgt,
        "DELETE FROM items WHERE id IN (3, 4, 5, 6)",
        "UPDATE items SET name = 'changed' WHERE id = 7",
        "INSERT INTO items (id, name, note, code) VALUES (1000, 'extra', 'x', 'c')",
        *TIGHTEN[target],
        "INSERT INTO refs VALUES (1, 1000)",
    )
    execute(source_dsn, "INSERT INTO items VALUES (21, 'forbidden', 'note', 'c21')")
    r.drain()  # the stream dead-letters key 21
    assert [(row[0], row[2]) for row in _letters(tgt)] == [('{"id":21}', "target")]

    res = r.cli("verify", "--pipeline", r.pipeline, "--json", "--settle", "5", "--repair")
    assert res.returncode == 1, res.stderr[-3000:]
    report = json.loads(res.stdout)
    (t,) = report["tables"]
    assert (t["missing"], t["extra"], t["different"]) == (5, 1, 1), report
    assert (t["repaired"], t["repair_refused"]) == (3, 4), json.dumps(t)
    got = {_key(f): (f["op"], f["code"], f["constraint"], f["column"]) for f in t["refusals"]}
    assert got == CODES[target], report
    states = {_key(f): f["dead_letter"] for f in t["refusals"]}
    assert states == {5: "new", 6: "new", 21: "open", 1000: "new"}
    for secret in SECRETS:
        assert secret not in res.stdout and secret not in res.stderr

    # Everything but the refused keys equals the source; the refused delete left 1000.
    source = {row[0]: row for row in fetch(source_dsn, "items", COLS)}
    expected = [row for k, row in sorted(source.items()) if k not in (5, 6, 21)]
    assert fetch(tgt, "items", COLS) == [*expected, (1000, "extra", "x", "c")]

    letters = _letters(tgt)
    assert sorted(json.loads(row[0])["id"] for row in letters) == [5, 6, 21, 1000]
    assert {row[2] for row in letters} == {"target"} and {row[8] for row in letters} == {"open"}
    for row in letters:
        assert not any(s in str(row[6:8]) for s in SECRETS), row
    outcomes = _outcomes(tgt, r.pipeline)
    assert (outcomes.get("repair"), outcomes.get("dead_letter")) == (3, 5), outcomes
    (detail,) = fetch(tgt, "cdc_sync_verify_runs", "detail", "started_at DESC LIMIT 1")[0]
    assert "refusals" not in str(detail) and "1000" not in json.dumps(detail), detail

    # Again: nothing left to repair, the same four refused, no second letter for any.
    code, report = run_verify(r, "--repair")
    (t,) = report["tables"]
    assert code == 1 and (t["repaired"], t["repair_refused"]) == (0, 4), report
    assert {f["dead_letter"] for f in t["refusals"]} == {"open"}
    assert len(_letters(tgt)) == 4
    code, report = run_verify(r)
    (t,) = report["tables"]
    assert code == 1 and (t["missing"], t["extra"], t["different"]) == (3, 1, 0), report


def test_repair_refused_with_on_error_stop(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    """on_error: stop keeps no dead letters: the refused key is reported and audited as
    'refused', the others are repaired; the human-readable report names key and constraint."""
    r = _route(tmp_path, source_dsn, target_dsn, "pg", on_error="stop")
    execute(
        target_dsn,
        "DELETE FROM items WHERE id IN (2, 3, 9)",
        "ALTER TABLE items ADD CONSTRAINT name_chk CHECK (name <> 'n9')",
    )
    res = r.cli("verify", "--pipeline", r.pipeline, "--settle", "5", "--repair")
    assert res.returncode == 1, res.stderr[-3000:]
    assert "1 key(s) not repaired" in res.stdout, res.stdout
    assert '{"id":9}' in res.stdout and "SQLSTATE 23514; constraint name_chk" in res.stdout
    assert [row[0] for row in fetch(target_dsn, "items", "id")] == [
        i for i in range(1, 21) if i != 9
    ]
    assert _letters(target_dsn) == []
    outcomes = _outcomes(target_dsn, r.pipeline)
    assert (outcomes.get("repair"), outcomes.get("refused")) == (2, 1), outcomes
