"""A source server whose binlog_do_db / binlog_ignore_db keep a configured table's database out
of the binlog: check and run refuse it with the my.cnf fix (its changes would never arrive,
without any error), while tables of a logged database replicate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cdc_sync.testing.myserver import MyServer, running_mariadb
from tests.integration.routes import Route, execute, fetch

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=[("binlog_ignore_db", "skipped"), ("binlog_do_db", "kept")])
def filtered(request: pytest.FixtureRequest) -> Iterator[tuple[MyServer, str]]:
    option, value = request.param
    with running_mariadb(extra={option: value}) as server:
        yield server, option


def test_filtered_database_is_refused_with_the_fix(
    tmp_path: Path, filtered: tuple[MyServer, str], target_dsn: str
) -> None:
    server, option = filtered
    kept, skipped = server.create_database("kept"), server.create_database("skipped")
    for dsn in (kept, skipped):
        execute(dsn, "CREATE TABLE calls (id int PRIMARY KEY, outcome varchar(20))")
    bad = Route(tmp_path, skipped, target_dsn, {"skipped.calls": "public.calls"}, pipeline="bad")
    checked = bad.cli("check")
    out = checked.stdout + checked.stderr
    assert checked.returncode != 0, out
    assert f"the source server's {option}" in out, out
    assert "leaves database 'skipped' out of the binlog" in out
    fix = (
        "remove binlog_ignore_db = skipped from my.cnf"
        if option == "binlog_ignore_db"
        else "add binlog_do_db = skipped to my.cnf"
    )
    assert fix in out
    res = bad.cli("run", "--until-caught-up")
    assert res.returncode != 0
    assert "leaves database 'skipped' out of the binlog" in res.stderr
    good = Route(tmp_path, kept, target_dsn, {"kept.calls": "public.calls"}, pipeline="good")
    assert good.cli("check").returncode == 0
    good.drain()
    execute(kept, "INSERT INTO calls VALUES (1, 'busy'), (2, 'answered')",
            "DELETE FROM calls WHERE id = 1")  # fmt: skip
    good.drain()
    assert fetch(kept, "calls") == fetch(target_dsn, "public.calls") == [(2, "answered")]
