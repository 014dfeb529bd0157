"""``cdc-sync check`` against MariaDB servers missing what binlog capture needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdc_sync.testing.myserver import MyServer, running_mariadb
from tests.integration.routes import Route, execute

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"log_bin": "", "binlog_format": "", "log_slave_updates": ""}, "log_bin = mysql-bin"),
        ({"binlog_row_image": "MINIMAL"}, "binlog_row_image"),
        ({"binlog_row_metadata": "MINIMAL"}, "binlog_row_metadata"),
        ({"binlog_format": "STATEMENT"}, "SET GLOBAL binlog_format = 'ROW'"),
        ({"binlog_checksum": "NONE"}, "binlog_checksum = CRC32"),
        ({"log_bin_compress": "ON"}, "log_bin_compress = OFF"),
    ],
)
def test_check_names_the_fix(
    tmp_path: Path, target_dsn: str, extra: dict[str, str], expected: str
) -> None:
    with running_mariadb(extra=extra) as srv:
        dsn = srv.create_database("dialer")
        execute(dsn, "CREATE TABLE calls (id int PRIMARY KEY, outcome text)")
        r = Route(tmp_path, dsn, target_dsn, {"dialer.calls": "public.calls"})
        res = r.cli("check")
        assert res.returncode != 0
        assert expected in res.stdout + res.stderr, res.stdout + res.stderr
        run = r.cli("run", "--until-caught-up")
        assert run.returncode == 1  # refuses to start, with the same message
        assert expected in run.stderr, run.stderr[-2000:]


def test_check_passes_and_names_missing_table(tmp_path: Path, my_source_dsn: str,
                                              target_dsn: str) -> None:  # fmt: skip
    db = my_source_dsn.rsplit("/", 1)[-1]
    execute(my_source_dsn, "CREATE TABLE calls (id int PRIMARY KEY, outcome text)")
    ok = Route(tmp_path, my_source_dsn, target_dsn, {f"{db}.calls": "public.calls"})
    res = ok.cli("check")
    assert res.returncode == 0, res.stdout + res.stderr
    bad = Route(tmp_path, my_source_dsn, target_dsn, {f"{db}.nope": "public.nope"},
                pipeline="bad")  # fmt: skip
    res = bad.cli("check")
    assert res.returncode != 0 and f"{db}.nope" in res.stdout + res.stderr


def test_compressed_events_stop_the_stream(
    tmp_path: Path, my_private_server: MyServer, target_dsn: str
) -> None:
    """Turned on and off again while the daemon was away: the compressed row events left in
    the binlog are refused with a clear message, never skipped."""
    dsn = my_private_server.create_database("cz")
    execute(dsn, "CREATE TABLE calls (id int PRIMARY KEY, outcome text)")
    r = Route(tmp_path, dsn, target_dsn, {"cz.calls": "public.calls"})
    r.drain()
    execute(
        dsn,
        "SET GLOBAL log_bin_compress = ON",
        f"INSERT INTO calls VALUES (1, '{'x' * 2000}')",
        "SET GLOBAL log_bin_compress = OFF",
    )
    run = r.cli("run", "--until-caught-up")
    assert run.returncode == 1
    assert "compressed (log_bin_compress = ON) event" in run.stderr, run.stderr[-2000:]
