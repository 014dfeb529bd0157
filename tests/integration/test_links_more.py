"""Two-way links beyond PostgreSQL ↔ MariaDB: PostgreSQL ↔ PostgreSQL with last_write_wins,
MariaDB ↔ MariaDB with per-column source_priority, ``seed`` end to end and a ``custom`` rule
loaded from a module of the test's own (real servers; contents compared on both sides)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from cdc_sync.config.links import direction_name
from cdc_sync.testing.pgserver import PgServer
from tests.conftest import drop_slots
from tests.integration.harness import Cli, kill, wait_until
from tests.integration.routes import execute, fetch, kind, my_connect, server_id_extra

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Side:
    """One side of a link: its source name, DSN, table (``schema.table``, as the link's key
    names it) and the columns compared, in the order the other side's are."""

    name: str
    dsn: str
    table: str
    cols: str

    @property
    def env_var(self) -> str:
        return f"{self.name.upper()}_DSN"

    def source(self) -> dict[str, Any]:
        if kind(self.dsn) == "mysql":
            server_id = int(server_id_extra(self.dsn).rsplit(":", 1)[1])
            return {"type": "mysql", "dsn": f"${{{self.env_var}}}", "server_id": server_id}
        return {"type": "postgres", "dsn": f"${{{self.env_var}}}", "heartbeat_seconds": 1}

    def rows(self) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in fetch(self.dsn, self.table, self.cols)]


class Link(Cli):
    """Both directions of one link between ``a`` and ``b``, run by one daemon through the
    CLI."""

    def __init__(
        self,
        tmp: Path,
        name: str,
        a: Side,
        b: Side,
        conflict: dict[str, Any],
        *,
        columns: dict[str, str] | None = None,
        seed: str | None = None,
        pythonpath: Path | None = None,
    ) -> None:
        self.name, self.a, self.b = name, a, b
        table: dict[str, Any] = {"conflict": conflict}
        if columns:
            table["columns"] = columns
        link: dict[str, Any] = {"between": [a.name, b.name], "tables": {}}
        if seed is not None:
            link["seed"] = seed
        link["tables"][f"{a.table} <-> {b.table}"] = table
        config = {
            "sources": {a.name: a.source(), b.name: b.source()},
            "links": {name: link},
            "logging": {"level": "INFO", "format": "json"},
        }
        self.config = tmp / f"{name}.yaml"
        self.config.write_text(yaml.safe_dump(config, sort_keys=False))
        self.env = {**os.environ, a.env_var: a.dsn, b.env_var: b.dsn}
        if pythonpath is not None:
            self.env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(pythonpath), os.environ.get("PYTHONPATH")) if p
            )
        self.log = tmp / f"{name}.log"
        self.a_to_b = direction_name(name, a.name, b.name)
        self.b_to_a = direction_name(name, b.name, a.name)

    def converged(self) -> bool:
        return self.a.rows() == self.b.rows()

    def audit(self, side: Side, pipeline: str, outcome: str = "applied") -> list[tuple[str, int]]:
        """(op, id) of the audit rows of ``pipeline`` in ``side`` with that outcome."""
        rows = _query(
            side.dsn,
            "SELECT op, pk FROM cdc_sync_audit WHERE pipeline = %s AND outcome = %s "
            "AND op <> 'transaction' ORDER BY id",
            (pipeline, outcome),
        )
        return [(str(op), _id(pk)) for op, pk in rows]

    def conflicts(self, side: Side) -> dict[int, tuple[str, str, str]]:
        """id → (kind, winner, outcome) of the conflicts logged in ``side``."""
        rows = _query(
            side.dsn,
            "SELECT pk, kind, winner, outcome, pipeline FROM cdc_sync_conflicts ORDER BY id",
        )
        into = self.b_to_a if side is self.a else self.a_to_b
        assert all(p == into for *_, p in rows), rows  # logged by the pipeline into the side
        out = {_id(pk): (str(k), str(w), str(o)) for pk, k, w, o, _ in rows}
        assert len(out) == len(rows), rows  # one conflict per key in these tests
        return out


def _query(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if kind(dsn) == "mysql":
        with my_connect(dsn) as c, c.cursor() as cur:
            cur.execute(sql, params)
            return [tuple(r) for r in cur.fetchall()]
    with psycopg.connect(dsn) as conn:
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]


