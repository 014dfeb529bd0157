"""Mapping, cleansing and masking end to end (PG→PG, MySQL→PG): values, dead letters, retry."""

from __future__ import annotations

import hashlib
import hmac
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.harness import Cli, column_types
from tests.integration.routes import execute, fetch, kind, server_id_extra

pytestmark = pytest.mark.integration

HASH_KEY = "k3y-for-tests-only-0123456789abcdef"

CONFIG = """
sources:
  src: {{type: {stype}, dsn: "${{SRC_DSN}}"{sextra}}}
targets:
  tgt: {{type: postgres, dsn: "${{TGT_DSN}}"}}
pipelines:
  {pipeline}:
    source: src
    target: tgt
    audit: {audit}
    on_error: {on_error}
    batch: {{max_rows: 20000, max_seconds: 0.2, flush_rows: 5000}}
    retry: {{initial_seconds: 0.1, max_seconds: 1}}
    tables:
      {schema}.customers:
        target: crm.contacts
        filter: "status != 'deleted'"
        columns:
          name: contact_name
          phone:
            target: contact_phone
            transforms:
              - phone: {{region: CN, format: e164}}
              - mask: {{keep_first: 3, keep_last: 4, char: "*"}}
          email:
            transforms: [lower, trim, {{validate: email}}]
          national_id: {{transforms: [{{hash: {{key: "${{file:{key_file}}}"}}}}]}}
          status: {{map: {{1: active, 2: dormant, 3: do_not_call}}, default: unknown}}
          amount: {{cast: "decimal(12,2)"}}
          internal_note: {{drop: true}}
          source_system: {{value: crm}}
logging: {{level: {level}, format: json}}
"""

