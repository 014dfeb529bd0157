"""``cdc-sync check``: every prerequisite of a pipeline, each problem with its fix."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable

import psycopg
import pymysql
import sqlalchemy as sa
import sqlalchemy.exc
from psycopg.conninfo import conninfo_to_dict

from cdc_sync import logs
from cdc_sync.checkpoint.store import CheckpointStore
from cdc_sync.config.dsn import parse_mysql_dsn
from cdc_sync.config.models import Config, MysqlSource, MysqlTarget, PostgresSource
from cdc_sync.errors import CdcSyncError, ConfigError
from cdc_sync.records import TableId
from cdc_sync.runtime.check_target import (
    mysql_problems,
    namespace_exists,
    namespace_problems,
    pg_problems,
)
from cdc_sync.runtime.classify import classify
from cdc_sync.runtime.rules import PipelineRules
from cdc_sync.runtime.self_loop import SelfLoopError, check_not_itself
from cdc_sync.runtime.signal_check import signal_problems
from cdc_sync.runtime.wiring import build_source, state_schema_of, table_map, target_engine
from cdc_sync.sinks.sql.sink import SqlSink

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


def _entries(config: Config, name: str) -> dict[str, tuple[TableId, bool]]:
    """Each table entry's config key -> its target table, and whether ``target:`` names it."""
    targets = table_map(config, name)
    return {
        key: (targets[TableId.parse(key)], tc.target is not None)
        for key, tc in config.pipelines[name].tables.items()
    }


def _target_problems(config: Config, name: str) -> list[str]:
    engine = target_engine(config, name)
    tname = config.pipelines[name].target
    tc = config.targets[tname]
    try:
        conn = engine.connect()
    except _PROBE_ERRORS as e:
        engine.dispose()
        return [f"target: {classify(e, 'cannot connect to target')}"]
    # Connected: what fails from here on is a probe (a privilege, say), not the connection.
    try:
        with conn:
            out, missing = namespace_problems(conn, name, _entries(config, name))
            tables = [t for t in table_map(config, name).values() if t not in missing]
            if conn.dialect.name in ("mysql", "mariadb"):
                state = state_schema_of(config, tname)
                return out + mysql_problems(conn, tables, state, tc.create_tables)
            return out + pg_problems(conn, tables, tc.state_schema, tc.create_tables)
    except _PROBE_ERRORS as e:
        return [f"target: {classify(e, 'cannot check the target')}"]
    finally:
        engine.dispose()


def _signal_problems(config: Config, name: str) -> list[str]:
    """An existing signal table the daemon cannot write its watermarks into: found here, not
    when a re-snapshot is requested from the running daemon."""
    try:
        return signal_problems(config, name)
    except _PROBE_ERRORS:
        return []  # a source that cannot be reached: reported by _source_problems


def _self_loop_problems(config: Config, name: str) -> list[str]:
    """The target DSN names the source database itself, with tables read and written."""
    try:
        source = build_source(config, name)
    except CdcSyncError:
        return []  # reported by _source_problems
    try:
        where = source.instance()
    except _PROBE_ERRORS:
        return []  # a source that cannot be reached: reported by _source_problems
    finally:
        source.close()
    engine = target_engine(config, name)
    try:
        with engine.connect() as conn:
            check_not_itself(where, conn, table_map(config, name))
    except SelfLoopError as e:
        return [f"target: {e}"]
    except _PROBE_ERRORS:
        return []  # a target that cannot be reached: reported by _target_problems
    finally:
        engine.dispose()
    return []


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


def _table_problems(config: Config, name: str) -> list[str]:
    """Target tables that exist but cannot take the source's rows (a type, the key, a key
    collation): found by ``check`` instead of at the first start. Nothing is changed."""
    tc = config.targets[config.pipelines[name].target]
    source = build_source(config, name)
    engine = target_engine(config, name)
    targets = table_map(config, name)
    out: list[str] = []
    try:
        shaped = PipelineRules(config, name).compile_all(source.table_schemas())
        sink = SqlSink(create_tables=tc.create_tables)
        with engine.connect() as conn:
            for table, compiled in shaped.items():
                if not namespace_exists(conn, targets[table].schema):
                    continue  # reported by _target_problems, with the table entry's key
                problem = sink.table_problem(conn, compiled.schema, targets[table])
                if problem is not None:
                    out.append(f"target: {problem}")
            conn.rollback()
    except (ConfigError, *_PROBE_ERRORS):
        return []  # reported by _source_problems / _rule_problems / _target_problems
    finally:
        engine.dispose()
        source.close()
    return out


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


# -- TLS: warnings, not problems (a private network may be trusted on purpose) ------------

_PG_TLS_OFF = ("disable", "allow", "prefer")  # prefer: unencrypted if the server says no
_PG_TLS_UNVERIFIED = ("require", "verify-ca")  # encrypted; the host name is not checked
_PG_FIX = "fix: add sslmode=verify-full&sslrootcert=/path/to/ca.pem to the DSN"
_MY_FIX = "fix: add ssl_ca=/path/to/ca.pem&ssl_verify_identity=true to the DSN"