def _id(pk: Any) -> int:
    value = json.loads(pk) if isinstance(pk, str | bytes) else pk
    return int(value["id"])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    assert kill(proc, signal.SIGTERM) == 0


def _running(link: Link) -> bool:
    """Both directions are streaming (slot made, binlog position taken): what is written
    from now on is captured."""
    text = link.log.read_text() if link.log.exists() else ""
    return all(f'"pipeline": "{p}", "resume_after"' in text for p in (link.a_to_b, link.b_to_a))


def _prime(link: Link) -> None:
    """Start the link once and stop it when both directions stream: from then on, what
    either side writes is a change the link will carry."""
    proc = link.start()
    try:
        wait_until(lambda: _running(link), timeout=60)
    finally:
        _stop(proc)


def _run_until(link: Link, done: Any, timeout: float = 90) -> None:
    """Run the daemon until ``done()``, then a while longer: nothing comes back afterwards."""
    proc = link.start()
    try:
        wait_until(done, timeout=timeout, every=0.25)
        time.sleep(3)  # an echo, had there been one, would have arrived by now
        assert done()
    finally:
        _stop(proc)


def _drop_origins(server: PgServer) -> None:
    """Replication origins are per cluster and limited like slots: give them back."""
    with psycopg.connect(server.dsn(), autocommit=True) as c:
        for (name,) in c.execute(
            "SELECT roname FROM pg_replication_origin WHERE roname LIKE 'cdc_sync_%%'"
        ).fetchall():
            with contextlib.suppress(psycopg.Error):
                c.execute("SELECT pg_replication_origin_drop(%s)", (name,))


# -- tables ------------------------------------------------------------------------------------

PG_CUSTOMERS = (
    "CREATE TABLE customers (id int PRIMARY KEY, name varchar(100), phone varchar(40))",
    "ALTER TABLE customers REPLICA IDENTITY FULL",
)
MY_CONTACTS = (
    "CREATE TABLE contacts (id int PRIMARY KEY, contact_name varchar(100), "
    "contact_phone varchar(40))"
)
RENAMES = {"name": "contact_name", "phone": "contact_phone"}


def _db(dsn: str) -> str:
    return dsn.rsplit("/", 1)[-1]


@pytest.fixture
def pg_a(source_dsn: str, pg_source_server: PgServer) -> Iterator[str]:
    yield source_dsn
    _drop_origins(pg_source_server)


@pytest.fixture
def pg_b(target_dsn: str, pg_target_server: PgServer) -> Iterator[str]:
    """The target server's database as a second PostgreSQL side: its slots are dropped
    afterwards too (conftest does so for the source server's only)."""
    yield target_dsn
    drop_slots(pg_target_server, _db(target_dsn))
    _drop_origins(pg_target_server)


def _crm_dialer(crm: str, dialer: str) -> tuple[Side, Side]:
    execute(crm, *PG_CUSTOMERS)
    execute(dialer, MY_CONTACTS)
    return (
        Side("crm", crm, "public.customers", "id, name, phone"),
        Side("dialer", dialer, f"{_db(dialer)}.contacts", "id, contact_name, contact_phone"),
    )


# -- 1. PostgreSQL <-> PostgreSQL --------------------------------------------------------------


