"""Slot retention state, server identity and the heartbeat message (catalog connection)."""

from __future__ import annotations

import psycopg

from cdc_sync.sources.base import SourceHealth

Conn = psycopg.Connection[tuple[object, ...]]

HEARTBEAT_PREFIX = "cdc_sync_heartbeat"


def resnapshot_hint(pipeline_hint: str = "<pipeline>") -> str:
    """How to start over when the changes since the checkpoint are gone."""
    return (
        "the changes since the checkpoint are gone, and cdc-sync never recreates a slot or "
        "skips ahead silently; re-snapshot: `cdc-sync offsets reset -p "
        f"{pipeline_hint}`, then run with `snapshot: initial` (or `cdc-sync snapshot -p "
        f"{pipeline_hint}`), which creates the slot and copies the tables again"
    )


def emit_heartbeat(conn: Conn) -> None:
    """Write a tiny non-transactional logical message into the WAL.

    pgoutput does not deliver it (we do not ask for ``messages``), but the walsender reads
    past it, so its keepalive ``wal_end`` moves and the pipeline can acknowledge a position
    beyond the WAL that unpublished tables (or other databases) keep writing.
    """
    conn.execute("SELECT pg_logical_emit_message(false, %s, '')", (HEARTBEAT_PREFIX,))


def identity(conn: Conn) -> str:
    """``postgres:<system identifier>``: fixed at initdb, kept by physical replicas and base
    backups, different for a cluster built anew (dump/restore, a new initdb)."""
    row = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
    assert row is not None
    return f"postgres:{row[0]}"


def instance(conn: Conn) -> str:
    """This server and database (``postgres:<system identifier>/<database>``): the same
    text from a target connection means the pipeline would write into its own source."""
    row = conn.execute(INSTANCE_SQL).fetchone()
    assert row is not None
    return str(row[0])


# Also run on a PostgreSQL target (runtime.self_loop): one definition for both sides.
INSTANCE_SQL = (
    "SELECT 'postgres:' || system_identifier::text || '/' || current_database() "
    "FROM pg_control_system()"
)


def _int(v: object) -> int | None:
    return None if v is None else int(str(v))


def read_health(conn: Conn, slot: str) -> SourceHealth:
    limit_row = conn.execute(
        "SELECT setting::bigint FROM pg_settings WHERE name = 'max_slot_wal_keep_size'"
    ).fetchone()
    limit_mb = _int(limit_row[0]) if limit_row else None
    limit = None if limit_mb is None or limit_mb < 0 else limit_mb * 1024 * 1024
    row = conn.execute(
        "SELECT wal_status, (pg_current_wal_lsn() - restart_lsn)::bigint, safe_wal_size "
        "FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    ).fetchone()
    if row is None:
        return SourceHealth(
            "postgres", limit_bytes=limit,
            warnings=(f"replication slot {slot!r} does not exist; {resnapshot_hint()}",),
        )  # fmt: skip
    status = None if row[0] is None else str(row[0])
    warnings: list[str] = []
    if status == "lost":
        warnings.append(
            f"replication slot {slot!r} was invalidated (wal_status lost: it retained more "
            f"than max_slot_wal_keep_size); {resnapshot_hint()}"
        )
    elif status == "unreserved":
        warnings.append(
            f"replication slot {slot!r} retains more WAL than max_slot_wal_keep_size "
            "(wal_status unreserved): the next checkpoint invalidates it unless the pipeline "
            "catches up now"
        )
    return SourceHealth(
        "postgres",
        slot_wal_status=status,
        retained_bytes=_int(row[1]),
        limit_bytes=limit,
        safe_wal_size=_int(row[2]),
        warnings=tuple(warnings),
    )
