"""A MariaDB system-versioned table keeps its history in the table (the binlog logs a DELETE as
an Update_rows of row_end, an UPDATE as an update plus a Write_rows of the old version): check
and run refuse it with one clear line, where check used to end in a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.routes import Route, execute

pytestmark = pytest.mark.integration


def test_system_versioned_table_is_refused(
    tmp_path: Path, my_source_dsn: str, target_dsn: str
) -> None:
    db = my_source_dsn.rsplit("/", 1)[-1]
    execute(
        my_source_dsn,
        "CREATE TABLE customers (id int PRIMARY KEY, name varchar(20)) WITH SYSTEM VERSIONING",
        "INSERT INTO customers VALUES (1, 'ann')",
    )
    r = Route(tmp_path, my_source_dsn, target_dsn, {f"{db}.customers": "public.customers"})
    want = f"table {db}.customers is system-versioned (WITH SYSTEM VERSIONING)"
    checked = r.cli("check")
    assert checked.returncode == 1
    assert want in checked.stdout and "leave it out of the config" in checked.stdout
    assert "Traceback" not in checked.stdout + checked.stderr
    ran = r.cli("run", "--until-caught-up")
    assert ran.returncode != 0 and want in ran.stderr
