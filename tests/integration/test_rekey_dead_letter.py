"""A key change (UPDATE of the primary key) whose new row becomes a dead letter: the old key
is gone at the source, so it goes from the target in the same transaction. Before, the old
row stayed: after `dlq retry` the same source row was in the target twice (its PII too), and
a unique column it held blocked the retry for good. For all three ways a row is refused: a
rule, a value the source cannot decode, the target."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.routes import Route, execute, fetch

pytestmark = pytest.mark.integration

RULES = "{columns: {phone: {transforms: [{phone: {region: US, format: e164}}]}}}"


@pytest.mark.parametrize("target", ["pg", "mysql"])
def test_refused_key_change_removes_the_old_key(
    target: str, source_dsn: str, target_dsn: str, my_target_dsn: str, tmp_path: Path
) -> None:
    tgt = target_dsn if target == "pg" else my_target_dsn
    table = "public.t" if target == "pg" else f"{my_target_dsn.rsplit('/', 1)[1]}.t"
    execute(
        source_dsn,
        "CREATE TABLE t (id int PRIMARY KEY, phone varchar(40), ts timestamptz, email varchar(40))",
        "INSERT INTO t VALUES (1, '650-253-0000', now(), 'a@x'), (2, '650-253-0001', now(), "
        "'b@x'), (3, '650-253-0002', now(), 'c@x')",
    )
    r = Route(tmp_path, source_dsn, tgt, {"public.t": table})
    text = r.config.read_text()
    r.config.write_text(
        text.replace(f"public.t: {{target: {table}}}", f"public.t: {{target: {table}, {RULES[1:]}")
    )
    r.drain()
    execute(tgt, f"CREATE UNIQUE INDEX t_email ON {table} (email)")
    execute(tgt, f"INSERT INTO {table} VALUES (99, NULL, NULL, 'taken@x')")
    execute(
        source_dsn,
        "UPDATE t SET id = 11, phone = 'garbage' WHERE id = 1",  # the rule refuses
        "UPDATE t SET id = 12, ts = 'infinity' WHERE id = 2",  # the source value
        "UPDATE t SET id = 13, email = 'taken@x' WHERE id = 3",  # the target refuses
    )
    r.drain()
    assert [row[0] for row in fetch(tgt, table, "id")] == [99]  # no old key left behind
    # The DBA fixes the causes; the retry brings every row, once.
    execute(
        source_dsn,
        "UPDATE t SET phone = '650-253-0009' WHERE id = 11",
        "UPDATE t SET ts = now() WHERE id = 12",
    )
    execute(tgt, f"DELETE FROM {table} WHERE id = 99")
    r.drain()
    assert r.cli("dlq", "retry", "--all").returncode == 0
    assert [row[0] for row in fetch(tgt, table, "id")] == [11, 12, 13]
    assert fetch(tgt, table, "id, email") == fetch(source_dsn, "t", "id, email")