@pytest.mark.slow
def test_pg_to_pg_changes_cross_once_and_last_write_wins(
    tmp_path: Path, pg_a: str, pg_b: str
) -> None:
    execute(pg_a, "CREATE TABLE items (id int PRIMARY KEY, name varchar(100), qty int)",
                  "ALTER TABLE items REPLICA IDENTITY FULL")  # fmt: skip
    execute(pg_b, "CREATE TABLE stock (id int PRIMARY KEY, title varchar(100), qty int)",
                  "ALTER TABLE stock REPLICA IDENTITY FULL")  # fmt: skip
    a = Side("east", pg_a, "public.items", "id, name, qty")
    b = Side("west", pg_b, "public.stock", "id, title, qty")
    link = Link(tmp_path, "lm1", a, b, {"rule": "last_write_wins"}, columns={"name": "title"})
    proc = link.start()
    try:
        wait_until(lambda: _running(link), timeout=60)
        execute(pg_a, "INSERT INTO items VALUES (1, 'bolt', 10), (3, 'nut', 30)")
        execute(pg_b, "INSERT INTO stock VALUES (2, 'screw', 20), (4, 'washer', 40)")
        wait_until(lambda: len(a.rows()) == 4 and link.converged(), timeout=60)
        execute(pg_a, "UPDATE items SET qty = 11 WHERE id = 1")
        execute(pg_b, "UPDATE stock SET title = 'screw M4' WHERE id = 2",
                      "DELETE FROM stock WHERE id = 4")  # fmt: skip
        execute(pg_a, "DELETE FROM items WHERE id = 3")
        wait_until(lambda: len(a.rows()) == 2 and link.converged(), timeout=60)
        time.sleep(3)  # an echo, had there been one, would have arrived by now
    finally:
        _stop(proc)
    assert a.rows() == b.rows() == [(1, "bolt", 11), (2, "screw M4", 20)]
    # Each change crossed exactly once, in its own direction only.
    assert link.audit(b, link.a_to_b) == [("insert", 1), ("insert", 3), ("update", 1),
                                          ("delete", 3)]  # fmt: skip
    assert link.audit(a, link.b_to_a) == [("insert", 2), ("insert", 4), ("update", 2),
                                          ("delete", 4)]  # fmt: skip
    assert link.audit(a, link.a_to_b) == [] and link.audit(b, link.b_to_a) == []
    assert link.conflicts(a) == {} and link.conflicts(b) == {}

    # Conflicts while the daemon is stopped: the later source commit wins the whole row, a
    # delete wins against an update.
    execute(pg_a, "INSERT INTO items VALUES (5, 'pin', 50)")
    execute(pg_b, "INSERT INTO stock VALUES (5, 'pin', 50)")
    _run_until(link, lambda: len(a.rows()) == 3 and link.converged())
    execute(pg_b, "UPDATE stock SET title = 'bolt west', qty = 12 WHERE id = 1")
    execute(pg_a, "UPDATE items SET qty = 21 WHERE id = 2")
    time.sleep(0.5)  # commit times on the two servers are far enough apart
    execute(pg_a, "UPDATE items SET name = 'bolt east' WHERE id = 1")
    execute(pg_b, "UPDATE stock SET title = 'screw west', qty = 22 WHERE id = 2")
    execute(pg_a, "UPDATE items SET qty = 51 WHERE id = 5")
    execute(pg_b, "DELETE FROM stock WHERE id = 5")
    _run_until(link, lambda: len(a.rows()) == 2 and link.converged())
    assert a.rows() == b.rows() == [(1, "bolt east", 11), (2, "screw west", 22)]
    assert link.conflicts(b) == {  # east's changes arriving in west
        1: ("update_update", "incoming", "conflict_resolved"),
        2: ("update_update", "current", "conflict_resolved"),
        5: ("update_delete", "current", "conflict_resolved"),
    }
    assert link.conflicts(a) == {  # west's changes arriving in east
        1: ("update_update", "current", "conflict_resolved"),
        2: ("update_update", "incoming", "conflict_resolved"),
        5: ("delete_update", "incoming", "conflict_resolved"),
    }
    # Still nothing came back: the resolved rows were not sent again as changes.
    assert link.audit(b, link.a_to_b) == [("insert", 1), ("insert", 3), ("update", 1),
                                          ("delete", 3), ("insert", 5)]  # fmt: skip
    assert link.audit(a, link.b_to_a) == [("insert", 2), ("insert", 4), ("update", 2),
                                          ("delete", 4), ("insert", 5)]  # fmt: skip


# -- 2. MariaDB <-> MariaDB --------------------------------------------------------------------


