"""``dlq`` / ``offsets reset`` / ``replay`` arguments as a DBA types them: ids shared by two
targets, unknown or closed ids, unqualified table names, truncated lists, bad positions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.harness import kill, wait_until
from tests.integration.routes import execute, fetch

pytestmark = pytest.mark.integration

PHONE = "columns: {phone: {transforms: [{phone: {region: CN, format: e164}}]}}"

CONFIG = """
sources:
  crm: {type: postgres, dsn: "${SRC_DSN}"}
targets:
  hub: {type: postgres, dsn: "${HUB_DSN}"}
  copy: {type: mysql, dsn: "${COPY_DSN}"}
pipelines:
  @HUB@:
    source: crm
    target: hub
    tables:
      public.customers: {@PHONE@}
  @COPY@:
    source: crm
    target: copy
    tables:
      public.leads: {target: @DB@.leads, @PHONE@}
logging: {level: WARNING, format: json}
"""


class TwoTargets:
    """One PostgreSQL source, two pipelines to two targets (PostgreSQL and MariaDB): the
    dead-letter ids of each target start at 1."""

    def __init__(self, tmp: Path, source_dsn: str, hub_dsn: str, copy_dsn: str) -> None:
        suffix = source_dsn.rsplit("/", 1)[-1]  # slots are per cluster: unique names
        self.hub, self.copy = f"to_hub_{suffix}", f"to_copy_{suffix}"
        self.hub_dsn, self.copy_dsn = hub_dsn, copy_dsn
        self.config = tmp / "two_targets.yaml"
        fill = {"@HUB@": self.hub, "@COPY@": self.copy, "@DB@": copy_dsn.rsplit("/", 1)[-1]}
        text = CONFIG.replace("@PHONE@", PHONE)
        for mark, value in fill.items():
            text = text.replace(mark, value)
        self.config.write_text(text)
        self.env = {**os.environ, "SRC_DSN": source_dsn, "HUB_DSN": hub_dsn, "COPY_DSN": copy_dsn}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cdc_sync", *args, "-c", str(self.config)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def drain(self) -> None:
        res = self.cli("run", "--until-caught-up")
        assert res.returncode == 0, res.stderr[-3000:]

    def letters(self) -> dict[str, list[tuple[int, str, str]]]:
        """Per target: (id, pipeline, status) of every dead letter, read from the target."""
        cols = "id, pipeline, status"
        return {
            "hub": [tuple(r) for r in fetch(self.hub_dsn, "cdc_sync_dead_letters", cols)],  # type: ignore[misc]
            "copy": [tuple(r) for r in fetch(self.copy_dsn, "cdc_sync_dead_letters", cols)],  # type: ignore[misc]
        }


@pytest.fixture
def two(tmp_path: Path, source_dsn: str, target_dsn: str, my_target_dsn: str) -> TwoTargets:
    execute(
        source_dsn,
        "CREATE TABLE customers (id int PRIMARY KEY, phone text)",
        "CREATE TABLE leads (id int PRIMARY KEY, phone text)",
        "INSERT INTO customers VALUES (1, '+86 138 0013 0001'), (2, 'bad-customer-phone')",
        "INSERT INTO leads VALUES (10, '+86 138 0013 0010'), (20, 'bad-lead-phone')",
    )
    t = TwoTargets(tmp_path, source_dsn, target_dsn, my_target_dsn)
    t.drain()
    assert t.letters() == {"hub": [(1, t.hub, "open")], "copy": [(1, t.copy, "open")]}
    return t


def test_an_id_of_two_pipelines_is_refused_unless_pipeline_narrows_it(two: TwoTargets) -> None:
    both_open = two.letters()

    listed = two.cli("dlq", "list")
    assert listed.returncode == 0, listed.stderr
    lines = sorted(listed.stdout.splitlines())
    assert [line.split()[:3] for line in lines] == sorted(
        [["1", two.hub, "public.customers"], ["1", two.copy, "public.leads"]]
    )

    for args in (("show",), ("retry",), ("discard", "--yes")):
        res = two.cli("dlq", *args, "--id", "1")
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert res.stdout == ""
        pipelines = ", ".join(sorted([two.hub, two.copy]))
        assert res.stderr == (
            f"error: --id 1: dead letters of pipelines {pipelines} have this id (ids are "
            "numbered per target); add --pipeline to choose one\n"
        )
        assert two.letters() == both_open  # nothing was touched in either target

    shown = two.cli("dlq", "show", "-p", two.hub, "--id", "1")
    assert shown.returncode == 0, shown.stderr
    assert [(d["id"], d["pipeline"], d["pk"]) for d in json.loads(shown.stdout)] == [
        (1, two.hub, '{"id":2}')
    ]

    res = two.cli("dlq", "discard", "-p", two.hub, "--id", "1", "--yes")
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"pipeline {two.hub}: discarded 1\n"
    assert two.letters() == {"hub": [(1, two.hub, "discarded")], "copy": [(1, two.copy, "open")]}


def test_unknown_or_closed_ids_fail_before_anything_changes(two: TwoTargets) -> None:
    for args in (("retry",), ("discard", "--yes"), ("show",)):
        res = two.cli("dlq", *args, "--id", "999")
        assert res.returncode == 1, (args, res.stdout, res.stderr)
        assert res.stderr == (
            "error: no dead letter with id 999 (dlq list --status all lists every id)\n"
        )

    # One good id with an unknown one: refused as a whole, the good letter stays open.
    res = two.cli("dlq", "discard", "-p", two.copy, "--id", "1", "--id", "999", "--yes")
    assert res.returncode == 1
    assert res.stderr == (
        f"error: no dead letter with id 999 in pipeline {two.copy} "
        "(dlq list --status all lists every id)\n"
    )
    assert two.letters()["copy"] == [(1, two.copy, "open")]

    assert two.cli("dlq", "discard", "-p", two.hub, "--id", "1", "--yes").returncode == 0
    for args in (("retry",), ("discard", "--yes")):
        res = two.cli("dlq", *args, "-p", two.hub, "--id", "1")
        assert res.returncode == 1, (args, res.stdout, res.stderr)
        assert res.stderr.startswith(
            f"error: dead letter 1 of pipeline {two.hub} is already discarded (at "
        )
        assert res.stderr.endswith("; nothing to do (dlq show --id 1 has who and when)\n")
    # A closed letter is still shown; the other pipeline's letter is untouched.
    shown = two.cli("dlq", "show", "-p", two.hub, "--id", "1")
    assert [d["status"] for d in json.loads(shown.stdout)] == ["discarded"]
    assert two.letters() == {"hub": [(1, two.hub, "discarded")], "copy": [(1, two.copy, "open")]}


def test_table_names_resolve_like_verify(two: TwoTargets) -> None:
    unqualified = two.cli("dlq", "list", "--table", "customers")
    qualified = two.cli("dlq", "list", "--table", "public.customers")
    assert unqualified.returncode == qualified.returncode == 0, unqualified.stderr
    assert unqualified.stdout == qualified.stdout
    assert [line.split()[:3] for line in unqualified.stdout.splitlines()] == [
        ["1", two.hub, "public.customers"]
    ]
    # The target's name of a table works too.
    copy_db = two.copy_dsn.rsplit("/", 1)[-1]
    by_target = two.cli("dlq", "list", "--table", f"{copy_db}.leads")
    assert [line.split()[:2] for line in by_target.stdout.splitlines()] == [["1", two.copy]]

    res = two.cli("dlq", "list", "--table", "nosuch")
    assert res.returncode == 2
    assert sorted(res.stderr.splitlines()) == sorted(
        [
            f"error: --table: nosuch is not a table of pipeline {two.hub}",
            f"error: --table: nosuch is not a table of pipeline {two.copy}",
        ]
    )
    res = two.cli("dlq", "list", "-p", two.copy, "--table", "customers")
    assert res.returncode == 2
    assert res.stderr == f"error: --table: customers is not a table of pipeline {two.copy}\n"
    res = two.cli("dlq", "discard", "--all", "--table", "a.b.c", "--yes")
    assert res.returncode == 2, res.stderr
    assert two.letters()["hub"] == [(1, two.hub, "open")]

    # --all with an unqualified table closes that table's letters only.
    res = two.cli("dlq", "discard", "--all", "--table", "customers", "--yes")
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"pipeline {two.hub}: discarded 1\n"
    assert two.letters() == {"hub": [(1, two.hub, "discarded")], "copy": [(1, two.copy, "open")]}


def test_a_truncated_list_says_so(two: TwoTargets, source_dsn: str) -> None:
    execute(source_dsn, "INSERT INTO customers VALUES (3, 'bad-3'), (4, 'bad-4')")
    two.drain()
    res = two.cli("dlq", "list", "-p", two.hub, "--limit", "2")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == ["1", "2"]
    assert lines[-1] == (
        f"pipeline {two.hub}: showing 2 of 3 open dead letters; use --limit N (0: all)"
    )

    whole = two.cli("dlq", "list", "-p", two.hub, "--limit", "0")
    assert [line.split()[0] for line in whole.stdout.splitlines()] == ["1", "2", "3"]
    exact = two.cli("dlq", "list", "-p", two.hub, "--limit", "3")
    assert exact.stdout == whole.stdout

    as_json = two.cli("dlq", "list", "--limit", "2", "--json")
    assert as_json.returncode == 0, as_json.stderr
    rows = json.loads(as_json.stdout)  # still one JSON document: the notice is on stderr
    assert sorted((r["pipeline"], r["id"]) for r in rows) == sorted(
        [(two.hub, 1), (two.hub, 2), (two.copy, 1)]
    )
    assert as_json.stderr == (
        f"pipeline {two.hub}: showing 2 of 3 open dead letters; use --limit N (0: all)\n"
    )

    res = two.cli("dlq", "list", "--status", "all", "-p", two.copy, "--limit", "1")
    assert res.stdout.splitlines()[-1].startswith(f"1  {two.copy}  public.leads")


def test_unparsable_positions_exit_2(two: TwoTargets) -> None:
    for args in (
        ("replay", "-p", two.hub, "--from", "earliest"),
        ("replay", "-p", two.hub, "--from", "0/0", "--to", "bogus"),
        ("replay", "-p", two.copy, "--from", "mysql-bin.000001:4"),
    ):
        res = two.cli(*args)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert res.stderr.startswith(f"error: pipeline {args[2]}: --")
        assert "expected an LSN" in res.stderr


def test_unparsable_reset_target_exits_2(two: TwoTargets) -> None:
    res = two.cli("offsets", "reset", "-p", two.hub, "--to", "bogus", "--dry-run")
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith(f"error: pipeline {two.hub}: --to 'bogus': expected an LSN")


def test_replay_under_a_running_daemon_says_replay(two: TwoTargets) -> None:
    position = fetch(two.hub_dsn, "cdc_sync_checkpoints", "position")[0][0]
    daemon = subprocess.Popen(
        [sys.executable, "-m", "cdc_sync", "run", "-p", two.hub, "-c", str(two.config)],
        env=two.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _leased(two.hub_dsn, two.hub), timeout=60)
        res = two.cli("replay", "-p", two.hub, "--from", str(position))
    finally:
        kill(daemon, signal.SIGTERM)
    assert res.returncode == 1
    assert "is running (lease held by" in res.stderr
    assert "replay" in res.stderr.split("stop the daemon first", 1)[-1]
    assert "reset" not in res.stderr


def _leased(dsn: str, pipeline: str) -> bool:
    rows = fetch(
        dsn, f"cdc_sync_checkpoints WHERE pipeline = '{pipeline}'", "lease_expires_at > now()"
    )
    return bool(rows and rows[0][0])
