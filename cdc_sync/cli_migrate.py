"""``cdc-sync migrate``: bring the cdc_sync_* tables to this version, as their owner."""

from __future__ import annotations

import os

import click
import psycopg
import pymysql
import sqlalchemy as sa
from pydantic import SecretStr, ValidationError

from cdc_sync.cli_common import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    _fail,
    _load,
    _pipelines,
    config_option,
    pipeline_option,
)
from cdc_sync.errors import CdcSyncError
from cdc_sync.runtime.classify import classify
from cdc_sync.runtime.wiring import target_engine
from cdc_sync.state.migrate import current_revision, upgrade


@click.command()
@config_option
@pipeline_option
@click.option(
    "--owner-dsn-env",
    metavar="VAR",
    help="Environment variable with the DSN of the state tables' owner (default: each "
    "target's own DSN). Read from the environment only: a DSN holds a password.",
)
def migrate(config_path: str | None, pipelines: tuple[str, ...], owner_dsn_env: str | None) -> None:
    """Create or upgrade the cdc_sync_* tables of each target of the pipelines. The daemon
    does this itself at start when its user may; where the tables belong to another role
    (an append-only audit, docs/security.md), the DBA runs this as that role first."""
    cfg = _load(config_path)
    owner = None
    if owner_dsn_env:
        owner = os.environ.get(owner_dsn_env)
        if not owner:
            _fail(EXIT_CONFIG, [f"--owner-dsn-env: environment variable {owner_dsn_env} is unset"])
    done: set[str] = set()
    for name in _pipelines(cfg, pipelines):
        tname = cfg.pipelines[name].target
        if tname in done:
            continue
        done.add(tname)
        target = cfg.targets[tname]
        if owner is not None:
            try:  # validated as the config's DSNs are: a message with no part of it
                swapped = type(target).model_validate({**dict(target), "dsn": SecretStr(owner)})
            except ValidationError as e:
                errs = e.errors(include_url=False, include_input=False)
                msgs = [str(err["msg"]).removeprefix("Value error, ") for err in errs]
                _fail(EXIT_CONFIG, [f"--owner-dsn-env {owner_dsn_env}: {m}" for m in msgs])
            cfg = cfg.model_copy(update={"targets": {**cfg.targets, tname: swapped}})
        engine = target_engine(cfg, name)
        try:
            with engine.connect() as conn:
                before = current_revision(conn, target.state_schema)
                conn.commit()
                upgrade(conn, schema=target.state_schema)
                conn.commit()
                after = current_revision(conn, target.state_schema)
        except CdcSyncError as e:
            _fail(EXIT_FAILED, [f"target {tname}: {e}"])
        except (psycopg.Error, pymysql.MySQLError, sa.exc.DBAPIError, OSError) as e:
            _fail(EXIT_FAILED, [str(classify(e, f"target {tname}"))])  # no secret, side named
        finally:
            engine.dispose()
        where = f" (schema {target.state_schema})" if target.state_schema else ""
        click.echo(f"target {tname}{where}: {before or 'no tables'} -> {after}")
    raise SystemExit(EXIT_OK)
