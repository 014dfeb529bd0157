"""A poison row: a target-only CHECK refuses two rows of a five-row source transaction. They
become masked dead letters, the other rows and the checkpoint move on, and once the target is
fixed `dlq retry` applies them from the source."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.conftest import Report
from tests.faults.checks import leaks, mask
from tests.integration.harness import Cli, sql

pytestmark = [pytest.mark.integration]

CONFIG = """
sources:
  src: {{type: postgres, dsn: "${{SRC_DSN}}"}}
targets:
  tgt: {{type: postgres, dsn: "${{TGT_DSN}}"}}
pipelines:
  {pipeline}:
    source: src
    target: tgt
    snapshot: never
    tables:
      public.orders:
        columns:
          phone: {{transforms: [{{mask: {{keep_last: 4}}}}]}}
logging: {{level: DEBUG, format: json}}
"""
PHONES = [f"+4420794{i:05d}" for i in range(1, 7)]


def _rows(dsn: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as c:
        return [tuple(r) for r in c.execute("SELECT id, phone, qty FROM orders ORDER BY id")]


def test_poison_rows_go_to_dead_letters_and_are_replayable(
    tmp_path: Path, source_dsn: str, target_dsn: str, report: Report
) -> None:
    sql(source_dsn, "CREATE TABLE orders (id int PRIMARY KEY, phone text, qty int NOT NULL)")
    sql(target_dsn, "CREATE TABLE orders (id int PRIMARY KEY, phone text, "
                    "qty int NOT NULL CONSTRAINT positive CHECK (qty > 0))")  # fmt: skip
    d = Cli()
    pipeline = "poison_" + source_dsn.rsplit("/", 1)[-1]
    d._configure(tmp_path, pipeline, CONFIG.format(pipeline=pipeline), source_dsn, target_dsn)
    d.drain()
    with psycopg.connect(source_dsn) as c, c.transaction():
        for i, phone in enumerate(PHONES[:5], 1):
            qty = 0 if i in (2, 4) else i  # rows 2 and 4 break the target's CHECK
            c.execute("INSERT INTO orders VALUES (%s, %s, %s)", (i, phone, qty))
    sql(source_dsn, f"INSERT INTO orders VALUES (6, '{PHONES[5]}', 6)")  # a later transaction
    d.drain()
    want = [(i, mask(str(p)), q) for i, p, q in _rows(source_dsn)]
    first = _rows(target_dsn)
    listed = d.cli("dlq", "list", "--json")
    with psycopg.connect(target_dsn) as c:
        ids = [int(r[0]) for r in c.execute("SELECT id FROM cdc_sync_dead_letters")]
        letters = [str(r[0]) for r in c.execute("SELECT t::text FROM cdc_sync_dead_letters t")]
    shown = d.cli("dlq", "show", *[a for i in ids for a in ("--id", str(i))])
    leaked = leaks(
        PHONES,
        [("dead letters", "\n".join(letters)), ("dlq list", listed.stdout + listed.stderr),
         ("log", d.log.read_text()), ("dlq show", shown.stdout)],
    )  # fmt: skip
    # The target is fixed; the refused rows are re-read from the source and applied.
    sql(target_dsn, "ALTER TABLE orders DROP CONSTRAINT positive")
    retried = d.cli("dlq", "retry", "--all")
    after = _rows(target_dsn)
    report(
        rows=len(want),
        lost=len(set(want) - set(after)),
        duplicated=len(after) - len(set(after)),
        leaked=len(leaked),
        message=f"{len(letters)} dead letters, the rest applied; dlq retry exit "
        f"{retried.returncode}",
    )
    assert [r[0] for r in first] == [1, 3, 5, 6], "the rest of the transaction and the next"
    assert len(letters) == 2 and not leaked, leaked
    assert shown.returncode == 0 and "*0002" in shown.stdout, shown.stdout  # masked, not absent
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert after == want
