"""Tables that appear in a pipeline after it started streaming: a PostgreSQL table dropped
and created again (it left the publication, so its new rows were never sent), a table added
to the config, a renamed table. Before, their rows were skipped without a word; now they are
copied (or the pipeline stops naming the table), and the target ends equal to the source."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.harness import kill, wait_until
from tests.integration.routes import Route, execute, fetch

pytestmark = pytest.mark.integration

T = "CREATE TABLE t (id int PRIMARY KEY, v varchar(20))"


def _rows(dsn: str, table: str = "t") -> list[tuple[object, ...]]:
    return fetch(dsn, table)


def test_pg_table_dropped_and_created_again_while_running(
    source_dsn: str, target_dsn: str, tmp_path: Path
) -> None:
    execute(source_dsn, T, "INSERT INTO t VALUES (1, 'old'), (2, 'old')")
    r = Route(tmp_path, source_dsn, target_dsn, {"public.t": None}, level="DEBUG")
    r.drain()
    proc = r.start()
    try:
        execute(source_dsn, "INSERT INTO t VALUES (3, 'streamed')")
        wait_until(lambda: len(_rows(target_dsn)) == 3)
        execute(
            source_dsn,
            "DROP TABLE t",
            T,
            "INSERT INTO t VALUES (2, 'new'), (10, 'new')",
        )
        # seen within seconds: the pipeline restarts, publishes the table again, copies it
        wait_until(lambda: (2, "new") in _rows(target_dsn) and (10, "new") in _rows(target_dsn))
        execute(
            source_dsn, "INSERT INTO t VALUES (11, 'after')", "UPDATE t SET v = 'x' WHERE id = 10"
        )
        wait_until(lambda: (11, "after") in _rows(target_dsn) and (10, "x") in _rows(target_dsn))
    finally:
        assert kill(proc, signal.SIGTERM) == 0
    log = r.log.read_text()
    assert "left the publication" in log and "tables_copied_before_streaming" in log
    # The old table's rows were not deleted row by row (a DROP is no row change): kept in the
    # target until verify --repair, as for a dropped partition.
    source = _rows(source_dsn)
    assert set(source) <= set(_rows(target_dsn))
    r.cli("verify", "-p", r.pipeline, "--repair")
    assert _rows(target_dsn) == source


def test_pg_table_dropped_and_created_again_while_stopped(
    source_dsn: str, target_dsn: str, tmp_path: Path
) -> None:
    execute(source_dsn, T, "INSERT INTO t VALUES (1, 'old')")
    r = Route(tmp_path, source_dsn, target_dsn, {"public.t": None})
    r.drain()
    execute(source_dsn, "DROP TABLE t", T, "INSERT INTO t VALUES (1, 'new'), (5, 'new')")
    r.drain()
    assert _rows(target_dsn) == _rows(source_dsn) == [(1, "new"), (5, "new")]
    r.drain()  # copied once: the next start streams on
    assert "tables_copied_before_streaming" not in r.cli("run", "--until-caught-up").stderr


@pytest.mark.parametrize("engine", ["pg", "mysql"])
def test_table_added_to_the_config_is_copied(
    engine: str, source_dsn: str, my_source_dsn: str, target_dsn: str, tmp_path: Path
) -> None:
    src = source_dsn if engine == "pg" else my_source_dsn
    schema = "public" if engine == "pg" else src.rsplit("/", 1)[1]
    execute(
        src,
        T,
        "CREATE TABLE u (id int PRIMARY KEY, w varchar(20))",
        "INSERT INTO t VALUES (1, 'a')",
        "INSERT INTO u VALUES (1, 'before'), (2, 'before')",
    )
    first = Route(tmp_path, src, target_dsn, {f"{schema}.t": "public.t"})
    first.drain()
    execute(src, "INSERT INTO u VALUES (3, 'streamed')", "UPDATE u SET w = 'changed' WHERE id = 1")
    both = Route(tmp_path, src, target_dsn, {f"{schema}.t": "public.t", f"{schema}.u": "public.u"})
    res = both.drain()
    assert "tables_copied_before_streaming" in res.stderr
    assert (
        _rows(target_dsn, "u")
        == _rows(src, "u")
        == [(1, "changed"), (2, "before"), (3, "streamed")]
    )
    execute(src, "DELETE FROM u WHERE id = 2")
    both.drain()
    assert _rows(target_dsn, "u") == _rows(src, "u")
    assert _rows(target_dsn, "t") == _rows(src, "t")


def test_pg_table_renamed_while_running_stops_then_resumes_under_the_new_name(
    source_dsn: str, target_dsn: str, tmp_path: Path
) -> None:
    execute(source_dsn, T, "INSERT INTO t VALUES (1, 'a')")
    r = Route(tmp_path, source_dsn, target_dsn, {"public.t": "public.t"})
    r.drain()
    proc = r.start()
    try:
        execute(source_dsn, "INSERT INTO t VALUES (2, 'b')")
        wait_until(lambda: len(_rows(target_dsn)) == 2)
        execute(
            source_dsn, "ALTER TABLE t RENAME TO t_archive", "INSERT INTO t_archive VALUES (3, 'c')"
        )
        assert proc.wait(timeout=60) == 1  # the restart finds no public.t: a clear stop
    finally:
        if proc.poll() is None:
            kill(proc)
    # Stopped at the Relation message under the new name, or by the restart after the
    # publication check saw the table go (then the start finds no public.t).
    log = r.log.read_text()
    assert (
        "configured table public.t was renamed to public.t_archive" in log
        or "configured table public.t does not exist" in log
    ), log[-3000:]
    execute(source_dsn, "INSERT INTO t_archive VALUES (4, 'd')")
    renamed = Route(tmp_path, source_dsn, target_dsn, {"public.t_archive": "public.t"})
    renamed.drain()
    assert _rows(target_dsn, "t") == _rows(source_dsn, "t_archive") == [
        (1, "a"), (2, "b"), (3, "c"), (4, "d")
    ]  # fmt: skip


def test_mysql_table_renamed_while_running_stops_then_resumes_under_the_new_name(
    my_source_dsn: str, target_dsn: str, tmp_path: Path
) -> None:
    db = my_source_dsn.rsplit("/", 1)[1]
    execute(my_source_dsn, T, "INSERT INTO t VALUES (1, 'a')")
    r = Route(tmp_path, my_source_dsn, target_dsn, {f"{db}.t": "public.t"})
    r.drain()
    proc = r.start()
    try:
        execute(my_source_dsn, "INSERT INTO t VALUES (2, 'b')")
        wait_until(lambda: len(_rows(target_dsn)) == 2)
        execute(
            my_source_dsn, "RENAME TABLE t TO t_archive", "INSERT INTO t_archive VALUES (3, 'c')"
        )
        assert proc.wait(timeout=60) == 1
    finally:
        if proc.poll() is None:
            kill(proc)
    assert f"configured table {db}.t was renamed at the source" in r.log.read_text()
    execute(my_source_dsn, "UPDATE t_archive SET v = 'b2' WHERE id = 2")
    renamed = Route(tmp_path, my_source_dsn, target_dsn, {f"{db}.t_archive": "public.t"})
    renamed.drain()
    assert _rows(target_dsn) == _rows(my_source_dsn, "t_archive") == [
        (1, "a"), (2, "b2"), (3, "c")
    ]  # fmt: skip


def test_mysql_online_schema_change_swap_keeps_streaming(
    my_source_dsn: str, target_dsn: str, tmp_path: Path
) -> None:
    """gh-ost / pt-online-schema-change: the configured name exists again right after the
    swap, so the pipeline goes on."""
    db = my_source_dsn.rsplit("/", 1)[1]
    execute(my_source_dsn, T, "INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    r = Route(tmp_path, my_source_dsn, target_dsn, {f"{db}.t": "public.t"})
    r.drain()
    proc = r.start()
    try:
        execute(
            my_source_dsn,
            "CREATE TABLE t_new (id int PRIMARY KEY, v varchar(40))",
            "INSERT INTO t_new SELECT * FROM t",
            "RENAME TABLE t TO t_old, t_new TO t",
            "INSERT INTO t VALUES (3, 'after the swap')",
        )
        wait_until(lambda: len(_rows(target_dsn)) == 3)
        assert proc.poll() is None
    finally:
        assert kill(proc, signal.SIGTERM) == 0
    assert _rows(target_dsn) == _rows(my_source_dsn)


def test_pg_recreated_table_is_copied_even_when_the_first_start_fails(
    source_dsn: str, target_dsn: str, tmp_path: Path
) -> None:
    """The start that re-publishes the table stops later on (the target refuses the new
    table's type): the copy is recorded before that, so the next start still makes it."""
    execute(source_dsn, T, "INSERT INTO t VALUES (1, 'old')")
    r = Route(tmp_path, source_dsn, target_dsn, {"public.t": None})
    r.drain()
    execute(
        source_dsn,
        "DROP TABLE t",
        "CREATE TABLE t (id int PRIMARY KEY, v boolean)",
        "INSERT INTO t VALUES (1, true), (2, false)",
    )
    failed = r.cli("run", "--until-caught-up")
    assert failed.returncode == 1 and "boolean" in failed.stderr, failed.stderr[-2000:]
    execute(target_dsn, "DROP TABLE t")  # the DBA's fix: let the daemon make it anew
    r.drain()
    assert _rows(target_dsn) == _rows(source_dsn) == [(1, True), (2, False)]


@pytest.mark.parametrize("point", ["after_decode@1001", "after_decode@3500", "mid_batch@3"])
def test_pg_recreated_table_copy_survives_kill_9(
    point: str, source_dsn: str, target_dsn: str, tmp_path: Path
) -> None:
    """SIGKILL in the middle of the late copy (chunks of 1000 rows: after one was committed,
    in the fourth, after a flush into the open transaction): the next start resumes the
    copy, and every row is there once, with one audit row."""
    execute(source_dsn, T, "INSERT INTO t VALUES (1, 'old')")
    r = Route(tmp_path, source_dsn, target_dsn, {"public.t": None}, flush_rows=500)
    r.config.write_text(
        r.config.read_text().replace(
            "    audit: row\n", "    audit: row\n    snapshot_chunk_rows: 1000\n"
        )
    )
    r.drain()
    execute(
        source_dsn,
        "DROP TABLE t",
        T,
        "INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 5000) g",
    )
    killed = subprocess.run(
        [sys.executable, "-m", "cdc_sync", "run", "--until-caught-up", "-c", str(r.config)],
        env={**r.env, "CDC_SYNC_FAULT": point},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL
    r.drain()
    assert _rows(target_dsn) == _rows(source_dsn)
    copied = fetch(target_dsn, "cdc_sync_audit WHERE op = 'snapshot'", "count(*)")
    assert copied == [(5001,)]  # the first copy's row 1, then each of the 5000 once
