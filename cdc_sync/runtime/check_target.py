"""``check`` on a target: exactly the privileges the daemon uses, per table (docs/security.md)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping

import sqlalchemy as sa

from cdc_sync.records import TableId
from cdc_sync.state.migrate import HEAD_REVISION, current_revision
from cdc_sync.state.tables import ALEMBIC_VERSION_TABLE

DATA = ("SELECT", "INSERT", "UPDATE", "DELETE")
# What the daemon does to each of its own tables; the audit and conflict log only grow.
STATE = {
    ALEMBIC_VERSION_TABLE: ("SELECT",),
    "cdc_sync_checkpoints": ("SELECT", "INSERT", "UPDATE"),
    "cdc_sync_audit": ("INSERT",),
    "cdc_sync_dead_letters": ("SELECT", "INSERT", "UPDATE"),
    "cdc_sync_snapshots": ("SELECT", "INSERT", "UPDATE"),
    "cdc_sync_verify_runs": ("SELECT", "INSERT"),
    "cdc_sync_conflicts": ("SELECT", "INSERT"),
}
MIGRATE = "run `cdc-sync migrate -c <config> --owner-dsn-env <VAR>` as their owner"


def namespace_exists(conn: sa.Connection, name: str) -> bool:
    """Whether the target has this schema (PostgreSQL) or database (MySQL / MariaDB)."""
    if conn.dialect.name in ("mysql", "mariadb"):
        query = "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :s"
    else:
        query = "SELECT 1 FROM pg_namespace WHERE nspname = :s"
    return _pg_one(conn, query, s=name) is not None


def namespace_problems(
    conn: sa.Connection, pipeline: str, entries: Mapping[str, tuple[TableId, bool]]
) -> tuple[list[str], set[TableId]]:
    """Table entries (config key -> target table, whether ``target:`` was given) whose
    target schema / database does not exist: one problem each, naming the entry's key path
    and the fix; and those targets, which the other checks skip. Nothing is created: the
    daemon never makes a schema or database."""
    mysql = conn.dialect.name in ("mysql", "mariadb")
    what = "database" if mysql else "schema"
    # Where a table may go instead: the DSN's database (MySQL), the search_path's first
    # schema (PostgreSQL).
    home = str(_pg_one(conn, "SELECT DATABASE()" if mysql else "SELECT current_schema()"))
    out: list[str] = []
    missing: set[TableId] = set()
    known: dict[str, bool] = {}
    for key, (t, named) in sorted(entries.items()):
        if known.setdefault(t.schema, namespace_exists(conn, t.schema)):
            continue
        missing.add(t)
        why = "" if named else " (the default target name is the source's schema.table)"
        create = f"CREATE DATABASE `{t.schema}`" if mysql else f'CREATE SCHEMA "{t.schema}"'
        out.append(
            f"target: pipelines.{pipeline}.tables.{key}: the target has no {what} "
            f"{t.schema!r}{why}; set target: {home}.{t.name} (or, if the table belongs in "
            f"{t.schema!r}, {create};)"
        )
    return out, missing


def pg_problems(
    conn: sa.Connection, tables: Iterable[TableId], state_schema: str | None, create: bool
) -> list[str]:
    out: list[str] = []
    for t in sorted(tables, key=str):
        qualified = f'"{t.schema}"."{t.name}"'
        if _pg_one(conn, "SELECT to_regclass(:t) IS NOT NULL", t=qualified):
            out += _pg_missing(conn, qualified, DATA, f"table {t}")
        elif not create:
            out.append(f"target: table {t} does not exist and create_tables is off")
        elif not _pg_one(conn, "SELECT has_schema_privilege(:s, 'CREATE')", s=t.schema):
            out.append(
                f"target: table {t} does not exist and the user may not create it; fix: create "
                f'it, or GRANT CREATE ON SCHEMA "{t.schema}" TO <cdc user>;'
            )
    schema = state_schema or str(conn.execute(sa.text("SELECT current_schema()")).scalar())
    return out + _state(conn, schema, pg=True)


def mysql_problems(
    conn: sa.Connection, tables: Iterable[TableId], state_db: str | None, create: bool
) -> list[str]:
    out: list[str] = []
    have = _my_grants(conn)
    for t in sorted(tables, key=str):
        exists = _my_exists(conn, t.schema, t.name)
        if exists:
            out += _my_missing(have, t.schema, t.name, DATA, f"table {t}")
        elif not create:
            out.append(f"target: table {t} does not exist and create_tables is off")
        elif "CREATE" not in _my_privs(have, t.schema, t.name):
            out.append(
                f"target: table {t} does not exist and the user may not create it; fix: "
                f"create it, or GRANT CREATE ON `{t.schema}`.`{t.name}` TO <cdc user>;"
            )
    if state_db:
        out += _state(conn, state_db, pg=False, have=have)
    return out


def _state(
    conn: sa.Connection,
    schema: str,
    pg: bool,
    have: set[tuple[str, str, str]] | None = None,
) -> list[str]:
    """The cdc_sync_* tables: current and usable, or creatable by the daemon itself."""
    if pg and not namespace_exists(conn, schema):
        return [
            f"target: the schema {schema!r} for the cdc_sync_* tables (state_schema) does not "
            f'exist; fix: CREATE SCHEMA "{schema}" AUTHORIZATION <owner>; then {MIGRATE}'
        ]
    if pg and not _pg_one(conn, "SELECT has_schema_privilege(:s, 'USAGE')", s=schema):
        return [
            f"target: user lacks USAGE on schema {schema!r}, which holds the cdc_sync_* "
            f'tables; fix: GRANT USAGE ON SCHEMA "{schema}" TO <cdc user>;'
        ]
    exists = (
        _pg_one(conn, "SELECT to_regclass(:t) IS NOT NULL", t=f'"{schema}".{ALEMBIC_VERSION_TABLE}')
        if pg
        else _my_exists(conn, schema, ALEMBIC_VERSION_TABLE)
    )
    if not exists:
        may = (
            _pg_one(conn, "SELECT has_schema_privilege(:s, 'CREATE')", s=schema)
            if pg
            else "CREATE" in _my_privs(have or set(), schema, "cdc_sync_checkpoints")
        )
        if may:
            return []  # created at the first start
        return [
            f"target: the cdc_sync_* tables do not exist in {schema!r} and the user may not "
            f"create them; fix: {MIGRATE}, then grant the daemon's role its DML (docs/security.md)"
        ]
    out = _state_privileges(conn, schema, pg, have)
    if any(ALEMBIC_VERSION_TABLE in line for line in out):
        return out  # the revision cannot be read: the GRANTs come first
    revision = current_revision(conn, schema)
    conn.commit()
    if revision != HEAD_REVISION and not _owns_state(conn, schema, pg, have):
        out.append(
            f"target: the cdc_sync_* tables in {schema!r} are at revision {revision}, this "
            f"version needs {HEAD_REVISION}; fix: {MIGRATE}"
        )
    return out


def _state_privileges(
    conn: sa.Connection, schema: str, pg: bool, have: set[tuple[str, str, str]] | None
) -> list[str]:
    """What the daemon may not do to its own tables, each with its GRANT (docs/security.md:
    after ``migrate --owner-dsn-env`` the owner grants these to the daemon's role)."""
    out: list[str] = []
    for table, privs in STATE.items():
        if pg:
            qualified = f'"{schema}".{table}'
            if _pg_one(conn, "SELECT to_regclass(:t) IS NOT NULL", t=qualified):
                out += _pg_missing(conn, qualified, privs, table)
        elif _my_exists(conn, schema, table):
            out += _my_missing(have or set(), schema, table, privs, table)
    return out


def _owns_state(
    conn: sa.Connection, schema: str, pg: bool, have: set[tuple[str, str, str]] | None
) -> bool:
    """Whether the user may run the pending migration itself."""
    if pg:
        return bool(
            _pg_one(
                conn,
                "SELECT pg_has_role(tableowner, 'USAGE') FROM pg_tables "
                "WHERE schemaname = :s AND tablename = 'cdc_sync_checkpoints'",
                s=schema,
            )
        )
    return "CREATE" in _my_privs(have or set(), schema, "")


def _pg_one(conn: sa.Connection, query: str, **params: object) -> object:
    return conn.execute(sa.text(query), params).scalar()


def _pg_missing(conn: sa.Connection, qualified: str, privs: Iterable[str], what: str) -> list[str]:
    missing = [
        p
        for p in privs
        if not _pg_one(conn, "SELECT has_table_privilege(:t, :p)", t=qualified, p=p)
    ]
    if not missing:
        return []
    return [
        f"target: user lacks {', '.join(missing)} on {what}; fix: GRANT {', '.join(missing)} "
        f"ON {qualified} TO <cdc user>;"
    ]


def _my_grants(conn: sa.Connection) -> set[tuple[str, str, str]]:
    """(privilege, database or '*', table or '*') granted to the current user."""
    user, _, host = str(conn.execute(sa.text("SELECT CURRENT_USER()")).scalar()).rpartition("@")
    grantee = f"'{user}'@'{host}'"
    rows = conn.execute(
        sa.text(
            "SELECT PRIVILEGE_TYPE, '*', '*' FROM information_schema.USER_PRIVILEGES "
            "WHERE GRANTEE = :u "
            "UNION SELECT PRIVILEGE_TYPE, TABLE_SCHEMA, '*' "
            "FROM information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE = :u "
            "UNION SELECT PRIVILEGE_TYPE, TABLE_SCHEMA, TABLE_NAME "
            "FROM information_schema.TABLE_PRIVILEGES WHERE GRANTEE = :u"
        ),
        {"u": grantee},
    )
    return {(str(p), str(d), str(t)) for p, d, t in rows}


def _my_privs(have: set[tuple[str, str, str]], db: str, table: str) -> set[str]:
    """Privileges that apply to ``db.table`` (database grants may use LIKE wildcards)."""
    out = set()
    for priv, d, t in have:
        on_db = d in ("*", db) or _like(d, db)
        if on_db and (t in ("*", table)):
            out.add(priv)
    return out


def _like(pattern: str, text: str) -> bool:
    glob = pattern.replace("\\_", "\0").replace("_", "?").replace("%", "*").replace("\0", "_")
    return fnmatch.fnmatchcase(text, glob)


def _my_exists(conn: sa.Connection, db: str, table: str) -> bool:
    return (
        conn.execute(
            sa.text(
                "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = :d "
                "AND TABLE_NAME = :t"
            ),
            {"d": db, "t": table},
        ).first()
        is not None
    )


def _my_missing(
    have: set[tuple[str, str, str]], db: str, table: str, privs: Iterable[str], what: str
) -> list[str]:
    got = _my_privs(have, db, table)
    missing = [p for p in privs if p not in got]
    if not missing:
        return []
    return [
        f"target: user lacks {', '.join(missing)} on {what}; fix: GRANT {', '.join(missing)} "
        f"ON `{db}`.`{table}` TO <cdc user>;"
    ]
