"""A DBA-made publication that holds the right tables but withholds changes: one that does not
publish DELETE / TRUNCATE, or (PostgreSQL 15) a row filter or column list on a configured
table. pgoutput would drop those changes without a word and the target would keep rows the
source deleted, miss rows and columns. Aligned when the daemon may change the publication;
otherwise refused by `check` and `run` with the SQL that fixes it, never with the filter's text
(its values may be personal data)."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from tests.integration.routes import Route, execute, fetch

pytestmark = pytest.mark.integration

TABLE = "CREATE TABLE t (id int PRIMARY KEY, a text, b text)"
ALL_OPS = "publish = 'insert, update, delete, truncate'"
FILTERS = {"row filter": "t WHERE (id > 10)", "column list": "t (id, a)"}


def _route(tmp: Path, source_dsn: str, target_dsn: str, allowed: bool) -> Route:
    """One pipeline of table t, named after the (per-test) source database: slots are per
    server. Not ``allowed``: ``create_slot: false``, the DBA makes the slot and the rows."""
    pipeline = "p_" + source_dsn.rsplit("/", 1)[-1]
    extra = "" if allowed else ", create_slot: false"
    r = Route(tmp, source_dsn, target_dsn, {"public.t": "public.t"}, pipeline, source_extra=extra)
    if not allowed:
        # An exported snapshot needs a slot of the daemon's making: the DBA's way is never.
        never = "    source: src\n    snapshot: never\n"
        r.config.write_text(r.config.read_text().replace("    source: src\n", never))
    return r


def _publication(dsn: str, r: Route) -> tuple[object, ...]:
    """(operations published, any row filter or column list left on t)."""
    with psycopg.connect(dsn) as c:
        row = c.execute(
            "SELECT ARRAY[p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate], "
            "EXISTS (SELECT 1 FROM pg_publication_rel pr WHERE pr.prpubid = p.oid "
            "AND (pr.prqual IS NOT NULL OR pr.prattrs IS NOT NULL)) "
            "FROM pg_publication p WHERE p.pubname = %s",
            (f"cdc_sync_{r.pipeline}",),
        ).fetchone()
    assert row is not None
    return tuple(row)


def _fix(output: str, problem: str) -> str:
    """The SQL the line naming ``problem`` says to run."""
    line = next(x for x in output.splitlines() if problem in x)
    return line.split("; fix: ", 1)[1]


def _changes(dsn: str) -> None:
    """Inserts, updates (one moving a row out of id > 10) and deletes in and out of id > 10."""
    execute(
        dsn,
        "INSERT INTO t SELECT g, 'a' || g, 'b' || g FROM generate_series(-5, 25) g "
        "ON CONFLICT (id) DO NOTHING",
        "UPDATE t SET a = a || '!', b = b || '?' WHERE id % 2 = 0",
        "UPDATE t SET id = id - 100 WHERE id = 15",
        "DELETE FROM t WHERE id IN (2, 12, -3)",
    )


def test_unpublished_delete_and_truncate_are_turned_on_when_allowed(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    execute(
        source_dsn,
        TABLE,
        "INSERT INTO t SELECT g, 'a' || g, 'b' || g FROM generate_series(1, 10) g",
    )
    r = _route(tmp_path, source_dsn, target_dsn, allowed=True)
    execute(source_dsn, f"CREATE PUBLICATION cdc_sync_{r.pipeline} FOR TABLE t "
            "WITH (publish = 'insert, update')")  # fmt: skip
    _aligned_then_streams(r, source_dsn, target_dsn)
    execute(source_dsn, "TRUNCATE t", "INSERT INTO t VALUES (100, 'after', 'truncate')")
    r.drain()
    assert fetch(target_dsn, "public.t") == [(100, "after", "truncate")]


def _aligned_then_streams(r: Route, source_dsn: str, target_dsn: str) -> None:
    """The daemon may change the DBA-made publication: check passes, the start aligns it,
    and every change arrives."""
    assert r.cli("check").returncode == 0  # the daemon may change it: not a problem
    r.drain()
    _changes(source_dsn)
    r.drain()
    assert fetch(source_dsn, "t") == fetch(target_dsn, "public.t")
    assert _publication(source_dsn, r) == ([True, True, True, True], False)


def _refused_then_fixed(
    r: Route, source_dsn: str, target_dsn: str, publication: str, problem: str, fix: str
) -> list[str]:
    """A DBA-made publication (``publication``: what follows FOR) that the daemon may not
    change: check and run refuse it naming ``problem`` and ``fix``; the fix printed then
    works and every change arrives. Returns what check and run printed."""
    pub = f"cdc_sync_{r.pipeline}"
    execute(
        source_dsn,
        f"CREATE PUBLICATION {pub} FOR {publication}",
        f"SELECT pg_create_logical_replication_slot('{pub}', 'pgoutput')",
    )
    checked = r.cli("check")
    assert checked.returncode != 0
    assert problem in checked.stdout and fix in checked.stdout, checked.stdout
    ran = r.cli("run", "--until-caught-up")
    assert ran.returncode != 0
    assert problem in ran.stderr, ran.stderr[-3000:]
    execute(source_dsn, _fix(checked.stdout, problem))
    assert r.cli("check").returncode == 0
    r.drain()
    _changes(source_dsn)
    r.drain()
    assert fetch(source_dsn, "t") == fetch(target_dsn, "public.t")
    return [checked.stdout, checked.stderr, ran.stdout, ran.stderr]


def test_unpublished_delete_is_refused_with_the_fix_when_not_allowed(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    execute(source_dsn, TABLE)
    r = _route(tmp_path, source_dsn, target_dsn, allowed=False)
    pub = f"cdc_sync_{r.pipeline}"
    _refused_then_fixed(
        r,
        source_dsn,
        target_dsn,
        "TABLE t WITH (publish = 'insert, update')",
        f"publication {pub!r} does not publish delete, truncate",
        f"and changing it is not allowed; fix: ALTER PUBLICATION {pub} SET ({ALL_OPS});",
    )
    execute(source_dsn, "TRUNCATE t", "INSERT INTO t VALUES (100, 'after', 'truncate')")
    r.drain()
    assert fetch(target_dsn, "public.t") == [(100, "after", "truncate")]


@pytest.mark.parametrize("kind", FILTERS)
def test_row_filter_or_column_list_is_removed_when_allowed(
    tmp_path: Path, source_dsn: str, target_dsn: str, kind: str
) -> None:
    execute(
        source_dsn,
        TABLE,
        "INSERT INTO t SELECT g, 'a' || g, 'b' || g FROM generate_series(1, 20) g",
    )
    r = _route(tmp_path, source_dsn, target_dsn, allowed=True)
    execute(source_dsn, f"CREATE PUBLICATION cdc_sync_{r.pipeline} FOR TABLE {FILTERS[kind]}")
    _aligned_then_streams(r, source_dsn, target_dsn)


@pytest.mark.parametrize("kind", FILTERS)
def test_row_filter_or_column_list_is_refused_with_the_fix_when_not_allowed(
    tmp_path: Path, source_dsn: str, target_dsn: str, kind: str
) -> None:
    execute(source_dsn, TABLE)
    r = _route(tmp_path, source_dsn, target_dsn, allowed=False)
    pub = f"cdc_sync_{r.pipeline}"
    printed = _refused_then_fixed(
        r,
        source_dsn,
        target_dsn,
        f"TABLE {FILTERS[kind]}",
        f"publication {pub!r} has a {kind} on public.t",
        f"and changing it is not allowed; fix: ALTER PUBLICATION {pub} SET TABLE public.t;",
    )
    for out in printed:
        assert "id > 10" not in out  # a filter's text may hold personal data


def test_publication_narrowed_while_streaming_stops_the_daemon(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    """pgoutput judges each change by the publication as it was then: a DELETE withheld
    after a DBA's ALTER PUBLICATION is never sent again, even after the fix. The daemon
    stops within its check interval, saying so; the restart realigns it (allowed) and
    verify --repair brings back what was withheld."""
    execute(source_dsn, TABLE, "INSERT INTO t SELECT g, 'a', 'b' FROM generate_series(1, 5) g")
    r = _route(tmp_path, source_dsn, target_dsn, allowed=True)
    r.drain()
    started = r.log.read_text().count('"pipeline_started"')
    proc = r.start()
    pub = f"cdc_sync_{r.pipeline}"
    deadline = time.monotonic() + 30  # streaming: its start aligns the publication
    while r.log.read_text().count('"pipeline_started"') == started and time.monotonic() < deadline:
        time.sleep(0.1)
    execute(
        source_dsn,
        f"ALTER PUBLICATION {pub} SET (publish = 'insert, update')",
        "DELETE FROM t WHERE id = 1",
        "UPDATE t SET a = 'x' WHERE id = 3",
    )
    assert proc.wait(60) != 0
    log = r.log.read_text()
    assert f"publication {pub!r} was changed while the pipeline streamed" in log
    assert "does not publish delete, truncate" in log and "verify --repair" in log
    r.drain()  # the start aligns the publication again, and says what was withheld
    assert _publication(source_dsn, r) == ([True, True, True, True], False)
    assert '"publication_realigned"' in r.log.read_text()
    execute(source_dsn, "DELETE FROM t WHERE id = 2")
    r.drain()
    ids = [row[0] for row in fetch(target_dsn, "public.t")]
    assert ids == [1, 3, 4, 5]  # 1: withheld for good; 2: sent after the fix
    assert r.cli("verify", "-p", r.pipeline, "--repair").returncode in (0, 1)
    assert fetch(source_dsn, "t") == fetch(target_dsn, "public.t")
