"""``cdc-sync check``: every prerequisite of a pipeline, each problem with its fix."""

from __future__ import annotations

import psycopg
import pymysql
import sqlalchemy as sa
import sqlalchemy.exc

from cdc_sync.checkpoint.store import CheckpointStore
from cdc_sync.config.models import Config, PostgresSource
from cdc_sync.errors import CdcSyncError, ConfigError
from cdc_sync.runtime.classify import classify
from cdc_sync.runtime.rules import PipelineRules
from cdc_sync.runtime.wiring import build_source, table_map, target_engine

# What a check may meet while probing servers; reported as problems, never raised.
_PROBE_ERRORS = (
    CdcSyncError,
    psycopg.Error,
    pymysql.err.MySQLError,
    sqlalchemy.exc.SQLAlchemyError,
    OSError,
)


def _source_problems(config: Config, name: str) -> list[str]:
    try:
        source = build_source(config, name)
    except CdcSyncError as e:
        return [f"source: {e}"]
    try:
        return [f"source: {p}" for p in source.problems()]
    except _PROBE_ERRORS as e:
        return [f"source: {classify(e, 'cannot check source')}"]
    finally:
        source.close()


_MY_PRIVS = ("CREATE", "ALTER", "INSERT", "UPDATE", "DELETE", "SELECT")


def _mysql_problems(conn: sa.Connection, schemas: set[str]) -> list[str]:
    """Each target database exists (or may be created) and the user may write there."""
    problems = []
    for db in sorted(schemas):
        exists = conn.execute(
            sa.text("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :s"), {"s": db}
        ).first()
        # SCHEMA_PRIVILEGES / USER_PRIVILEGES list what the current user was granted.
        have = {
            str(p)
            for (p,) in conn.execute(
                sa.text(
                    "SELECT PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES "
                    "WHERE GRANTEE = :u AND :s LIKE TABLE_SCHEMA "
                    "UNION SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES "
                    "WHERE GRANTEE = :u"
                ),
                {"u": _grantee(conn), "s": db},
            )
        }
        missing = [p for p in _MY_PRIVS if p not in have]
        if not exists and "CREATE" not in have:
            problems.append(
                f"target: database {db!r} does not exist and the user may not create it; "
                f"fix: CREATE DATABASE `{db}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;"
            )
        if missing:
            problems.append(
                f"target: user lacks {', '.join(missing)} on database {db!r}; "
                f"fix: GRANT {', '.join(_MY_PRIVS)} ON `{db}`.* TO <cdc user>;"
            )
    return problems


def _grantee(conn: sa.Connection) -> str:
    user, _, host = str(conn.execute(sa.text("SELECT CURRENT_USER()")).scalar()).rpartition("@")
    return f"'{user}'@'{host}'"


def _target_problems(config: Config, name: str) -> list[str]:
    engine = target_engine(config, name)
    problems = []
    try:
        with engine.connect() as conn:
            schemas = {t.schema for t in table_map(config, name).values()}
            if conn.dialect.name in ("mysql", "mariadb"):
                return _mysql_problems(conn, schemas)
            for schema in sorted(schemas):
                exists = conn.execute(
                    sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": schema}
                ).first()
                if not exists:
                    problems.append(
                        f'target: schema {schema!r} does not exist; fix: CREATE SCHEMA "{schema}";'
                    )
                    continue
                can = conn.execute(
                    sa.text("SELECT has_schema_privilege(current_user, :s, 'CREATE')"),
                    {"s": schema},
                ).scalar()
                if not can:
                    problems.append(
                        f"target: user may not create tables in schema {schema!r}; "
                        f'fix: GRANT CREATE ON SCHEMA "{schema}" TO <cdc user>;'
                    )
    except _PROBE_ERRORS as e:
        problems.append(f"target: {classify(e, 'cannot connect to target')}")
    finally:
        engine.dispose()
    return problems


def _checkpoint_problems(config: Config, name: str) -> list[str]:
    """Whether the source still holds what the stored checkpoint needs (a binlog purged past
    it, say): found by ``check`` before ``run`` would refuse to start."""
    state_schema = config.targets[config.pipelines[name].target].state_schema
    engine = target_engine(config, name)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("cdc_sync_checkpoints", schema=state_schema):
                return []
            cp = CheckpointStore(name, schema=state_schema).load(conn)
    except _PROBE_ERRORS:
        return []  # the target's own problems are reported by _target_problems
    finally:
        engine.dispose()
    if cp is None:
        return []
    source = build_source(config, name)
    probe = getattr(source, "checkpoint_problems", None)
    try:
        return [f"source: {p}" for p in probe(cp.position)] if probe else []
    except _PROBE_ERRORS as e:
        return [f"source: {classify(e, 'cannot check the checkpoint')}"]
    finally:
        source.close()


def _rule_problems(config: Config, name: str) -> list[str]:
    """Every table's rules compiled against the source's current columns: a map on a column
    the source lacks, a cast that cannot apply, a filter naming an unknown column…"""
    if not any(tc.has_rules for tc in config.pipelines[name].tables.values()):
        return []
    try:
        source = build_source(config, name)
    except CdcSyncError:
        return []  # reported by _source_problems
    try:
        PipelineRules(config, name).compile_all(source.table_schemas())
    except ConfigError as e:
        return list(e.problems)
    except _PROBE_ERRORS:
        return []  # tables the source cannot read are reported by _source_problems
    finally:
        source.close()
    return []


def _link_problems(config: Config, name: str) -> list[str]:
    """A link direction: origin / marker privileges on the target, full old rows on a
    PostgreSQL source, commit timestamps on a PostgreSQL target for last_write_wins."""
    role = config.link_role(name)
    if role is None:
        return []
    from cdc_sync.config.links import origin_name  # noqa: PLC0415
    from cdc_sync.runtime.link import require_full_images  # noqa: PLC0415
    from cdc_sync.sinks.sql.origin import OriginTag  # noqa: PLC0415

    pc = config.pipelines[name]
    problems: list[str] = []
    sc = config.sources[pc.source]
    if isinstance(sc, PostgresSource):
        try:
            require_full_images(sc.dsn.get_secret_value(), list(table_map(config, name)))
        except CdcSyncError as e:
            problems.append(f"source: {e}")
    engine = target_engine(config, name)
    try:
        with engine.connect() as conn:
            tag = OriginTag(origin_name(name), config.targets[pc.target].state_schema)
            problems += [f"target: {p}" for p in tag.problems(conn)]
            lww = any(t.conflict.rule == "last_write_wins" for t in role.tables.values())
            if lww and conn.dialect.name == "postgresql":
                on = conn.exec_driver_sql("SHOW track_commit_timestamp").scalar()
                if on != "on":
                    problems.append(
                        "target: last_write_wins needs commit timestamps; fix: ALTER SYSTEM "
                        "SET track_commit_timestamp = on; then restart the server"
                    )
    except _PROBE_ERRORS as e:
        problems.append(f"target: {classify(e, 'cannot connect to target')}")
    finally:
        engine.dispose()
    return problems


def check_pipeline(config: Config, name: str) -> list[str]:
    out = _source_problems(config, name) + _rule_problems(config, name)
    out += _target_problems(config, name) + _link_problems(config, name)
    return out + _checkpoint_problems(config, name)
