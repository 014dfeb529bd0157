"""Two-way links PostgreSQL ↔ MariaDB: loop prevention, per-column priority, opt-outs that
survive conflicts, convergence under concurrent writes and kill -9 (real servers)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cdc_sync.testing.pgserver import PgServer
from tests.integration.harness import Cli, kill, wait_until
from tests.integration.routes import execute, fetch, my_connect, server_id_extra

pytestmark = pytest.mark.integration

CONFIG = """
sources:
  crm: {{type: postgres, dsn: "${{CRM_DSN}}", heartbeat_seconds: 1}}
  dialer: {{type: mysql, dsn: "${{DIALER_DSN}}"{server_id}}}
links:
  {link}:
    between: [crm, dialer]
    tables:
      public.customers <-> {db}.contacts:
        columns: {{name: contact_name, phone: contact_phone}}
        conflict:
{conflict}
          suppression: {{column: do_not_call, wins_when: 1}}
logging: {{level: INFO, format: json}}
"""


LWW = """          rule: last_write_wins"""
PRIORITY = """          rule: source_priority
          source_priority: {default: crm}"""
PER_COLUMN = """          rule: source_priority
          source_priority: {default: crm, columns: {last_call_outcome: dialer}}"""
RULES = {"source_priority": PRIORITY, "last_write_wins": LWW, "per_column": PER_COLUMN}

PG_TABLE = (
    "CREATE TABLE customers (id int PRIMARY KEY, name varchar(100), phone varchar(40), "
    "do_not_call smallint NOT NULL DEFAULT 0, last_call_outcome varchar(40))",
    "ALTER TABLE customers REPLICA IDENTITY FULL",
)
MY_TABLE = (
    "CREATE TABLE contacts (id int PRIMARY KEY, contact_name varchar(100), "
    "contact_phone varchar(40), do_not_call smallint NOT NULL DEFAULT 0, "
    "last_call_outcome varchar(40))"
)
PG_COLS = "id, name, phone, do_not_call, last_call_outcome"
MY_COLS = "id, contact_name, contact_phone, do_not_call, last_call_outcome"


class Link(Cli):
    """Both directions of one link, run by one daemon process through the CLI."""

    def __init__(self, tmp: Path, name: str, crm: str, dialer: str, conflict: str) -> None:
        self.name, self.crm, self.dialer = name, crm, dialer
        self.db = dialer.rsplit("/", 1)[-1]
        self.config = tmp / f"{name}.yaml"
        self.config.write_text(
            CONFIG.format(
                link=name,
                db=self.db,
                conflict=conflict,
                server_id=server_id_extra(dialer),
            )
        )
        self.env = {**os.environ, "CRM_DSN": crm, "DIALER_DSN": dialer}
        self.log = tmp / f"{name}.log"
        self.to_dialer = f"{name}__crm_to_dialer"
        self.to_crm = f"{name}__dialer_to_crm"

    def crm_rows(self) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in fetch(self.crm, "customers", PG_COLS)]

    def dialer_rows(self) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in fetch(self.dialer, "contacts", MY_COLS)]

    def converged(self) -> bool:
        return self.crm_rows() == self.dialer_rows()

    def differences(self) -> list[tuple[Any, Any]]:
        a, b = self.crm_rows(), self.dialer_rows()
        return [(x, y) for x, y in zip(a, b, strict=False) if x != y] + (
            [("count", (len(a), len(b)))] if len(a) != len(b) else []
        )

    def audit(self, side: str, pipeline: str) -> list[tuple[str, str]]:
        q = (
            "SELECT op, pk FROM cdc_sync_audit WHERE pipeline = %s AND outcome = 'applied' "
            "AND op <> 'transaction' ORDER BY id"
        )
        if side == "crm":
            with psycopg.connect(self.crm) as c:
                return [(str(op), _pk(pk)) for op, pk in c.execute(q, (pipeline,))]
        with my_connect(self.dialer) as c, c.cursor() as cur:
            cur.execute(q, (pipeline,))
            return [(str(op), _pk(pk)) for op, pk in cur.fetchall()]

    def conflicts(self, side: str) -> list[dict[str, Any]]:
        q = "SELECT kind, winner, pk, resolved FROM cdc_sync_conflicts ORDER BY id"
        if side == "crm":
            with psycopg.connect(self.crm) as c:
                rows = list(c.execute(q))
        else:
            with my_connect(self.dialer) as c, c.cursor() as cur:
                cur.execute(q)
                rows = list(cur.fetchall())
        return [
            {"kind": k, "winner": w, "pk": _pk(pk), "resolved": _json(r)} for k, w, pk, r in rows
        ]


def _pk(pk: Any) -> str:
    return json.dumps(_json(pk), sort_keys=True)


def _json(v: Any) -> Any:
    return json.loads(v) if isinstance(v, str | bytes) else v


@pytest.fixture
def crm(source_dsn: str, pg_source_server: PgServer) -> Iterator[str]:
    execute(source_dsn, *PG_TABLE)
    yield source_dsn
    # Replication origins are per cluster and limited like slots: give them back.
    with psycopg.connect(pg_source_server.dsn(), autocommit=True) as c:
        for (name,) in c.execute(
            "SELECT roname FROM pg_replication_origin WHERE roname LIKE 'cdc_sync_%%'"
        ).fetchall():
            with contextlib.suppress(psycopg.Error):
                c.execute("SELECT pg_replication_origin_drop(%s)", (name,))


@pytest.fixture
def dialer(my_source_dsn: str) -> str:
    execute(my_source_dsn, MY_TABLE)
    return my_source_dsn


def _stop(proc: subprocess.Popen[bytes]) -> None:
    assert kill(proc, signal.SIGTERM) == 0


@pytest.mark.slow
def test_changes_cross_once_and_never_come_back(tmp_path: Path, crm: str, dialer: str) -> None:
    link = Link(tmp_path, "lk1", crm, dialer, PRIORITY)
    res = link.cli("check")
    assert res.returncode == 0, res.stdout + res.stderr
    execute(crm, "ALTER TABLE customers REPLICA IDENTITY DEFAULT")
    res = link.cli("check")
    assert res.returncode != 0 and "REPLICA IDENTITY FULL" in res.stdout + res.stderr
    execute(crm, "ALTER TABLE customers REPLICA IDENTITY FULL")
    proc = link.start()
    try:
        wait_until(lambda: _running(link), timeout=60)
        execute(crm, "INSERT INTO customers VALUES (1, 'Ann', '+100', 0, NULL)")
        execute(dialer, "INSERT INTO contacts VALUES (2, 'Bob', '+200', 0, 'busy')")
        wait_until(lambda: len(link.crm_rows()) == 2 and link.converged(), timeout=60)
        execute(crm, "UPDATE customers SET name = 'Ann B' WHERE id = 1")
        wait_until(lambda: link.dialer_rows()[0][1] == "Ann B", timeout=60)
        execute(dialer, "UPDATE contacts SET last_call_outcome = 'answered' WHERE id = 2")
        execute(dialer, "DELETE FROM contacts WHERE id = 1")
        wait_until(lambda: len(link.crm_rows()) == 1 and link.converged(), timeout=60)
        time.sleep(3)  # an echo, had there been one, would have arrived by now
    finally:
        _stop(proc)
    assert link.crm_rows() == [(2, "Bob", "+200", 0, "answered")]
    one, two = '{"id": 1}', '{"id": 2}'
    # Each change crossed exactly once, in its own direction only.
    assert link.audit("dialer", link.to_dialer) == [("insert", one), ("update", one)]
    assert link.audit("crm", link.to_crm) == [("insert", two), ("update", two), ("delete", one)]
    assert link.conflicts("crm") == [] and link.conflicts("dialer") == []


@pytest.mark.slow
def test_source_priority_merges_columns_and_an_opt_out_survives(
    tmp_path: Path, crm: str, dialer: str
) -> None:
    """The CRM owns the row but the dialer owns last_call_outcome: a column both sides
    changed goes to its owner, one only a side changed keeps that change."""
    link = Link(tmp_path, "lk2", crm, dialer, PER_COLUMN)
    rows = ", ".join(f"({i}, '{n}', '+{i}00', 0, NULL)"
                     for i, n in enumerate(["Ann", "Bob", "Cy", "Dee"], 1))  # fmt: skip
    execute(crm, f"INSERT INTO customers VALUES {rows}")
    execute(dialer, f"INSERT INTO contacts VALUES {rows}")
    proc = link.start()
    try:
        wait_until(lambda: _running(link), timeout=60)
    finally:
        _stop(proc)
    # Both sides change the same rows while no daemon runs: every pair conflicts.
    execute(crm, "UPDATE customers SET name = 'Ann CRM', phone = '+101' WHERE id = 1",
                 "UPDATE customers SET do_not_call = 1, name = 'Bob CRM' WHERE id = 2",
                 "UPDATE customers SET name = 'Cy CRM' WHERE id = 3",
                 "UPDATE customers SET name = 'Dee CRM', last_call_outcome = 'crm' "
                 "WHERE id = 4")  # fmt: skip
    execute(dialer, "UPDATE contacts SET contact_name = 'Ann D', contact_phone = '+109', "
                    "last_call_outcome = 'answered' WHERE id = 1",
                    "UPDATE contacts SET contact_name = 'Bob D' WHERE id = 2",
                    "UPDATE contacts SET do_not_call = 1, last_call_outcome = 'opt-out' "
                    "WHERE id = 3",
                    "UPDATE contacts SET contact_name = 'Dee D', last_call_outcome = 'busy' "
                    "WHERE id = 4")  # fmt: skip
    _run_until_converged(link)
    assert link.crm_rows() == [
        # both changed name and phone: the CRM's; only the dialer changed the outcome
        (1, "Ann CRM", "+101", 0, "answered"),
        (2, "Bob CRM", "+200", 1, None),
        # the dialer's opt-out survives although the CRM owns the row
        (3, "Cy CRM", "+300", 1, "opt-out"),
        # both changed name and outcome: each column goes to its owner
        (4, "Dee CRM", "+400", 0, "busy"),
    ]
    want = {
        "dialer": {1: "merged", 2: "incoming", 3: "merged", 4: "merged"},  # the CRM's arriving
        "crm": {1: "merged", 2: "current", 3: "merged", 4: "merged"},  # the dialer's arriving
    }
    for side in ("crm", "dialer"):
        got = {json.loads(c["pk"])["id"]: c["winner"] for c in link.conflicts(side)}
        assert got == want[side], side
        assert {c["kind"] for c in link.conflicts(side)} == {"update_update"}


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["per_column", "last_write_wins"])
def test_insert_insert_update_delete_and_delete_update(
    tmp_path: Path, crm: str, dialer: str, rule: str
) -> None:
    """The documented outcomes (docs/two-way.md): insert/insert merges as an update/update;
    update against delete goes to the row's owner (source_priority) or to the delete
    (last_write_wins); both sides end equal."""
    link = Link(tmp_path, "lk5", crm, dialer, RULES[rule])
    rows = "(1, 'a', '+1', 0, NULL), (2, 'b', '+2', 0, NULL)"
    execute(crm, f"INSERT INTO customers VALUES {rows}")
    execute(dialer, f"INSERT INTO contacts VALUES {rows}")
    proc = link.start()
    try:
        wait_until(lambda: _running(link), timeout=60)
    finally:
        _stop(proc)
    execute(crm, "INSERT INTO customers VALUES (3, 'crm', '+3', 0, 'c')",
                 "DELETE FROM customers WHERE id = 1",
                 "UPDATE customers SET name = 'b-crm' WHERE id = 2")  # fmt: skip
    time.sleep(1.1)  # the dialer's changes are the later ones (last_write_wins)
    execute(dialer, "INSERT INTO contacts VALUES (3, 'dia', '+3', 0, 'd')",
                    "UPDATE contacts SET contact_name = 'a-dia' WHERE id = 1",
                    "DELETE FROM contacts WHERE id = 2")  # fmt: skip
    _run_until_converged(link)
    if rule == "per_column":
        # the CRM owns the rows (its delete deletes, its update re-creates), the dialer
        # owns the call outcome
        assert link.crm_rows() == [(2, "b-crm", "+2", 0, None), (3, "crm", "+3", 0, "d")]
    else:
        # a delete wins against an update; insert/insert: the later insert's row
        assert link.crm_rows() == [(3, "dia", "+3", 0, "d")]
    for side in ("crm", "dialer"):
        kinds = sorted(c["kind"] for c in link.conflicts(side))
        assert kinds == ["delete_update", "insert_insert", "update_delete"], side


def _run_until_converged(link: Link) -> None:
    proc = link.start()
    try:
        wait_until(link.converged, timeout=60)
        time.sleep(2)  # nothing comes back afterwards
        assert link.converged()
    finally:
        _stop(proc)


def _running(link: Link) -> bool:
    """Both directions are streaming (slot made, binlog position taken): what is written
    from now on is captured."""
    text = link.log.read_text() if link.log.exists() else ""
    return all(f'"pipeline": "{p}", "resume_after"' in text for p in (link.to_dialer, link.to_crm))


class Writer:
    """Random updates to keys 1..100 on one side, on its own thread; never clears an
    opt-out (so any opt-out lost at the end was lost by a conflict)."""

    def __init__(self, dsn: str, side: str, seed: int) -> None:
        self.dsn, self.side, self.rng = dsn, side, random.Random(seed)
        self.opted: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.writes = 0

    def _statement(self) -> tuple[str, tuple[Any, ...]]:
        k = self.rng.randint(1, 100)
        n = self.rng.randint(0, 10**6)
        crm = self.side == "crm"
        roll = self.rng.random()
        if roll < 0.05:
            self.opted.add(k)
            return ("UPDATE {t} SET do_not_call = 1 WHERE id = %s", (k,))
        if roll < 0.5:
            col = "name" if crm else "contact_name"
            return (f"UPDATE {{t}} SET {col} = %s WHERE id = %s", (f"{self.side}-{n}", k))
        if roll < 0.75:
            col = "phone" if crm else "contact_phone"
            return (f"UPDATE {{t}} SET {col} = %s WHERE id = %s", (f"+{n}", k))
        return ("UPDATE {t} SET last_call_outcome = %s WHERE id = %s", (f"o{n}", k))

    def _run(self) -> None:
        table = "customers" if self.side == "crm" else "contacts"
        while not self._stop.is_set():
            text, args = self._statement()
            with contextlib.suppress(Exception):  # a lock wait timeout is the writer's own
                execute(self.dsn, text.format(t=table), params=args)
                self.writes += 1
            time.sleep(0.005)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["source_priority", "last_write_wins", "per_column"])
def test_concurrent_writes_on_both_sides_converge_through_kill_9(
    tmp_path: Path, crm: str, dialer: str, rule: str
) -> None:
    link = Link(tmp_path, "lk3", crm, dialer, RULES[rule])
    values = ", ".join(f"({i}, 'n{i}', '+{i}', 0, NULL)" for i in range(1, 101))
    execute(crm, f"INSERT INTO customers VALUES {values}")
    execute(dialer, f"INSERT INTO contacts VALUES {values}")
    proc = link.start()
    try:
        wait_until(lambda: _running(link), timeout=60)
        with Writer(crm, "crm", 1) as a, Writer(dialer, "dialer", 2) as b:
            for _ in range(2):
                time.sleep(random.uniform(3, 6))
                kill(proc, signal.SIGKILL)
                proc = link.start()
            time.sleep(4)
        try:
            wait_until(link.converged, timeout=90, every=0.5)
        except AssertionError:
            _dump(link, tmp_path)
            raise AssertionError(f"not converged: {link.differences()[:10]}") from None
        time.sleep(3)
        assert link.converged()
    finally:
        _stop(proc)
    rows = link.crm_rows()
    assert len(rows) == 100
    assert a.writes > 100 and b.writes > 100
    opted = a.opted | b.opted
    assert opted and all(r[3] == 1 for r in rows if r[0] in opted)
    conflicts = link.conflicts("crm") + link.conflicts("dialer")
    assert conflicts, "concurrent writes to 100 keys should have conflicted"
    # No ping-pong: each direction applied at most what its side wrote.
    assert len(link.audit("dialer", link.to_dialer)) <= a.writes + 100
    assert len(link.audit("crm", link.to_crm)) <= b.writes + 100


@pytest.mark.slow
def test_last_write_wins_by_source_commit_time_whatever_the_clocks(
    tmp_path: Path, crm: str, dialer: str
) -> None:
    """The dialer's commits are stamped an hour off (SET TIMESTAMP, as a skewed server clock
    would): the source commit times decide, on both sides alike, not the order of arrival
    or the daemon's clock."""
    link = Link(tmp_path, "lk4", crm, dialer, LWW)
    rows = "(1, 'a', '+1', 0, NULL), (2, 'b', '+2', 0, NULL), (3, 'c', '+3', 0, NULL)"
    execute(crm, f"INSERT INTO customers VALUES {rows}")
    execute(dialer, f"INSERT INTO contacts VALUES {rows}")
    proc = link.start()
    try:
        wait_until(lambda: _running(link), timeout=60)
    finally:
        _stop(proc)
    now = int(time.time())
    execute(crm, "UPDATE customers SET name = 'crm1' WHERE id = 1",
                 "UPDATE customers SET name = 'crm2' WHERE id = 2",
                 "UPDATE customers SET name = 'crm3' WHERE id = 3")  # fmt: skip
    time.sleep(0.5)  # the dialer's changes come later in real time...
    with my_connect(dialer) as c, c.cursor() as cur:
        cur.execute(f"SET TIMESTAMP = {now - 3600}")  # ...but say they are an hour older
        cur.execute("UPDATE contacts SET contact_name = 'old1' WHERE id = 1")
        cur.execute("UPDATE contacts SET contact_name = 'old3', do_not_call = 1 WHERE id = 3")
        cur.execute(f"SET TIMESTAMP = {now + 3600}")  # or an hour newer
        cur.execute("UPDATE contacts SET contact_name = 'new2' WHERE id = 2")
    _run_until_converged(link)
    assert [r[:4] for r in link.crm_rows()] == [
        (1, "crm1", "+1", 0),  # the CRM's change is the later commit
        (2, "new2", "+2", 0),  # the dialer's commit time is later
        (3, "crm3", "+3", 1),  # the CRM's row wins, the dialer's opt-out survives
    ]
    for side in ("crm", "dialer"):
        kinds = sorted(c["kind"] for c in link.conflicts(side))
        assert kinds == ["update_update"] * 3, side


