"""A configured PostgreSQL table renamed while the daemon streams. pgoutput names a relation
as it was named at each change, so the changes made under the other name looked like an
unconfigured table's and were skipped, checkpoint and all: renaming the table back lost them
for good. Now they are followed by oid (renamed back) or the daemon stops first, naming both
names (still renamed); contents are compared with the source."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.integration.harness import kill, wait_until
from tests.integration.routes import Route, execute, fetch

pytestmark = pytest.mark.integration


def _setup(tmp: Path, src: str, tgt: str) -> Route:
    execute(src, "CREATE TABLE t (id int PRIMARY KEY, v text)",
            "INSERT INTO t VALUES (1, 'one'), (2, 'two')")  # fmt: skip
    r = Route(tmp, src, tgt, {"public.t": "public.t"}, pipeline="rn", max_seconds=0.05)
    r.drain()
    return r


DML = (
    "INSERT INTO t_tmp VALUES (3, 'three')",
    "UPDATE t_tmp SET v = 'one-upd' WHERE id = 1",
    "DELETE FROM t_tmp WHERE id = 2",
)


def test_renamed_and_renamed_back_while_streaming(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    r = _setup(tmp_path, source_dsn, target_dsn)
    proc = r.start()
    try:
        execute(source_dsn, "INSERT INTO t VALUES (5, 'five')")
        wait_until(lambda: len(fetch(target_dsn, "t", "id")) == 3 or proc.poll() is not None)
        execute(source_dsn, "ALTER TABLE t RENAME TO t_tmp", *DML,
                "ALTER TABLE t_tmp RENAME TO t", "INSERT INTO t VALUES (4, 'four')")  # fmt: skip
        want = fetch(source_dsn, "t", "id, v")
        # Caught up, or stopped if it read the changes while the table was still renamed.
        wait_until(lambda: fetch(target_dsn, "t", "id, v") == want or proc.poll() is not None)
    finally:
        code = kill(proc, signal.SIGTERM)
    if code != 0:
        assert "was renamed to public.t_tmp" in r.log.read_text()
    r.drain()  # a stopped daemon replays them now that the name is back
    assert fetch(target_dsn, "t", "id, v") == fetch(source_dsn, "t", "id, v")


def test_still_renamed_stops_naming_both_names_and_replays_after_the_fix(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    r = _setup(tmp_path, source_dsn, target_dsn)
    proc = r.start()
    try:
        execute(source_dsn, "INSERT INTO t VALUES (5, 'five')")
        wait_until(lambda: len(fetch(target_dsn, "t", "id")) == 3 or proc.poll() is not None)
        execute(source_dsn, "ALTER TABLE t RENAME TO t_tmp", *DML)
        assert proc.wait(60) == 1
    finally:
        if proc.poll() is None:
            kill(proc, signal.SIGTERM)
    log = r.log.read_text()
    assert "configured table public.t was renamed to public.t_tmp" in log, log[-3000:]
    assert "rename it back" in log
    assert fetch(target_dsn, "t", "id, v") == [(1, "one"), (2, "two"), (5, "five")]
    execute(source_dsn, "ALTER TABLE t_tmp RENAME TO t")
    r.drain()
    assert fetch(target_dsn, "t", "id, v") == fetch(source_dsn, "t", "id, v")
    assert fetch(target_dsn, "t", "id, v") == [(1, "one-upd"), (3, "three"), (5, "five")]