@pytest.mark.slow
def test_mariadb_to_mariadb_source_priority_by_column(
    tmp_path: Path, my_source_dsn: str, my_target_dsn: str
) -> None:
    """``a`` owns the row, ``b`` owns ``outcome``: a column both sides changed goes to its
    owner, one only a side changed keeps that change."""
    table = (
        "CREATE TABLE items (id int PRIMARY KEY, name varchar(100), phone varchar(40), "
        "outcome varchar(40))"
    )
    execute(my_source_dsn, table)
    execute(my_target_dsn, table)
    a = Side("a", my_source_dsn, f"{_db(my_source_dsn)}.items", "id, name, phone, outcome")
    b = Side("b", my_target_dsn, f"{_db(my_target_dsn)}.items", "id, name, phone, outcome")
    assert a.source()["server_id"] != b.source()["server_id"]
    rule = {
        "rule": "source_priority",
        "source_priority": {"default": "a", "columns": {"outcome": "b"}},
    }
    link = Link(tmp_path, "lm2", a, b, rule)
    rows = ", ".join(f"({i}, '{n}', '+{i}00', NULL)"
                     for i, n in enumerate(["Ann", "Bob", "Cy", "Dee", "Eve"], 1))  # fmt: skip
    execute(a.dsn, f"INSERT INTO items VALUES {rows}")
    execute(b.dsn, f"INSERT INTO items VALUES {rows}")
    _prime(link)
    # Both sides change the same rows while no daemon runs.
    execute(a.dsn, "UPDATE items SET name = 'Ann A', phone = '+101' WHERE id = 1",
                   "UPDATE items SET name = 'Bob A' WHERE id = 2",
                   "UPDATE items SET name = 'Cy A', outcome = 'a-out' WHERE id = 3",
                   "UPDATE items SET name = 'Eve A' WHERE id = 5")  # fmt: skip
    execute(b.dsn, "UPDATE items SET name = 'Ann B', phone = '+109', outcome = 'answered' "
                   "WHERE id = 1",
                   "UPDATE items SET outcome = 'busy' WHERE id = 2",
                   "UPDATE items SET name = 'Cy B', outcome = 'b-out' WHERE id = 3",
                   "UPDATE items SET phone = '+409' WHERE id = 4")  # fmt: skip
    _run_until(link, link.converged)
    want = [
        # both changed name and phone: a's; only b changed the outcome: b's
        (1, "Ann A", "+101", "answered"),
        # each changed a different column: both changes kept
        (2, "Bob A", "+200", "busy"),
        # both changed name and outcome: each column goes to its owner
        (3, "Cy A", "+300", "b-out"),
        # no conflict: only one side changed the row
        (4, "Dee", "+409", None),
        (5, "Eve A", "+500", None),
    ]
    assert a.rows() == b.rows() == want
    merged = ("update_update", "merged", "conflict_resolved")
    assert link.conflicts(a) == {1: merged, 2: merged, 3: merged}
    assert link.conflicts(b) == {1: merged, 2: merged, 3: merged}
    assert link.audit(b, link.a_to_b) == [("update", 5)]
    assert link.audit(a, link.b_to_a) == [("update", 4)]
    resolved = [("update", 1), ("update", 2), ("update", 3)]
    assert link.audit(b, link.a_to_b, "conflict_resolved") == resolved
    assert link.audit(a, link.b_to_a, "conflict_resolved") == resolved

    # Later changes flow both ways, once.
    proc = link.start()
    try:
        wait_until(lambda: _running(link), timeout=60)
        execute(a.dsn, "UPDATE items SET phone = '+102' WHERE id = 1")
        execute(b.dsn, "INSERT INTO items VALUES (6, 'Fay', '+600', 'new')")
        wait_until(lambda: len(a.rows()) == 6 and link.converged(), timeout=60)
        time.sleep(3)
    finally:
        _stop(proc)
    assert a.rows()[0] == (1, "Ann A", "+102", "answered")
    assert a.rows()[5] == (6, "Fay", "+600", "new")
    assert link.audit(b, link.a_to_b) == [("update", 5), ("update", 1)]
    assert link.audit(a, link.b_to_a) == [("update", 4), ("insert", 6)]