def _dump(link: Link, tmp: Path) -> None:
    """What each side did to the differing keys, for the failure's post-mortem."""
    keys = [d[0][0] for d in link.differences() if d[0] != "count"]
    out = []
    for k in keys:
        pk = json.dumps({"id": k})
        out.append(f"== key {k}")
        with psycopg.connect(link.crm) as c:
            for r in c.execute(
                "SELECT id, pipeline, op, outcome, detail::text, source_position "
                "FROM cdc_sync_audit WHERE pk = %s ORDER BY id",
                (pk,),
            ):
                out.append(f"crm audit {r}")
            for r in c.execute(
                "SELECT id, kind, winner, incoming::text, current::text, before::text, "
                "resolved::text, incoming_position FROM cdc_sync_conflicts WHERE pk = %s "
                "ORDER BY id",
                (pk,),
            ):
                out.append(f"crm conflict {r}")
        with my_connect(link.dialer) as m, m.cursor() as cur:
            cur.execute(
                "SELECT id, pipeline, op, outcome, detail, source_position FROM cdc_sync_audit "
                "WHERE pk = %s ORDER BY id",
                (pk,),
            )
            out += [f"dialer audit {r}" for r in cur.fetchall()]
            cur.execute(
                "SELECT id, kind, winner, incoming, current, `before`, resolved, "
                "incoming_position FROM cdc_sync_conflicts WHERE pk = %s ORDER BY id",
                (pk,),
            )
            out += [f"dialer conflict {r}" for r in cur.fetchall()]
    (Path("/tmp") / "links_dump.txt").write_text("\n".join(out))
