"""``offsets reset --to``: turn latest / earliest / a position / a timestamp into a Position."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import psycopg
import pymysql
from pymysqlreplication.gtid import GtidSet

from cdc_sync.config.dsn import parse_mysql_dsn
from cdc_sync.config.models import Config, MysqlSource, PostgresSource
from cdc_sync.errors import ConfigError, PermanentError
from cdc_sync.records import BinlogPosition, Heartbeat, PgLsn, Position, TxBegin, TxCommit
from cdc_sync.runtime.wiring import accepted_cascades, table_map
from cdc_sync.sources.mysql import admin as my_admin
from cdc_sync.sources.mysql import oldest
from cdc_sync.sources.mysql.catalog import ServerInfo
from cdc_sync.sources.mysql.errors import classify as my_classify
from cdc_sync.sources.mysql.gtids import MariaGtidState
from cdc_sync.sources.mysql.source import MysqlCapture
from cdc_sync.sources.postgres import peek
from cdc_sync.sources.postgres.stream import classify as pg_classify

_P = TypeVar("_P", PgLsn, BinlogPosition)
_MARIA_GTID = re.compile(r"^\d+-\d+-\d+(,\d+-\d+-\d+)*$")
_MYSQL_GTID = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F-]{27}:[\d:-]+(,\s*[0-9a-fA-F-]{36}:[\d:-]+)*$"
)


@dataclass(frozen=True, slots=True)
class Resolved:
    """Where ``--to`` points, and for PostgreSQL the slot's confirmed point (the earliest
    position still available; moving past it means advancing the slot)."""

    position: Position
    slot_confirmed: PgLsn | None = None


def parse_time(text: str) -> datetime | None:
    """An ISO 8601 timestamp (UTC when it has no zone), or None when ``text`` is not one."""
    if not re.match(r"^\d{4}-\d{2}-\d{2}([T ]|$)", text):
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def resolve(config: Config, pipeline: str, to: str) -> Resolved:
    sc = config.sources[config.pipelines[pipeline].source]
    if isinstance(sc, PostgresSource):
        return _postgres(config, pipeline, sc, to.strip())
    assert isinstance(sc, MysqlSource)
    return _mysql(config, pipeline, sc, to.strip())


# -- PostgreSQL ----------------------------------------------------------------------------


def _postgres(config: Config, pipeline: str, sc: PostgresSource, to: str) -> Resolved:
    slot = config.slot_for(pipeline)
    conn = peek.connect(sc.dsn.get_secret_value())
    try:
        info = peek.slot(conn, slot)
        confirmed = peek.confirmed(info, slot)
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        head = PgLsn.from_body(str(row[0]))
    except psycopg.Error as e:
        raise pg_classify(e, "cannot read the source's WAL position") from e
    finally:
        conn.close()
    if info.active_pid is not None:
        raise PermanentError(
            f"replication slot {slot!r} is in use (pid {info.active_pid}); stop the daemon first"
        )
    if to == "latest":
        target: PgLsn = head
    elif to == "earliest":
        target = confirmed
    elif parse_time(to) is not None:
        raise PermanentError(
            "a PostgreSQL source cannot be reset to a time: WAL has no timestamp index, and a "
            "slot cannot go back before its confirmed point anyway; give an LSN, latest or "
            "earliest"
        )
    else:
        target = _as(to, PgLsn, "an LSN such as 0/16B3748, latest or earliest")
    if target < confirmed:
        raise PermanentError(
            f"{target} is before the confirmed point {confirmed} of replication slot {slot!r}: a "
            "logical slot cannot go backwards, the changes before it are no longer available "
            f"(earliest possible: {confirmed.body()}; to start over, re-snapshot)"
        )
    if target > head:
        raise PermanentError(f"{target} is past the source's current WAL position {head}")
    return Resolved(target, confirmed)


def _as(text: str, kind: type[_P], expected: str) -> _P:
    try:
        pos = Position.parse(text) if text.startswith(f"{kind.kind}:") else kind.from_body(text)
    except ValueError:  # not a position at all: an invalid argument (exit 2)
        raise ConfigError([f"--to {text!r}: expected {expected}"]) from None
    if not isinstance(pos, kind):
        raise ConfigError([f"--to {text!r}: expected {expected}"])
    return pos


# -- MySQL / MariaDB -----------------------------------------------------------------------


def _mysql(config: Config, pipeline: str, sc: MysqlSource, to: str) -> Resolved:
    dsn = parse_mysql_dsn(sc.dsn.get_secret_value())
    conn, info = oldest.connect(dsn)
    try:
        gtid = oldest.by_gtid(info, sc.position_mode)
        head = my_admin.head(conn, info, gtid)
        if to == "latest":
            return Resolved(head)
        earliest = oldest.earliest(conn, info, gtid)
        if to == "earliest":
            return Resolved(earliest)
        when = parse_time(to)
        if when is not None or _MARIA_GTID.match(to) or _MYSQL_GTID.match(to):
            # Found by reading the binlog from its oldest file: costs one pass over it.
            return Resolved(_scan(config, pipeline, info, earliest, head, when, to))
        pos = _as(to, BinlogPosition, "file:pos, a GTID set, a time, latest or earliest")
        if gtid and info.mariadb and not pos.gtid:
            pos = BinlogPosition(pos.file, pos.pos, my_admin.gtid_at(conn, pos.file, pos.pos))
        problems = my_admin.checkpoint_problems(conn, info, pos, gtid and bool(pos.gtid))
        if not problems:
            inside = my_admin.boundary_problem(conn, pos)
            if inside is not None:
                raise PermanentError(f"--to {inside}")
    except pymysql.err.MySQLError as e:
        raise my_classify(e, "cannot read the source's binlogs") from e
    finally:
        conn.close()
    if problems:
        raise PermanentError(f"{pos} is no longer available: {'; '.join(problems)}")
    if pos > head:
        raise PermanentError(f"{pos} is past the source's current binlog position {head}")
    return Resolved(pos)


def capture(config: Config, pipeline: str) -> MysqlCapture:
    """The pipeline's binlog capture as a second replica: server_id + 1, since two replicas
    with one server_id disconnect each other (the daemon may be streaming meanwhile)."""
    pc = config.pipelines[pipeline]
    sc = config.sources[pc.source]
    assert isinstance(sc, MysqlSource)
    return MysqlCapture(
        dsn=parse_mysql_dsn(sc.dsn.get_secret_value()),
        server_id=sc.server_id % (2**32 - 1) + 1,
        tables=list(table_map(config, pipeline)),
        position_mode=sc.position_mode,
        heartbeat_seconds=sc.heartbeat_seconds,
        cascades_accepted=accepted_cascades(config, pipeline),
    )


def _reached(state: str, target: str, mariadb: bool) -> bool:
    if mariadb:
        return not MariaGtidState(state).missing_from(MariaGtidState(target))
    have = GtidSet(state or None)
    return all(any(g in mine for mine in have.gtids) for g in GtidSet(target).gtids)


def _scan(  # noqa: PLR0917  (one pass, two questions)
    config: Config,
    pipeline: str,
    info: ServerInfo,
    start: BinlogPosition,
    head: BinlogPosition,
    when: datetime | None,
    gtid: str,
) -> BinlogPosition:
    """The transaction boundary before the first transaction of ours at or after ``when``,
    or the first boundary whose GTID state contains ``gtid``; the head when none is found.
    Reads through the normal capture with the configured server_id + 1 (two replicas with
    one server_id disconnect each other)."""
    if when is None and start.gtid and _reached(start.gtid, gtid, info.mariadb):
        if start.gtid == gtid:
            return start
        raise PermanentError(
            f"GTID set {gtid} is older than the oldest binlog (which starts after "
            f"{start.gtid}): the changes after it are no longer available"
        )
    source = capture(config, pipeline)
    last = start
    try:
        for ev in source.stream(start):
            if isinstance(ev, TxBegin) and when is not None and ev.commit_time >= when:
                return last
            if isinstance(ev, TxCommit | Heartbeat):
                pos = ev.end_position if isinstance(ev, TxCommit) else ev.position
                assert isinstance(pos, BinlogPosition)
                if when is None and pos.gtid and _reached(pos.gtid, gtid, info.mariadb):
                    return pos
                last = pos
                if pos >= head:
                    break
    finally:
        source.close()
    if when is None:
        raise PermanentError(f"GTID set {gtid} was not found in the source's binlogs")
    return head
