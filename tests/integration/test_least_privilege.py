"""Least privilege (issue #8): the daemon runs as the roles docs/security.md lists.

Each test plays the DBA first (as the superuser / root the fixtures give): it creates the
replicated tables, the publication and the roles with exactly the documented GRANTs, then
drives the daemon through the CLI with DSNs of those roles only, and compares source and
target exactly. The audit table is shown append-only for the daemon's role (UPDATE / DELETE
refused by the server), and the retention purge is shown to work with the documented
guarded DELETE grant, on rows past retention only.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pymysql
import pytest

from tests.conftest import Report
from tests.integration.harness import rows_as_text, sql
from tests.integration.routes import Route, execute, fetch, my_connect, norm

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STATE_SCHEMA = "cdc_sync"
RETENTION_DAYS = 190

# The replicated tables, created by the DBA on both sides (PostgreSQL spelling).
PG_TABLES = (
    "CREATE TABLE public.customers (id integer PRIMARY KEY, name text NOT NULL, "
    "balance numeric(12,2), seen timestamptz)",
    "CREATE TABLE public.orders (id bigint PRIMARY KEY, customer integer NOT NULL, "
    "amount numeric(12,2), note text)",
)
# Their MariaDB spelling as a target of a PostgreSQL source (docs/types.md).
MY_TARGET_TABLES = (
    "CREATE TABLE customers (id int PRIMARY KEY, name longtext NOT NULL, "
    "balance decimal(12,2), seen timestamp(6) NULL DEFAULT NULL)",
    "CREATE TABLE orders (id bigint PRIMARY KEY, customer int NOT NULL, "
    "amount decimal(12,2), note longtext)",
)
# MariaDB as a source, and the PostgreSQL tables it maps to (docs/types.md).
MY_SOURCE_TABLES = (
    "CREATE TABLE customers (id int PRIMARY KEY, name varchar(50) NOT NULL, "
    "balance decimal(12,2), seen datetime(6))",
    "CREATE TABLE orders (id bigint PRIMARY KEY, customer int NOT NULL, "
    "amount decimal(12,2), note text)",
    "CREATE TABLE secrets (id int PRIMARY KEY, v text)",  # not replicated, not granted
)
PG_FROM_MY_TABLES = (
    "CREATE TABLE public.customers (id integer PRIMARY KEY, name varchar(50) NOT NULL, "
    "balance numeric(12,2), seen timestamp(6))",
    "CREATE TABLE public.orders (id bigint PRIMARY KEY, customer integer NOT NULL, "
    "amount numeric(12,2), note text)",
)
TABLES = ("customers", "orders")

# State tables created by the DBA's migration: what the daemon's role gets on each, the same
# on both engines (docs/security.md). No UPDATE / DELETE on the audit and
# conflict logs.
STATE_DML_GRANTS = {
    "cdc_sync_alembic_version": "SELECT",
    "cdc_sync_checkpoints": "SELECT, INSERT, UPDATE",
    "cdc_sync_audit": "INSERT",
    "cdc_sync_dead_letters": "SELECT, INSERT, UPDATE",
    "cdc_sync_snapshots": "SELECT, INSERT, UPDATE",
    "cdc_sync_verify_runs": "SELECT, INSERT",
    "cdc_sync_conflicts": "SELECT, INSERT",
    "cdc_sync_row_clock": "SELECT, INSERT, UPDATE",
}
# MariaDB target when the daemon migrates its state tables itself: table-level grants
# (MySQL has no owners: creating a table grants nothing on it), so it still cannot rewrite
# its audit. INDEX where a migration runs CREATE INDEX; DROP only for the table migration
# 0006 drops; INSERT / UPDATE on the version table for Alembic.
MY_STATE_GRANTS = {
    "cdc_sync_alembic_version": "CREATE, SELECT, INSERT, UPDATE",
    "cdc_sync_checkpoints": "CREATE, SELECT, INSERT, UPDATE",
    "cdc_sync_audit": "CREATE, INDEX, INSERT",
    "cdc_sync_dead_letters": "CREATE, INDEX, SELECT, INSERT, UPDATE",
    "cdc_sync_snapshots": "CREATE, INDEX, SELECT, INSERT, UPDATE",
    "cdc_sync_verify_runs": "CREATE, INDEX, SELECT, INSERT",
    "cdc_sync_conflicts": "CREATE, INDEX, SELECT, INSERT",
    "cdc_sync_row_clock": "CREATE, SELECT, INSERT, UPDATE",
    "cdc_sync_corrections": "CREATE, INDEX, DROP",
}

# The retention guard: DELETE is granted on the audit, but a row younger than the retention
# period cannot be deleted by anyone (the trigger belongs to the table's owner / the DBA).
PG_GUARD = (
    f"CREATE FUNCTION {STATE_SCHEMA}.cdc_sync_audit_purge_guard() RETURNS trigger "
    "LANGUAGE plpgsql AS $$ BEGIN "
    f"IF OLD.applied_at >= now() - interval '{RETENTION_DAYS} days' THEN "
    "RAISE EXCEPTION 'cdc_sync_audit is append-only within the retention period' "
    "USING ERRCODE = 'insufficient_privilege'; END IF; RETURN OLD; END $$",
    f"CREATE TRIGGER cdc_sync_audit_purge_guard BEFORE DELETE ON {STATE_SCHEMA}.cdc_sync_audit "
    f"FOR EACH ROW EXECUTE FUNCTION {STATE_SCHEMA}.cdc_sync_audit_purge_guard()",
)
MY_GUARD = (
    "CREATE TRIGGER cdc_sync_audit_purge_guard BEFORE DELETE ON cdc_sync_audit FOR EACH ROW "
    f"BEGIN IF OLD.applied_at >= UTC_TIMESTAMP(6) - INTERVAL {RETENTION_DAYS} DAY THEN "
    "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = "
    "'cdc_sync_audit is append-only within the retention period'; END IF; END"
)

PURGE = (
    "import sys\n"
    "from cdc_sync.config.loader import load_config\n"
    "from cdc_sync.runtime.retention import purge_once\n"
    "print(purge_once(load_config(sys.argv[1]), sys.argv[2]))\n"
)


# -- helpers ------------------------------------------------------------------------------


def _as(dsn: str, user: str) -> str:
    """The same database, connecting as ``user`` (trust auth: no password)."""
    return re.sub(r"//[^@/]*@", f"//{user}@", dsn, count=1)


def _db(dsn: str) -> str:
    return dsn.rsplit("/", 1)[-1]


def _route(
    tmp: Path,
    source: str,
    target: str,
    tables: dict[str, str | None],
    state_schema: str | None = None,
) -> Route:
    """A pipeline named after the source database (slots are per cluster), with the state
    schema and audit retention of the documented setup."""
    r = Route(tmp, source, target, tables, pipeline=f"lp_{_db(source)}")
    text = r.config.read_text().replace(
        "audit: row", f"audit: {{level: row, retention_days: {RETENTION_DAYS}}}"
    )
    if state_schema:
        text = text.replace(
            'dsn: "${TGT_DSN}"}', f'dsn: "${{TGT_DSN}}", state_schema: {state_schema}}}'
        )
    r.config.write_text(text)
    return r


def _pg_harden(dsn: str, *roles: str) -> None:
    """CONNECT and USAGE on public only for who is named (PUBLIC loses the defaults)."""
    db = _db(dsn)
    sql(
        dsn,
        f'REVOKE ALL ON DATABASE "{db}" FROM PUBLIC',
        "REVOKE ALL ON SCHEMA public FROM PUBLIC",
        *(f'GRANT CONNECT ON DATABASE "{db}" TO {r}' for r in roles),
        *(f"GRANT USAGE ON SCHEMA public TO {r}" for r in roles),
    )


def _pg_source(dsn: str, role: str, pipeline: str) -> None:
    """The DBA's part on a PostgreSQL source: tables, the publication, a REPLICATION role
    with SELECT on the published tables only."""
    sql(
        dsn,
        *PG_TABLES,
        "CREATE TABLE public.secrets (id integer PRIMARY KEY, v text)",
        "INSERT INTO customers SELECT g, 'c' || g, g * 1.25, "
        "'2024-01-01 00:00:00+00'::timestamptz + g * interval '1 hour' "
        "FROM generate_series(1, 20) g",
        "INSERT INTO orders SELECT g, 1 + g % 20, g * 0.5, 'o' || g FROM generate_series(1, 30) g",
        f"CREATE PUBLICATION cdc_sync_{pipeline} FOR TABLE public.customers, public.orders",
        f"CREATE ROLE {role} LOGIN REPLICATION",
        f"GRANT SELECT ON public.customers, public.orders TO {role}",
    )
    _pg_harden(dsn, role)


def _pg_changes(dsn: str, base: int) -> None:
    """Inserts, updates (one a key change), deletes and a write to an unpublished table."""
    sql(
        dsn,
        f"INSERT INTO customers SELECT g, 'n' || g, g, now() FROM generate_series({base}, "
        f"{base + 9}) g",
        f"UPDATE customers SET name = name || '!', balance = balance + 1 WHERE id % 3 = {base % 3}",
        f"UPDATE customers SET id = id + 1000 WHERE id = {base + 9}",
        f"DELETE FROM customers WHERE id % 7 = {base % 7} AND id < {base}",
        f"INSERT INTO orders SELECT g, {base}, 1.5, NULL "
        f"FROM generate_series({base}, {base + 4}) g",
        f"UPDATE orders SET note = 'changed' WHERE id % 4 = {base % 4}",
        f"DELETE FROM orders WHERE id % 5 = {base % 5}",
        f"INSERT INTO secrets VALUES ({base}, 'not for the cdc role')",
    )


def _pg_state_owned_by_dba(dsn: str, owner: str, daemon: str) -> None:
    """State tables created by the DBA's migration as ``owner`` (alembic, as alembic.ini
    says), the daemon's role gets only the DML of STATE_DML_GRANTS."""
    sql(
        dsn,
        f"CREATE ROLE {owner} LOGIN",
        f"CREATE SCHEMA {STATE_SCHEMA} AUTHORIZATION {owner}",
        f"GRANT USAGE ON SCHEMA {STATE_SCHEMA} TO {daemon}",
    )
    url = _as(dsn, owner).replace("postgresql://", "postgresql+psycopg://", 1)
    _migrate(url, STATE_SCHEMA)
    sql(
        _as(dsn, owner),
        *(f"GRANT {p} ON {STATE_SCHEMA}.{t} TO {daemon}" for t, p in STATE_DML_GRANTS.items()),
    )