def is_local_host(host: str) -> bool:
    """A Unix socket or a loopback name / address: traffic that never leaves the machine."""
    host = host.strip().strip("[]")
    if not host or host.startswith(("/", "@")) or host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: where it resolves is not checked


def _pg_addresses(host: str, hostaddr: str) -> list[str]:
    """Where libpq connects, per entry of the (comma-separated) lists: ``hostaddr`` when
    given, else ``host`` (empty: the default Unix socket)."""
    hosts, addrs = host.split(",") if host else [], hostaddr.split(",") if hostaddr else []
    n = max(len(hosts), len(addrs))
    hosts, addrs = hosts + [""] * (n - len(hosts)), addrs + [""] * (n - len(addrs))
    return [a.strip() or h.strip() for h, a in zip(hosts, addrs, strict=True)]


def pg_tls_warning(dsn: str) -> str | None:
    """None, or why a libpq DSN leaves a connection to a non-loopback host without verified
    TLS (``sslmode`` absent, disable, allow, prefer; require or verify-ca do not check the
    server's host name). Host names only: never the DSN."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return None  # not parsable: connecting reports it
    host = str(params.get("host") or os.environ.get("PGHOST") or "")
    hostaddr = str(params.get("hostaddr") or os.environ.get("PGHOSTADDR") or "")
    remote = [h for h in dict.fromkeys(_pg_addresses(host, hostaddr)) if not is_local_host(h)]
    if not remote:
        return None  # a Unix socket or loopback only
    mode = str(params.get("sslmode") or os.environ.get("PGSSLMODE") or "")
    hosts = ", ".join(remote)
    if mode in _PG_TLS_OFF or not mode:
        shown = f"sslmode={mode}" if mode else "no sslmode, i.e. prefer"
        return (
            f"TLS is off or unverified for {hosts} ({shown}): the connection may be "
            f"unencrypted or intercepted; {_PG_FIX}"
        )
    if mode in _PG_TLS_UNVERIFIED:
        return (
            f"TLS does not verify the server's host name for {hosts} (sslmode={mode}): "
            f"the connection may be intercepted; {_PG_FIX}"
        )
    return None


def mysql_tls_warning(dsn_text: str) -> str | None:
    """None, or why a MySQL DSN leaves a connection to a non-loopback host without verified
    TLS. PyMySQL checks the certificate with ``ssl_verify_cert`` or ``ssl_verify_identity``,
    and the host name only with ``ssl_verify_identity`` *and* ``ssl_ca``; without any ``ssl_*``
    it negotiates TLS when the server offers it (older versions never do) and verifies
    nothing."""
    try:
        dsn = parse_mysql_dsn(dsn_text)
    except ValueError:
        return None  # refused when the config is loaded
    if is_local_host(dsn.host):
        return None
    p = dict(dsn.params)
    ca, cert, identity = p.get("ssl_ca"), p.get("ssl_verify_cert"), p.get("ssl_verify_identity")
    if ca and identity:
        return None
    if not ca and not cert and not identity:
        return (
            f"TLS is off or unverified for {dsn.host} (no ssl_ca): the connection may be "
            f"unencrypted or intercepted; {_MY_FIX}"
        )
    if not cert and not identity:
        what = "ssl_ca without ssl_verify_cert / ssl_verify_identity: the certificate"
    elif not ca:
        what = "no ssl_ca: the host name"
    else:
        what = "ssl_verify_cert without ssl_verify_identity: the host name"
    return (
        f"TLS does not verify the server for {dsn.host} ({what} is not checked): the "
        f"connection may be intercepted; {_MY_FIX}"
    )


def tls_warnings(config: Config, name: str) -> list[str]:
    """For the pipeline's source and target: TLS off or not verified for a non-loopback host.
    From the configuration alone (no connection)."""
    pc = config.pipelines[name]
    out = []
    for side, c in (("source", config.sources[pc.source]), ("target", config.targets[pc.target])):
        dsn = c.dsn.get_secret_value()
        mysql = isinstance(c, MysqlSource | MysqlTarget)
        warning = mysql_tls_warning(dsn) if mysql else pg_tls_warning(dsn)
        if warning:
            out.append(f"{side}: {warning}")
    return out


def check_pipeline(
    config: Config, name: str, warn: Callable[[str], None] | None = None
) -> list[str]:
    """The pipeline's problems, one line each (any of them fails ``check``). Warnings (TLS
    off or unverified for a remote host) do not: each goes to ``warn``, by default logged as
    a ``check_warning`` event."""
    for w in tls_warnings(config, name):
        if warn is not None:
            warn(w)
        else:
            logs.get().warning("check_warning", pipeline=name, warning=w)
    out = _source_problems(config, name) + _signal_problems(config, name)
    out += _rule_problems(config, name)
    out += _target_problems(config, name) + _self_loop_problems(config, name)
    out += _table_problems(config, name) + _link_problems(config, name)
    return out + _checkpoint_problems(config, name)