# -- 3. seed -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("seed", ["crm", "dialer"])
def test_seed_copies_existing_rows_then_changes_flow_both_ways(
    tmp_path: Path, pg_a: str, my_source_dsn: str, seed: str
) -> None:
    crm, dialer = _crm_dialer(pg_a, my_source_dsn)
    seeded, empty = (crm, dialer) if seed == "crm" else (dialer, crm)
    link = Link(tmp_path, f"lm3{seed[0]}", crm, dialer, {"rule": "last_write_wins"},
                columns=RENAMES, seed=seed)  # fmt: skip
    table = seeded.table.rsplit(".", 1)[1]
    values = ", ".join(f"({i}, 'n{i}', '+{i}')" for i in range(1, 51))
    execute(seeded.dsn, f"INSERT INTO {table} VALUES {values}")
    assert empty.rows() == []
    want = [(i, f"n{i}", f"+{i}") for i in range(1, 51) if i not in (3, 5)]
    want[1] = (2, "n2 dialer", "+2")
    want[2] = (4, "n4", "+4-crm")
    want += [(101, "crm new", "+101"), (102, "dialer new", "+102")]
    proc = link.start()
    try:
        wait_until(lambda: len(empty.rows()) == 50 and link.converged(), timeout=90)
        wait_until(lambda: _running(link), timeout=60)
        execute(crm.dsn, "INSERT INTO customers VALUES (101, 'crm new', '+101')",
                         "UPDATE customers SET phone = '+4-crm' WHERE id = 4",
                         "DELETE FROM customers WHERE id = 3")  # fmt: skip
        execute(dialer.dsn, "INSERT INTO contacts VALUES (102, 'dialer new', '+102')",
                            "UPDATE contacts SET contact_name = 'n2 dialer' WHERE id = 2",
                            "DELETE FROM contacts WHERE id = 5")  # fmt: skip
        wait_until(lambda: crm.rows() == want and dialer.rows() == want, timeout=60)
        time.sleep(3)  # an echo, had there been one, would have arrived by now
    finally:
        _stop(proc)
    assert crm.rows() == dialer.rows() == want
    # The seed copied every row once, into the empty side only; its writes did not come
    # back as changes of the empty side.
    seeding = link.a_to_b if seed == "crm" else link.b_to_a
    copied = link.audit(empty, seeding)
    assert sorted(i for op, i in copied if op == "snapshot") == list(range(1, 51))
    crm_changes = [("insert", 101), ("update", 4), ("delete", 3)]
    dialer_changes = [("insert", 102), ("update", 2), ("delete", 5)]
    assert [c for c in link.audit(dialer, link.a_to_b) if c[0] != "snapshot"] == crm_changes
    assert [c for c in link.audit(crm, link.b_to_a) if c[0] != "snapshot"] == dialer_changes
    other = link.b_to_a if seed == "crm" else link.a_to_b
    assert all(op != "snapshot" for op, _ in link.audit(seeded, other))
    assert link.conflicts(crm) == {} and link.conflicts(dialer) == {}


# -- 4. custom ---------------------------------------------------------------------------------

RULE_MODULE = '''
"""A custom conflict rule: names both sides changed are joined (sorted, so both sides
decide alike), other columns merged three-way; 'dead' gives up; an update against a delete
deletes."""

from cdc_sync.conflicts.resolve import DELETE


def resolve(c):
    if c.kind in ("update_delete", "delete_update"):
        return DELETE
    name = "name" if "name" in c.current else "contact_name"
    if "dead" in (c.incoming[name], c.current[name]):
        return None
    out = {}
    for col, new in c.incoming.items():
        cur, old = c.current[col], c.before[col]
        if new == cur or new == old:
            continue
        if cur == old:
            out[col] = new
        elif col == name:  # a set of names: joining again changes nothing
            out[col] = " + ".join(sorted({*new.split(" + "), *cur.split(" + ")}))
        else:
            return None
    return out
'''


def _custom_link(tmp: Path, name: str, pg: str, my: str) -> tuple[Link, Side, Side]:
    """A CRM ↔ dialer link whose conflict rule is RULE_MODULE's, imported by the daemon from
    a directory of the test's own on its PYTHONPATH."""
    crm, dialer = _crm_dialer(pg, my)
    rules = tmp / "rules"
    rules.mkdir()
    (rules / f"{name}_rules.py").write_text(RULE_MODULE)
    conflict = {"rule": "custom", "custom": f"{name}_rules:resolve"}
    link = Link(tmp, name, crm, dialer, conflict, columns=RENAMES, pythonpath=rules)
    return link, crm, dialer