PG_DDL = (
    "CREATE TABLE customers (id bigint PRIMARY KEY, name varchar(100), phone varchar(32), "
    "email varchar(200), national_id varchar(20), status varchar(10), amount varchar(20), "
    "internal_note text)"
)
MY_DDL = PG_DDL + " ENGINE=InnoDB"
INSERT = (
    "INSERT INTO customers (id, name, phone, email, national_id, status, amount, internal_note) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)


class Rules(Cli):
    def __init__(
        self,
        tmp: Path,
        source_dsn: str,
        target_dsn: str,
        *,
        on_error: str = "dead_letter",
        level: str = "INFO",
        audit: str = "row",
    ) -> None:
        key_file = tmp / "hash_key"
        key_file.write_text(HASH_KEY + "\n")
        stype = kind(source_dsn)
        sextra = server_id_extra(source_dsn) if stype == "mysql" else ""
        schema = source_dsn.rsplit("/", 1)[-1] if stype == "mysql" else "public"
        # Slots are per server: the pipeline is named after the (per-test) source database.
        pipeline = "r_" + source_dsn.rsplit("/", 1)[-1]
        text = CONFIG.format(
            stype=stype,
            sextra=sextra,
            pipeline=pipeline,
            on_error=on_error,
            audit=audit,
            schema=schema,
            key_file=key_file,
            level=level,
        )
        self.source_table = f"{schema}.customers"
        self._configure(tmp, pipeline, text, source_dsn, target_dsn)


def digest(value: str) -> str:
    return hmac.new(HASH_KEY.encode(), value.encode(), hashlib.sha256).hexdigest()


ROWS: list[tuple[Any, ...]] = [
    (1, "Ada", "138 0013 8000", "  Ada@Example.COM ", "110101199003077777", "1", "12.5", "vip"),
    (2, "Alan", "+86 138-0013-8001", "alan@example.com", "220101199003077777", "2", "7", None),
    (3, "Grace", "13800138002", "grace@example.com", None, "3", None, "x"),
    (4, "Katherine", None, None, "440101199003077777", "9", "0.10", None),  # unmapped → unknown
    (5, "Edsger", "13800138005", "e@example.com", "1", "deleted", "1", None),  # filtered out
    (6, "Barbara", "12345", "barbara@example.com", "2", "1", "3", None),  # invalid phone
    (7, "Liskov", "13800138007", "liskov@example.com", "3", "1", "1.234", None),  # cast loss
]
EXPECTED = {
    1: (
        "Ada",
        "+86*******8000",
        "ada@example.com",
        digest("110101199003077777"),
        "active",
        Decimal("12.50"),
        "crm",
    ),
    2: (
        "Alan",
        "+86*******8001",
        "alan@example.com",
        digest("220101199003077777"),
        "dormant",
        Decimal("7.00"),
        "crm",
    ),
    3: ("Grace", "+86*******8002", "grace@example.com", None, "do_not_call", None, "crm"),
    4: ("Katherine", None, None, digest("440101199003077777"), "unknown", Decimal("0.10"), "crm"),
}
COLUMNS = "id, contact_name, contact_phone, email, national_id, status, amount, source_system"


def target_rows(dsn: str) -> dict[int, tuple[Any, ...]]:
    return {r[0]: tuple(r[1:]) for r in fetch(dsn, "crm.contacts", COLUMNS)}


def letters(dsn: str) -> list[dict[str, Any]]:
    cols = (
        "id, source_table, op, pk, source_pk, stage, rule, column_name, error_code, "
        "constraint_name, reason, row_masked, status, attempts"
    )
    names = [c.strip() for c in cols.split(",")]
    return [dict(zip(names, r, strict=True)) for r in fetch(dsn, "cdc_sync_dead_letters", cols)]


def outcomes(dsn: str) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for op, outcome in fetch(dsn, "cdc_sync_audit", "op, outcome", "id"):
        out[(op, outcome)] = out.get((op, outcome), 0) + 1
    return out


def _prepare(source_dsn: str, target_dsn: str) -> None:
    execute(source_dsn, MY_DDL if kind(source_dsn) == "mysql" else PG_DDL)
    execute(target_dsn, "CREATE SCHEMA crm")


@pytest.mark.parametrize("route", ["pg", "mysql"])
def test_example_rules_end_to_end(
    tmp_path: Path,
    route: str,
    source_dsn: str,
    my_source_dsn: str,
    target_dsn: str,
) -> None:
    src = source_dsn if route == "pg" else my_source_dsn
    _prepare(src, target_dsn)
    r = Rules(tmp_path, src, target_dsn)
    check = r.cli("check")
    assert check.returncode == 0, check.stdout + check.stderr
    r.drain()  # creates the target table and the pipeline's start point
    for row in ROWS:
        execute(src, INSERT, params=row)
    r.drain()

    assert target_rows(target_dsn) == EXPECTED
    dl = letters(target_dsn)
    assert [(d["pk"], d["stage"], d["rule"], d["column_name"]) for d in dl] == [
        ('{"id":6}', "rule", "phone", "phone"),
        ('{"id":7}', "rule", "cast", "amount"),
    ]
    assert json.loads(dl[0]["source_pk"]) == {"id": 6}
    assert "12345" not in json.dumps(dl[0]["row_masked"]) + dl[0]["reason"]
    assert "barbara" not in json.dumps(dl[0]["row_masked"]).lower()
    assert "1.234" not in json.dumps(dl[1]["row_masked"]) + dl[1]["reason"]
    assert outcomes(target_dsn) == {
        ("insert", "applied"): 4,
        ("insert", "filtered"): 1,
        ("insert", "dead_letter"): 2,
    }
    # The target's columns as the rules shape them: renamed, dropped, constant, cast.
    assert [c for c, _, _ in column_types(target_dsn, "crm.contacts")] == [
        "id",
        "contact_name",
        "contact_phone",
        "email",
        "national_id",
        "status",
        "amount",
        "source_system",
    ]

    # An update that leaves the filter deletes the target row; one that enters it inserts.
    execute(src, "UPDATE customers SET status = 'deleted' WHERE id = 2")
    execute(src, "UPDATE customers SET status = '1' WHERE id = 5")
    r.drain()
    rows = target_rows(target_dsn)
    assert 2 not in rows
    assert rows[5] == (
        "Edsger",
        "+86*******8005",
        "e@example.com",
        digest("1"),
        "active",
        Decimal("1.00"),
        "crm",
    )

    # Fix the poison row in the source while the daemon is stopped, then retry it: the
    # current source version is read and today's rules applied (not the masked copy).
    execute(src, "UPDATE customers SET phone = '13800138006' WHERE id = 6")
    res = r.cli("dlq", "retry", "--id", str(dl[0]["id"]))
    assert res.returncode == 0, res.stdout + res.stderr
    assert target_rows(target_dsn)[6][1] == "+86*******8006"
    after = {d["id"]: d for d in letters(target_dsn)}
    assert after[dl[0]["id"]]["status"] == "retried"
    assert after[dl[1]["id"]]["status"] == "open"
    r.drain()  # the stream then applies the same update: same content
    assert target_rows(target_dsn)[6][1] == "+86*******8006"

    # Discard the other; the audit records who did it.
    res = r.cli("dlq", "discard", "--id", str(dl[1]["id"]), "--yes")
    assert res.returncode == 0, res.stderr
    listed = r.cli("dlq", "list")
    assert listed.stdout.strip() == "no dead letters", listed.stdout
    acts = fetch(target_dsn, "cdc_sync_audit", "op, outcome, detail", "id")
    assert [(op, oc) for op, oc, _ in acts if op == "dlq"] == [("dlq", "discarded")]
    assert any(oc == "retried" for _, oc, _ in acts)


def test_target_refusal_is_dead_lettered_and_retried_after_fix(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    _prepare(source_dsn, target_dsn)
    r = Rules(tmp_path, source_dsn, target_dsn)
    r.drain()
    execute(target_dsn, "CREATE UNIQUE INDEX contacts_email_key ON crm.contacts (email)")
    execute(
        target_dsn,
        "INSERT INTO crm.contacts (id, email, source_system) "
        "VALUES (100, 'taken@example.com', 'x')",
    )
    execute(source_dsn, INSERT, params=(1, "A", None, "a@example.com", None, "1", None, None))
    execute(source_dsn, INSERT, params=(2, "B", None, "TAKEN@example.com", None, "1", None, None))
    execute(source_dsn, INSERT, params=(3, "C", None, "c@example.com", None, "1", None, None))
    r.drain()
    assert sorted(target_rows(target_dsn)) == [1, 3, 100]
    (dl,) = letters(target_dsn)
    assert (dl["stage"], dl["error_code"], dl["constraint_name"]) == (
        "target",
        "23505",
        "contacts_email_key",
    )
    assert "taken" not in json.dumps(dl["row_masked"]).lower() + dl["reason"].lower()
    assert outcomes(target_dsn)[("insert", "dead_letter")] == 1
    assert outcomes(target_dsn)[("insert", "applied")] == 2

    # The DBA removes the conflicting row; retry applies the row.
    execute(target_dsn, "DELETE FROM crm.contacts WHERE id = 100")
    res = r.cli("dlq", "retry", "--all")
    assert res.returncode == 0, res.stdout + res.stderr
    assert target_rows(target_dsn)[2][2] == "taken@example.com"


def test_on_error_stop_halts_with_the_rule_and_column(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    _prepare(source_dsn, target_dsn)
    r = Rules(tmp_path, source_dsn, target_dsn, on_error="stop")
    r.drain()
    execute(source_dsn, INSERT, params=(6, "B", "12345", "b@example.com", None, "1", None, None))
    res = r.cli("run", "--until-caught-up")
    assert res.returncode == 1
    assert "'phone'" in res.stderr and "on_error is stop" in res.stderr
    assert "12345" not in res.stderr
    assert target_rows(target_dsn) == {}


def test_check_reports_rule_problems_with_key_paths(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    execute(source_dsn, "CREATE TABLE customers (id bigint PRIMARY KEY, name text)")
    execute(target_dsn, "CREATE SCHEMA crm")
    r = Rules(tmp_path, source_dsn, target_dsn)
    res = r.cli("check")
    assert res.returncode == 1
    out = res.stdout
    path = f"pipelines.{r.pipeline}.tables.public.customers.columns"
    for column in ("phone", "email", "status", "amount"):
        assert f"{path}.{column}" in out, out


KEYED = """
sources:
  src: {{type: postgres, dsn: "${{SRC_DSN}}"}}
targets:
  tgt: {{type: {ttype}, dsn: "${{TGT_DSN}}"}}
pipelines:
  {pipeline}:
    source: src
    target: tgt
    batch: {{max_rows: 20000, max_seconds: 0.2, flush_rows: 5000}}
    retry: {{initial_seconds: 0.1, max_seconds: 1}}
    tables:
      public.people:
        target: {target}
        columns:
          phone: {{transforms: [{{hash: {{key: "${{HASH_KEY}}"}}}}]}}
          email: {{transforms: [lower]}}
logging: {{level: INFO, format: json}}
"""


class Keyed(Cli):
    """A table whose primary key (a phone number) is hashed on the way."""

    def __init__(self, tmp: Path, source_dsn: str, target_dsn: str) -> None:
        pipeline = "k_" + source_dsn.rsplit("/", 1)[-1]
        ttype = kind(target_dsn)
        target = target_dsn.rsplit("/", 1)[-1] + ".people" if ttype == "mysql" else "public.people"
        text = KEYED.format(ttype=ttype, pipeline=pipeline, target=target)
        self._configure(tmp, pipeline, text, source_dsn, target_dsn)
        self.env["HASH_KEY"] = HASH_KEY


@pytest.mark.parametrize("engine", ["pg", "mysql"])
def test_hashed_primary_key_and_target_refusals(
    tmp_path: Path, engine: str, source_dsn: str, target_dsn: str, my_target_dsn: str
) -> None:
    """Key rules give the target key (update and delete find the hashed row); a row the target
    refuses is a dead letter on either target engine, without its key in clear."""
    tgt = target_dsn if engine == "pg" else my_target_dsn
    execute(
        source_dsn,
        "CREATE TABLE people (phone text PRIMARY KEY, email varchar(100), n int)",
        "INSERT INTO people VALUES ('+8613800138000', 'A@x.org', 1),"
        " ('+8613800138001', 'b@x.org', 2)",
    )
    k = Keyed(tmp_path, source_dsn, tgt)
    k.drain()  # the two rows above predate the pipeline: the initial snapshot copies them
    execute(
        source_dsn,
        "INSERT INTO people VALUES ('+8613800138002', 'C@X.org', 3),"
        " ('+8613800138003', 'd@x.org', 4)",
        "UPDATE people SET n = 30 WHERE phone = '+8613800138002'",
        "UPDATE people SET phone = '+8613800138004' WHERE phone = '+8613800138003'",
    )
    k.drain()
    table = "people"
    got = {r[0]: (r[1], r[2]) for r in fetch(tgt, table, "phone, email, n")}
    copied = {digest("+8613800138000"): ("a@x.org", 1), digest("+8613800138001"): ("b@x.org", 2)}
    assert got == {
        **copied,
        digest("+8613800138002"): ("c@x.org", 30),
        digest("+8613800138004"): ("d@x.org", 4),
    }
    # The target refuses a row (unique index on email); the rest of the batch is applied.
    execute(tgt, "CREATE UNIQUE INDEX people_email ON people (email)")
    execute(
        source_dsn,
        "INSERT INTO people VALUES ('+8613800138005', 'c@x.org', 5),"
        " ('+8613800138006', 'f@x.org', 6)",
        "DELETE FROM people WHERE phone = '+8613800138002'",
    )
    k.drain()
    got = {r[0]: (r[1], r[2]) for r in fetch(tgt, table, "phone, email, n")}
    assert got == {
        **copied,
        digest("+8613800138004"): ("d@x.org", 4),
        digest("+8613800138006"): ("f@x.org", 6),
    }
    (dl,) = letters(tgt)
    assert dl["stage"] == "target" and dl["source_pk"] is None
    assert json.loads(dl["pk"]) == {"phone": digest("+8613800138005")}
    assert "8613800138005" not in json.dumps(dl["row_masked"])
    assert dl["error_code"] == ("23505" if engine == "pg" else "1062")
    res = k.cli("dlq", "retry", "--id", str(dl["id"]))
    assert res.returncode == 1 and "masked or hashed" in res.stdout


def test_schema_changes_recompile_the_rules(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    """ADD COLUMN passes through the rules to the target; dropping a column a rule needs
    stops the pipeline with the key path, before any row of the new shape is written."""
    _prepare(source_dsn, target_dsn)
    r = Rules(tmp_path, source_dsn, target_dsn)
    r.drain()
    execute(source_dsn, INSERT, params=(1, "A", "13800138000", "a@x.org", None, "1", "1", None))
    execute(source_dsn, "ALTER TABLE customers ADD COLUMN segment text")
    execute(source_dsn, "UPDATE customers SET segment = 'smb' WHERE id = 1")
    r.drain()
    assert fetch(target_dsn, "crm.contacts", "id, contact_phone, segment") == [
        (1, "+86*******8000", "smb")
    ]
    execute(source_dsn, "ALTER TABLE customers DROP COLUMN phone")
    execute(source_dsn, "INSERT INTO customers (id, name) VALUES (2, 'B')")
    res = r.cli("run", "--until-caught-up")
    assert res.returncode == 2  # the config no longer fits the source
    assert f"pipelines.{r.pipeline}.tables.public.customers.columns.phone" in res.stderr
    assert [row[0] for row in fetch(target_dsn, "crm.contacts", "id")] == [1]


def test_transaction_audit_counts_refused_rows_as_dead_letters(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    _prepare(source_dsn, target_dsn)
    r = Rules(tmp_path, source_dsn, target_dsn, audit="transaction")
    r.drain()
    execute(target_dsn, "CREATE UNIQUE INDEX contacts_email_key ON crm.contacts (email)")
    with psycopg.connect(source_dsn) as conn:  # one source transaction
        for row in [
            (1, "A", None, "a@x.org", None, "1", None, None),
            (2, "B", "12345", "b@x.org", None, "1", None, None),  # the phone rule refuses
            (3, "C", None, "A@x.org", None, "1", None, None),  # the target refuses (email)
            (4, "D", None, "d@x.org", None, "deleted", None, None),  # filtered out
        ]:
            conn.execute(INSERT, row)
    r.drain()
    (detail,) = [d for op, d in fetch(target_dsn, "cdc_sync_audit", "op, detail", "id")]
    assert detail == {
        "counts": {"crm.contacts": {"insert": 1}},
        "rows": 1,
        "outcomes": {"dead_letter": 2, "filtered": 1},
    }
    assert len(letters(target_dsn)) == 2
