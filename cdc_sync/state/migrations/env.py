"""Alembic environment: the cdc_sync_* tables only, with a version table of their own."""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import context

from cdc_sync.state.tables import ALEMBIC_VERSION_TABLE, state_tables

config = context.config
x_args = context.get_x_argument(as_dictionary=True)
# Schema of the state tables: set by cdc_sync.state.migrate, or `-x schema=...` on the CLI.
schema: str | None = (
    config.attributes.get("schema")
    or x_args.get("schema")
    or os.environ.get("CDC_SYNC_STATE_SCHEMA")
    or None
)
target_metadata = state_tables(schema).metadata


def _include_name(name: str | None, type_: str, parent_names: object) -> bool:
    # The target database is shared with user tables: autogenerate must only ever look at ours.
    if type_ == "table":
        return bool(name and name.startswith("cdc_sync_"))
    return True


def _configure(**kw: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        # Our own version table, so we never collide with an application's alembic_version.
        version_table=ALEMBIC_VERSION_TABLE,
        version_table_schema=schema,
        include_name=_include_name,
        **kw,  # type: ignore[arg-type]
    )


def _url() -> str:
    url = x_args.get("url") or os.environ.get("CDC_SYNC_TARGET_URL")
    url = url or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(
            "no target database: pass -x url=postgresql+psycopg://... or set CDC_SYNC_TARGET_URL"
        )
    return url


def run_offline() -> None:
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        # Programmatic use (cdc_sync.state.migrate): the caller owns the transaction and commits.
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = sa.create_engine(_url(), poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        _configure(connection=conn)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