def _migrate(url: str, schema: str | None = None) -> None:
    cmd = [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), "-x", f"url={url}"]
    if schema:
        cmd += ["-x", f"schema={schema}"]
    res = subprocess.run(
        [*cmd, "upgrade", "head"], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert res.returncode == 0, res.stderr[-3000:]


def _pg_denied(dsn: str, statement: str) -> str:
    """The server's refusal of ``statement`` (it must be refused)."""
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege) as err,
        psycopg.connect(dsn, autocommit=True) as conn,
    ):
        conn.execute(statement)
    return str(err.value).split("\n", 1)[0]


def _my_denied(dsn: str, statement: str) -> str:
    with pytest.raises(pymysql.MySQLError) as err, my_connect(dsn) as c, c.cursor() as cur:
        cur.execute(statement)
    assert err.value.args[0] in (1142, 1143, 1644), err.value.args  # 1644: the guard SIGNAL
    return str(err.value.args[1])


def _purge(r: Route) -> subprocess.CompletedProcess[str]:
    """The daemon's hourly retention purge (runtime.retention.purge_once), run once now with
    the pipeline's config and DSNs."""
    return subprocess.run(
        [sys.executable, "-c", PURGE, str(r.config), r.pipeline],
        env=r.env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def _refusal(stderr: str) -> str:
    """What a failed purge said (the classified error, after the pipeline prefix)."""
    found = re.findall(r"audit retention: (.+)", stderr)
    return found[-1].strip() if found else stderr.strip()[-200:]


def _pg_equal(src: str, tgt: str, skip: str = "") -> int:
    """Exact comparison (PostgreSQL's own row text); ``skip``: a WHERE for rows the target
    must not have (dead letters). Returns the rows compared."""
    rows = 0
    for t in TABLES:
        where = f" WHERE {skip}" if skip and t == "customers" else ""
        want = rows_as_text(src, f"(SELECT * FROM public.{t}{where})")
        got = rows_as_text(tgt, f"public.{t}")
        assert got == want, t
        rows += len(want)
    return rows


def _cross_equal(src: str, tgt: str, src_schema: str, tgt_schema: str) -> int:
    """Exact comparison across engines (driver values, datetimes as naive UTC)."""
    rows = 0
    for t in TABLES:
        want = [tuple(norm(v) for v in row) for row in fetch(src, f"{src_schema}.{t}")]
        got = [tuple(norm(v) for v in row) for row in fetch(tgt, f"{tgt_schema}.{t}")]
        assert got == want, t
        rows += len(want)
    return rows


def _audited(dsn: str, table: str) -> dict[str, int]:
    query = f"SELECT outcome, count(*) FROM {table} GROUP BY outcome"
    if dsn.startswith("mysql"):
        with my_connect(dsn) as c, c.cursor() as cur:
            cur.execute(query)
            return {str(k): int(v) for k, v in cur.fetchall()}
    with psycopg.connect(dsn) as conn:
        return {str(k): int(v) for k, v in conn.execute(query).fetchall()}


def _check_lines(r: Route) -> list[str]:
    """``cdc-sync check``'s problems, one string each."""
    res = r.cli("check")
    return [ln.strip()[2:] for ln in res.stdout.splitlines() if ln.strip().startswith("- ")]


def _brief(problems: list[str]) -> str:
    return "; ".join(p.split("; fix:")[0] for p in problems) or "ok"


# -- PostgreSQL → PostgreSQL ----------------------------------------------------------------


def test_pg_to_pg_state_created_by_daemon(
    source_dsn: str, target_dsn: str, tmp_path: Path, report: Report
) -> None:
    """The brief's minimal set: REPLICATION + SELECT on the published tables; on the target
    DML on the replicated tables and USAGE + CREATE on the state schema. Works. The daemon
    then owns its state tables: revoking UPDATE / DELETE on the audit from it keeps
    replication working, but an owner can grant them back to itself, so that is no control
    (hence the DBA-owned layout of the next test)."""
    pipeline = f"lp_{_db(source_dsn)}"
    src_role, tgt_role = f"cdc_src_{_db(source_dsn)}", f"cdc_tgt_{_db(target_dsn)}"
    _pg_source(source_dsn, src_role, pipeline)
    sql(
        target_dsn,
        *PG_TABLES,
        f"CREATE ROLE {tgt_role} LOGIN",
        f"CREATE SCHEMA {STATE_SCHEMA}",
        f"GRANT USAGE, CREATE ON SCHEMA {STATE_SCHEMA} TO {tgt_role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON public.customers, public.orders TO {tgt_role}",
    )
    _pg_harden(target_dsn, tgt_role)
    r = _route(
        tmp_path,
        _as(source_dsn, src_role),
        _as(target_dsn, tgt_role),
        {"public.customers": None, "public.orders": None},
        state_schema=STATE_SCHEMA,
    )
    check = _check_lines(r)
    r.drain()  # initial snapshot: slot with exported snapshot, copy as the REPLICATION role
    _pg_changes(source_dsn, 100)
    r.drain()
    rows = _pg_equal(source_dsn, target_dsn)

    audit = f"{STATE_SCHEMA}.cdc_sync_audit"
    sql(
        target_dsn,
        f"REVOKE UPDATE, DELETE, TRUNCATE ON {audit}, {STATE_SCHEMA}.cdc_sync_conflicts "
        f"FROM {tgt_role}",
    )
    _pg_changes(source_dsn, 200)
    r.drain()
    rows += _pg_equal(source_dsn, target_dsn)
    denied = _pg_denied(r.target_dsn, f"UPDATE {audit} SET outcome = 'forged'")
    verify = r.cli("verify", "-p", r.pipeline)
    # The owner's revoked rights are its own to give back:
    sql(r.target_dsn, f"GRANT UPDATE ON {audit} TO {tgt_role}")
    with psycopg.connect(r.target_dsn, autocommit=True) as conn:
        regranted = conn.execute(f"UPDATE {audit} SET outcome = outcome WHERE false").rowcount
    report(
        rows=rows,
        message=f"works; audit UPDATE revoked: {denied}; owner re-grants itself; "
        f"check: {_brief(check)}",
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr[-2000:]
    assert "permission denied for table cdc_sync_audit" in denied
    assert regranted == 0  # the statement ran: the revoke did not hold
    assert [c for c in check if c.startswith("target")] == [], check  # no false alarm


def test_pg_to_pg_append_only_audit(
    source_dsn: str, target_dsn: str, tmp_path: Path, report: Report
) -> None:
    """Recommended layout: the DBA's migration creates the state tables under an owner role;
    the daemon's role has DML only, and only INSERT on the audit (append-only). Replication,
    the initial snapshot and a dead letter work; UPDATE / DELETE / TRUNCATE on the audit and
    conflict logs are refused; the retention purge needs the guarded DELETE grant and then
    removes only rows past retention."""
    pipeline = f"lp_{_db(source_dsn)}"
    src_role, tgt_role = f"cdc_src_{_db(source_dsn)}", f"cdc_tgt_{_db(target_dsn)}"
    owner = f"cdc_owner_{_db(target_dsn)}"
    _pg_source(source_dsn, src_role, pipeline)
    sql(
        target_dsn,
        *PG_TABLES,
        # A target-only rule, so that one row becomes a dead letter (written by this role).
        "ALTER TABLE public.customers ADD CONSTRAINT no_debt CHECK (balance >= 0)",
        f"CREATE ROLE {tgt_role} LOGIN",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON public.customers, public.orders TO {tgt_role}",
    )
    _pg_state_owned_by_dba(target_dsn, owner, tgt_role)
    _pg_harden(target_dsn, tgt_role, owner)
    r = _route(
        tmp_path,
        _as(source_dsn, src_role),
        _as(target_dsn, tgt_role),
        {"public.customers": None, "public.orders": None},
        state_schema=STATE_SCHEMA,
    )
    r.drain()
    _pg_changes(source_dsn, 100)
    sql(source_dsn, "INSERT INTO customers VALUES (666, 'debtor', -1, now())")
    r.drain()
    rows = _pg_equal(source_dsn, target_dsn, skip="id <> 666")
    dlq = r.cli("dlq", "list", "--json")
    audit = f"{STATE_SCHEMA}.cdc_sync_audit"
    outcomes = _audited(target_dsn, audit)

    refused = [
        _pg_denied(r.target_dsn, f"UPDATE {audit} SET outcome = 'forged'"),
        _pg_denied(r.target_dsn, f"DELETE FROM {audit}"),
        _pg_denied(r.target_dsn, f"TRUNCATE {audit}"),
        _pg_denied(r.target_dsn, f"UPDATE {STATE_SCHEMA}.cdc_sync_conflicts SET outcome = 'x'"),
        _pg_denied(r.target_dsn, f"DELETE FROM {STATE_SCHEMA}.cdc_sync_conflicts"),
    ]
    with psycopg.connect(target_dsn) as conn:
        rights = conn.execute(
            "SELECT t, p FROM unnest(%s::text[]) t, unnest(%s::text[]) p "
            "WHERE has_table_privilege(%s, t, p)",
            (
                [audit, f"{STATE_SCHEMA}.cdc_sync_conflicts"],
                ["UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"],
                tgt_role,
            ),
        ).fetchall()

    # Retention with the append-only grant: the purge is refused (the daemon logs
    # audit_retention_failed hourly and goes on replicating).
    no_grant = _purge(r)
    # The documented retention grant: DELETE (+ SELECT of the columns the purge filters
    # on), with the owner's trigger refusing rows younger than the retention period.
    sql(
        _as(target_dsn, owner),
        *PG_GUARD,
        f"GRANT SELECT (id, pipeline, applied_at), DELETE ON {audit} TO {tgt_role}",
        f"INSERT INTO {audit} (pipeline, op, outcome, applied_at) SELECT '{r.pipeline}', "
        f"'insert', 'applied', now() - interval '{RETENTION_DAYS + 10} days' "
        "FROM generate_series(1, 3)",
    )
    purged = _purge(r)
    guard = _pg_denied(
        r.target_dsn, f"DELETE FROM {audit} WHERE id = (SELECT max(id) FROM {audit})"
    )
    after = _audited(target_dsn, audit)

    # Still replicating after all that. This round's update makes row 666 valid (balance
    # 0): the upsert brings it in, so the target now matches the source exactly.
    _pg_changes(source_dsn, 300)
    r.drain()
    rows += _pg_equal(source_dsn, target_dsn)
    verify = r.cli("verify", "-p", r.pipeline)
    status = r.cli("status")
    report(
        rows=rows,
        message=f"works; audit append-only ({len(refused)} statements refused); purge without "
        f"DELETE: {_refusal(no_grant.stderr)}; with guarded DELETE: "
        f"{purged.stdout.strip()} old rows purged",
    )
    assert dlq.returncode == 0, dlq.stderr[-2000:]
    assert verify.returncode == 0, verify.stdout + verify.stderr[-2000:]
    assert status.returncode == 0 and "error:" not in status.stdout, status.stdout
    assert [(d["source_table"], d["pk"]) for d in json.loads(dlq.stdout)] == [
        ("public.customers", '{"id":666}')
    ], dlq.stdout
    assert outcomes.get("applied", 0) > 0 and outcomes.get("dead_letter", 0) == 1, outcomes
    assert all("permission denied" in m for m in refused), refused
    assert rights == [], rights
    assert no_grant.returncode != 0
    assert "permission denied for table cdc_sync_audit" in no_grant.stderr
    assert purged.returncode == 0 and purged.stdout.strip() == "3", purged.stderr[-2000:]
    assert "append-only within the retention period" in guard
    assert after == outcomes  # the three old rows went, nothing else


# -- MariaDB → PostgreSQL -----------------------------------------------------------------


@pytest.mark.parametrize("monitor", ["BINLOG MONITOR", "REPLICATION CLIENT", "via a role"])
def test_mariadb_to_pg_least_privilege(
    monitor: str, my_source_dsn: str, target_dsn: str, tmp_path: Path, report: Report
) -> None:
    """REPLICATION SLAVE + BINLOG MONITOR (REPLICATION CLIENT is its old name on MariaDB
    10.5+) on *.*, SELECT on the replicated tables only; nothing else (no SUPER, RELOAD,
    SLAVE MONITOR or REPLICATION MASTER ADMIN). PostgreSQL target as recommended."""
    db = _db(my_source_dsn)
    user = f"cdc_{db}_{monitor.rsplit(maxsplit=1)[-1].lower()}"[:80]
    tgt_role, owner = f"cdc_tgt_{_db(target_dsn)}", f"cdc_owner_{_db(target_dsn)}"
    # "via a role": every privilege is the role's; the user only has the role (by default)
    grantee = f"cdc_role_{db}" if monitor == "via a role" else f"'{user}'@'%'"
    execute(
        my_source_dsn,
        *MY_SOURCE_TABLES,
        "INSERT INTO customers VALUES (1, 'a', 1.5, '2024-01-01 10:00:00.123456'), "
        "(2, 'b', 2.5, NULL), (3, 'c', -3, '2024-02-29 23:59:59')",
        "INSERT INTO orders VALUES (1, 1, 9.99, 'x'), (2, 2, 0, NULL)",
        f"CREATE USER '{user}'@'%'",
        *(
            [f"CREATE ROLE {grantee}", f"GRANT {grantee} TO '{user}'@'%'",
             f"SET DEFAULT ROLE {grantee} FOR '{user}'@'%'"]
            if monitor == "via a role" else []
        ),
        f"GRANT REPLICATION SLAVE ON *.* TO {grantee}",
        f"GRANT SELECT ON `{db}`.`customers` TO {grantee}",
        f"GRANT SELECT ON `{db}`.`orders` TO {grantee}",
    )  # fmt: skip
    sql(
        target_dsn,
        *PG_FROM_MY_TABLES,
        f"CREATE ROLE {tgt_role} LOGIN",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON public.customers, public.orders TO {tgt_role}",
    )
    _pg_state_owned_by_dba(target_dsn, owner, tgt_role)
    _pg_harden(target_dsn, tgt_role, owner)
    r = _route(
        tmp_path,
        _as(my_source_dsn, user),
        _as(target_dsn, tgt_role),
        {f"{db}.customers": "public.customers", f"{db}.orders": "public.orders"},
        state_schema=STATE_SCHEMA,
    )
    before = _check_lines(r)  # REPLICATION SLAVE alone: the monitor privilege is missing
    privilege = "BINLOG MONITOR" if monitor == "via a role" else monitor
    execute(my_source_dsn, f"GRANT {privilege} ON *.* TO {grantee}")
    after = [ln for ln in _check_lines(r) if ln.startswith("source")]
    r.drain()
    execute(
        my_source_dsn,
        "INSERT INTO customers VALUES (4, 'd', 4, NOW(6)), (5, 'e', 5, NULL)",
        "UPDATE customers SET name = 'aa', balance = balance + 1 WHERE id = 1",
        "UPDATE customers SET id = 30 WHERE id = 3",
        "DELETE FROM orders WHERE id = 1",
        "INSERT INTO orders VALUES (3, 4, 1.25, 'y')",
        "INSERT INTO secrets VALUES (1, 'not for the cdc user')",  # its row events are read
        "UPDATE secrets SET v = 'still not' WHERE id = 1",
    )
    r.drain()
    rows = _cross_equal(my_source_dsn, target_dsn, db, "public")
    denied = _my_denied(r.source_dsn, f"SELECT * FROM `{db}`.secrets")
    status = r.cli("status")
    report(rows=rows, message=f"works with REPLICATION SLAVE, {monitor}, SELECT")
    assert any("lacks BINLOG MONITOR" in ln for ln in before), before
    assert after == [], after
    assert "SELECT command denied" in denied
    assert status.returncode == 0 and "error:" not in status.stdout, status.stdout


# -- PostgreSQL → MariaDB -----------------------------------------------------------------


@pytest.mark.parametrize("layout", ["daemon_migrates", "dba_migrates"])
def test_pg_to_mariadb_least_privilege(
    layout: str, source_dsn: str, my_target_dsn: str, tmp_path: Path, report: Report
) -> None:
    """MariaDB target user with table-level grants only: DML on the replicated tables and,
    on the cdc_sync_* tables, either MY_STATE_GRANTS (the daemon creates and migrates them,
    yet gets no UPDATE / DELETE on its audit) or, after the DBA ran the migration,
    STATE_DML_GRANTS. Retention: guarded DELETE as on PostgreSQL."""
    pipeline = f"lp_{_db(source_dsn)}"
    src_role = f"cdc_src_{_db(source_dsn)}"
    db = _db(my_target_dsn)
    user = f"cdc_{db}"
    _pg_source(source_dsn, src_role, pipeline)
    execute(
        my_target_dsn,
        *MY_TARGET_TABLES,
        f"CREATE USER '{user}'@'%'",
        *(f"GRANT SELECT, INSERT, UPDATE, DELETE ON `{db}`.`{t}` TO '{user}'@'%'" for t in TABLES),
    )
    if layout == "dba_migrates":
        _migrate(my_target_dsn.replace("mysql://", "mysql+pymysql://", 1))  # as the DBA
    state = MY_STATE_GRANTS if layout == "daemon_migrates" else STATE_DML_GRANTS
    execute(
        my_target_dsn, *(f"GRANT {p} ON `{db}`.`{t}` TO '{user}'@'%'" for t, p in state.items())
    )
    r = _route(
        tmp_path,
        _as(source_dsn, src_role),
        _as(my_target_dsn, user),
        {"public.customers": f"{db}.customers", "public.orders": f"{db}.orders"},
    )
    check = _check_lines(r)
    assert [c for c in check if c.startswith("target")] == [], check  # no false alarm
    r.drain()  # daemon_migrates: creates the state tables (0001-0006) with these grants
    _pg_changes(source_dsn, 100)
    r.drain()
    rows = _cross_equal(source_dsn, my_target_dsn, "public", db)
    verify = r.cli("verify", "-p", r.pipeline)
    outcomes = _audited(my_target_dsn, "cdc_sync_audit")
    refused = [
        _my_denied(r.target_dsn, "UPDATE cdc_sync_audit SET outcome = 'forged'"),
        _my_denied(r.target_dsn, "DELETE FROM cdc_sync_audit"),
        _my_denied(r.target_dsn, "TRUNCATE TABLE cdc_sync_audit"),
        _my_denied(r.target_dsn, "UPDATE cdc_sync_conflicts SET outcome = 'x'"),
        _my_denied(r.target_dsn, "DELETE FROM cdc_sync_conflicts"),
    ]
    no_grant = _purge(r)
    execute(
        my_target_dsn,
        MY_GUARD,
        f"GRANT SELECT (id, pipeline, applied_at), DELETE ON `{db}`.cdc_sync_audit TO '{user}'@'%'",
        "INSERT INTO cdc_sync_audit (pipeline, op, outcome, applied_at) VALUES "
        + ", ".join(
            f"('{r.pipeline}', 'insert', 'applied', UTC_TIMESTAMP(6) - INTERVAL "
            f"{RETENTION_DAYS + 10} DAY)"
            for _ in range(3)
        ),
    )
    purged = _purge(r)
    guard = _my_denied(r.target_dsn, "DELETE FROM cdc_sync_audit ORDER BY id DESC LIMIT 1")
    after = _audited(my_target_dsn, "cdc_sync_audit")
    _pg_changes(source_dsn, 300)
    r.drain()
    rows += _cross_equal(source_dsn, my_target_dsn, "public", db)
    report(
        rows=rows,
        message=f"works; audit append-only; purge without DELETE: "
        f"{_refusal(no_grant.stderr)}; guarded: {purged.stdout.strip()} purged; "
        f"check: {_brief(check)}",
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr[-2000:]
    assert outcomes.get("applied", 0) > 0, outcomes
    assert all("command denied" in m for m in refused), refused
    assert no_grant.returncode != 0 and "MySQL error 1142" in no_grant.stderr
    assert purged.returncode == 0 and purged.stdout.strip() == "3", purged.stderr[-2000:]
    assert "append-only within the retention period" in guard
    assert after == outcomes


def test_a_daemon_without_ddl_rights_says_to_migrate_and_cdc_sync_migrate_does_it(
    source_dsn: str, target_dsn: str, tmp_path: Path, report: Report
) -> None:
    """Before the owner has migrated, the daemon's start stops with the command to run (not a
    bare "permission denied"); `cdc-sync migrate --owner-dsn-env` creates the tables as the
    owner, and once granted the daemon replicates."""
    pipeline = f"lp_{_db(source_dsn)}"
    src_role, tgt_role = f"cdc_src_{_db(source_dsn)}", f"cdc_tgt_{_db(target_dsn)}"
    owner = f"cdc_owner_{_db(target_dsn)}"
    _pg_source(source_dsn, src_role, pipeline)
    sql(
        target_dsn,
        *PG_TABLES,
        f"CREATE ROLE {tgt_role} LOGIN",
        f"CREATE ROLE {owner} LOGIN",
        f"CREATE SCHEMA {STATE_SCHEMA} AUTHORIZATION {owner}",
        f"GRANT USAGE ON SCHEMA {STATE_SCHEMA} TO {tgt_role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON public.customers, public.orders TO {tgt_role}",
    )
    _pg_harden(target_dsn, tgt_role, owner)
    r = _route(
        tmp_path,
        _as(source_dsn, src_role),
        _as(target_dsn, tgt_role),
        {"public.customers": None, "public.orders": None},
        state_schema=STATE_SCHEMA,
    )
    first = r.cli("run", "--until-caught-up")
    r.env["OWNER_DSN"] = _as(target_dsn, owner)
    migrated = r.cli("migrate", "--owner-dsn-env", "OWNER_DSN")
    again = r.cli("migrate", "--owner-dsn-env", "OWNER_DSN")
    sql(
        _as(target_dsn, owner),
        *(f"GRANT {p} ON {STATE_SCHEMA}.{t} TO {tgt_role}" for t, p in STATE_DML_GRANTS.items()),
    )
    r.drain()
    _pg_changes(source_dsn, 100)
    r.drain()
    rows = _pg_equal(source_dsn, target_dsn)
    report(rows=rows, message=f"before migrate: {_refusal(first.stderr)[:110]}")
    assert first.returncode == 1, first.stderr
    assert "cdc-sync migrate" in first.stderr and "(none yet)" in first.stderr, first.stderr
    assert migrated.returncode == 0, migrated.stderr
    assert "no tables -> " in migrated.stdout, migrated.stdout
    assert again.returncode == 0 and "no tables" not in again.stdout, again.stdout