@pytest.mark.slow
def test_custom_rule_merges_deletes_and_dead_letters(
    tmp_path: Path, pg_a: str, my_source_dsn: str
) -> None:
    link, crm, dialer = _custom_link(tmp_path, "lm4", pg_a, my_source_dsn)
    values = ", ".join(f"({i}, '{n}', '+{i}00')"
                       for i, n in enumerate(["Ann", "Bob", "Cy", "Dee", "Eve"], 1))  # fmt: skip
    execute(crm.dsn, f"INSERT INTO customers VALUES {values}")
    execute(dialer.dsn, f"INSERT INTO contacts VALUES {values}")
    _prime(link)
    execute(crm.dsn, "UPDATE customers SET name = 'Ann C' WHERE id = 1",
                     "UPDATE customers SET name = 'dead' WHERE id = 2",
                     "DELETE FROM customers WHERE id = 3",
                     "UPDATE customers SET phone = '+401' WHERE id = 4")  # fmt: skip
    execute(dialer.dsn, "UPDATE contacts SET contact_name = 'Ann D' WHERE id = 1",
                        "UPDATE contacts SET contact_name = 'Bob D' WHERE id = 2",
                        "UPDATE contacts SET contact_phone = '+309' WHERE id = 3",
                        "UPDATE contacts SET contact_name = 'Dee D' WHERE id = 4",
                        "UPDATE contacts SET contact_phone = '+509' WHERE id = 5")  # fmt: skip
    crm_want = [
        (1, "Ann C + Ann D", "+100"),  # both changed the name: joined
        (2, "dead", "+200"),  # no resolution: each side keeps its own, a dead letter
        (4, "Dee D", "+401"),  # each changed another column: both kept
        (5, "Eve", "+509"),  # no conflict
    ]
    dialer_want = [crm_want[0], (2, "Bob D", "+200"), crm_want[2], crm_want[3]]
    _run_until(link, lambda: crm.rows() == crm_want and dialer.rows() == dialer_want)
    dead = ("update_update", "none", "conflict_dead_letter")
    merged = ("update_update", "merged", "conflict_resolved")
    assert link.conflicts(dialer) == {  # the CRM's changes arriving
        1: merged,
        2: dead,
        3: ("delete_update", "incoming", "conflict_resolved"),
        4: merged,
    }
    assert link.conflicts(crm) == {  # the dialer's changes arriving
        1: merged,
        2: dead,
        3: ("update_delete", "current", "conflict_resolved"),
        4: merged,
    }
    for side, pipeline in ((dialer, link.a_to_b), (crm, link.b_to_a)):
        letters = _query(
            side.dsn,
            "SELECT pk, stage, rule, status FROM cdc_sync_dead_letters WHERE pipeline = %s",
            (pipeline,),
        )
        assert [(_id(pk), s, r, st) for pk, s, r, st in letters] == [
            (2, "conflict", "custom", "open")
        ]
        assert link.audit(side, pipeline, "conflict_dead_letter") == [("update", 2)]
    # Nothing a resolution wrote comes back as a change.
    assert link.audit(crm, link.b_to_a) == [("update", 5)]
    assert link.audit(dialer, link.a_to_b) == []


@pytest.mark.slow
def test_custom_rule_resolutions_do_not_come_back(
    tmp_path: Path, pg_a: str, my_source_dsn: str
) -> None:
    """docs/two-way.md: a change that a link applied on one side must not come back as a
    new change; the merged row is written on both sides, each by its own resolution."""
    link, crm, dialer = _custom_link(tmp_path, "lm5", pg_a, my_source_dsn)
    execute(crm.dsn, "INSERT INTO customers VALUES (1, 'Ann', '+100')")
    execute(dialer.dsn, "INSERT INTO contacts VALUES (1, 'Ann', '+100')")
    _prime(link)
    execute(crm.dsn, "UPDATE customers SET name = 'Ann C' WHERE id = 1")
    execute(dialer.dsn, "UPDATE contacts SET contact_name = 'Ann D' WHERE id = 1")
    want = [(1, "Ann C + Ann D", "+100")]
    _run_until(link, lambda: crm.rows() == dialer.rows() == want)
    assert link.audit(crm, link.b_to_a, "conflict_resolved") == [("update", 1)]
    assert link.audit(dialer, link.a_to_b, "conflict_resolved") == [("update", 1)]
    # Neither side originated any other change: nothing else crossed.
    assert link.audit(crm, link.b_to_a) == []
    assert link.audit(dialer, link.a_to_b) == []
