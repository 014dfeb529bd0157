"""Bring the cdc_sync_* tables to the newest Alembic revision on a given connection."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from cdc_sync.errors import PermanentError, TransientError
from cdc_sync.state.tables import ALEMBIC_VERSION_TABLE

if TYPE_CHECKING:
    from alembic.config import Config

# The newest revision in migrations/versions (a test keeps the two equal). Knowing it here
# lets a start whose tables are current skip importing Alembic and reading its scripts.
HEAD_REVISION = "0007_exact_text"

# Shipped inside the package so an installed daemon finds its scripts (see migrations/README.md).
SCRIPT_LOCATION = Path(__file__).with_name("migrations")

# Two-key advisory lock (classid, objid) so it cannot be mistaken for a user's one-key lock.
_LOCK_CLASS = 0x63647363  # "cdsc"
_LOCK_OBJ = 1
# MySQL / MariaDB: a named lock, server-wide, held by the session.
MYSQL_LOCK = "cdc_sync_migrate"
MYSQL_LOCK_SECONDS = 60


def alembic_config(connection: sa.Connection | None = None, schema: str | None = None) -> Config:
    """An Alembic config for the packaged scripts; no ini file, so our logging stays as is."""
    from alembic.config import Config  # noqa: PLC0415  (lazy: see HEAD_REVISION)

    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    if connection is not None:
        cfg.attributes["connection"] = connection
    cfg.attributes["schema"] = schema
    return cfg


def current_revision(connection: sa.Connection, schema: str | None = None) -> str | None:
    """The stored revision, by plain SQL (None before the first upgrade): no Alembic import."""
    if not sa.inspect(connection).has_table(ALEMBIC_VERSION_TABLE, schema=schema):
        return None
    table = sa.table(ALEMBIC_VERSION_TABLE, sa.column("version_num"), schema=schema)
    rows = connection.execute(sa.select(table.c.version_num)).scalars().all()
    return rows[0] if len(rows) == 1 else None


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory  # noqa: PLC0415

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


_ALEMBIC = threading.Lock()


def upgrade(connection: sa.Connection, schema: str | None = None) -> None:
    """Upgrade to head inside the caller's transaction; the caller commits.

    Two daemons starting together against a fresh target would both try to create the tables.
    On PostgreSQL a transaction-scoped advisory lock serialises them: the second one waits for
    the first to commit, then finds the version table at head and does nothing. DDL is
    transactional on PostgreSQL, so a failed upgrade leaves nothing half-made behind.

    On MySQL / MariaDB DDL commits implicitly, so this commits too, under a named server lock
    (GET_LOCK) held until the version row is committed: the second start then sees head.
    """
    if connection.dialect.name in ("mysql", "mariadb"):
        _upgrade_mysql(connection, schema)
        return
    if connection.dialect.name == "postgresql":
        connection.execute(
            sa.text("SELECT pg_advisory_xact_lock(:c, :o)"), {"c": _LOCK_CLASS, "o": _LOCK_OBJ}
        )
    _upgrade(connection, schema)


def _upgrade(connection: sa.Connection, schema: str | None) -> None:
    # Cheap check first: at every start the tables are usually current already.
    if current_revision(connection, schema) == HEAD_REVISION:
        return
    from alembic import command  # noqa: PLC0415

    # Alembic keeps the running migration's context in module globals (alembic.context,
    # alembic.op): two pipelines of one daemon upgrading at once from their threads would
    # run on each other's connection (seen: a two-way link's directions starting together).
    before = current_revision(connection, schema)
    with _ALEMBIC:
        try:
            command.upgrade(alembic_config(connection, schema), "head")
        except sa.exc.DBAPIError as e:
            if not _denied(e):
                raise
            where = f" in schema {schema}" if schema else ""
            raise PermanentError(
                f"the cdc_sync_* tables{where} are at revision {before or '(none yet)'}, this "
                f"version needs {HEAD_REVISION}, and this user may not change them; run "
                "`cdc-sync migrate -c <config> --owner-dsn-env <VAR>` as their owner first "
                "(docs/security.md)"
            ) from None


def _denied(e: sa.exc.DBAPIError) -> bool:
    """A missing privilege (PostgreSQL 42501; MySQL 1142 / 1044 / 1227 / 1143)."""
    orig = e.orig
    if getattr(orig, "sqlstate", None) == "42501":
        return True
    args: tuple[object, ...] = tuple(getattr(orig, "args", ()))
    return len(args) > 0 and args[0] in (1142, 1143, 1044, 1227)


def _upgrade_mysql(connection: sa.Connection, schema: str | None) -> None:
    connection.commit()  # nothing of the caller's may ride along with the implicit commits
    got = connection.execute(
        sa.text("SELECT GET_LOCK(:n, :t)"), {"n": MYSQL_LOCK, "t": MYSQL_LOCK_SECONDS}
    ).scalar()
    if got != 1:
        raise TransientError(
            f"another cdc-sync start has held the migration lock {MYSQL_LOCK!r} for "
            f"{MYSQL_LOCK_SECONDS} s; retrying"
        )
    try:
        _upgrade(connection, schema)
        connection.commit()
    finally:
        connection.execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": MYSQL_LOCK})
        connection.commit()
