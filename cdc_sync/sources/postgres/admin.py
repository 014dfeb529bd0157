"""Publication and replication slot management, and prerequisite checks with exact fixes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from cdc_sync.errors import PrerequisiteError
from cdc_sync.records import TableId
from cdc_sync.sources.postgres import pubopts
from cdc_sync.sources.postgres.catalog import qualified, quote_ident

Conn = psycopg.Connection[tuple[object, ...]]


@dataclass(frozen=True, slots=True)
class SlotInfo:
    plugin: str | None
    database: str | None
    active_pid: int | None
    confirmed_flush: str | None
    wal_status: str | None = None  # 'lost': invalidated, its WAL is gone


def slot_info(conn: Conn, slot: str) -> SlotInfo | None:
    row = conn.execute(
        "SELECT plugin, database, active_pid, confirmed_flush_lsn::text, wal_status "
        "FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    ).fetchone()
    if row is None:
        return None
    plugin, db, pid, flush, status = row
    return SlotInfo(
        None if plugin is None else str(plugin),
        None if db is None else str(db),
        None if pid is None else int(str(pid)),
        None if flush is None else str(flush),
        None if status is None else str(status),
    )


def published_tables(conn: Conn, publication: str) -> set[TableId] | None:
    """Tables in the publication, or None when it does not exist."""
    if conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,)).fetchone() \
            is None:  # fmt: skip
        return None
    rows = conn.execute(
        "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s",
        (publication,),
    ).fetchall()
    return {TableId(str(s), str(t)) for s, t in rows}


def _via_root_missing(conn: Conn, publication: str, tables: Sequence[TableId]) -> bool:
    """A configured table is partitioned but the (existing) publication would send its
    changes under each partition's name, which no pipeline entry names: they would be
    dropped. With publish_via_partition_root they arrive as the configured table's, and
    pg_publication_tables lists the partitioned table instead of its partitions."""
    row = conn.execute(
        "SELECT NOT p.pubviaroot AND EXISTS (SELECT 1 FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN unnest(%s::text[], %s::text[]) AS x(s, t) ON n.nspname = x.s AND c.relname = x.t "
        "WHERE c.relkind = 'p') FROM pg_publication p WHERE p.pubname = %s",
        ([t.schema for t in tables], [t.name for t in tables], publication),
    ).fetchone()
    return row is not None and bool(row[0])


def _table_list(tables: Sequence[TableId]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(t.schema, t.name) for t in tables)


_VIA_ROOT = "publish_via_partition_root = true"


def _fix_publication_sql(
    publication: str, tables: Sequence[TableId], exists: bool, via_root: bool
) -> str:
    pub, names = quote_ident(publication), ", ".join(qualified(t) for t in tables)
    if not exists:
        return f"CREATE PUBLICATION {pub} FOR TABLE {names} WITH ({_VIA_ROOT});"
    fix = f"ALTER PUBLICATION {pub} SET TABLE {names};"
    return f"ALTER PUBLICATION {pub} SET ({_VIA_ROOT}); {fix}" if via_root else fix


def _fix_slot_sql(slot: str) -> str:
    return f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput');"


def ensure_publication(conn: Conn, publication: str, tables: Sequence[TableId]) -> set[TableId]:
    """Create or align the publication to exactly ``tables``; returns the tables added to a
    publication that existed: their changes before now were never sent (a table newly
    configured, or dropped and created again, which took it out of the publication).

    Made with publish_via_partition_root, so that a partitioned table's changes arrive
    under its own name (one pipeline entry for all its partitions, present and future).
    An existing one is also made to publish every operation and to drop any row filter or
    column list on the tables: pgoutput would withhold those changes without a word."""
    if _via_root_missing(conn, publication, tables):
        # First: with it off, pg_publication_tables lists partitions, not the table.
        conn.execute(sql.SQL("ALTER PUBLICATION {} SET (" + _VIA_ROOT + ")").format(
            sql.Identifier(publication)))  # fmt: skip
    current = published_tables(conn, publication)
    if current is None:
        # Publishes every operation (the default) and no row filter or column list.
        conn.execute(
            sql.SQL("CREATE PUBLICATION {} FOR TABLE {} WITH (" + _VIA_ROOT + ")").format(
                sql.Identifier(publication), _table_list(tables)
            )
        )
        return set()
    if pubopts.unpublished_operations(conn, publication):
        pubopts.publish_all(conn, publication)
    if current != set(tables) or pubopts.filtered_tables(conn, publication, tables):
        # SET TABLE replaces the list, and with it any row filter or column list on a table.
        conn.execute(
            sql.SQL("ALTER PUBLICATION {} SET TABLE {}").format(
                sql.Identifier(publication), _table_list(tables)
            )
        )
    return set(tables) - current


def unpublished(conn: Conn, publication: str, tables: Sequence[TableId]) -> list[TableId]:
    """Configured tables the publication no longer holds: dropped (and maybe created again:
    a new table is not in any publication) or renamed since the pipeline started."""
    current = published_tables(conn, publication) or set()
    return sorted((t for t in tables if t not in current), key=str)


def ensure_slot(conn: Conn, slot: str) -> bool:
    """Create the logical slot (plugin pgoutput) when missing; True when created.

    Call this after ``ensure_publication``: pgoutput reads the publication through the
    catalog as of each decoded change, so a publication younger than the slot's start
    would be reported as missing for earlier changes.
    """
    info = slot_info(conn, slot)
    if info is not None:
        _check_slot(conn, slot, info)
        return False
    conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    return True


def _check_slot(conn: Conn, slot: str, info: SlotInfo) -> None:
    problem = slot_problem(conn, slot, info)
    if problem:
        raise PrerequisiteError(*problem)


def slot_problem(conn: Conn, slot: str, info: SlotInfo) -> tuple[str, str] | None:
    """(message, fix) when an existing slot cannot be used by this pipeline."""
    drop = f"SELECT pg_drop_replication_slot('{slot}');  -- or configure another slot name"
    if info.plugin != "pgoutput":
        return (f"replication slot {slot!r} exists with plugin {info.plugin!r}, not pgoutput",
                drop)  # fmt: skip
    db = str(conn.execute("SELECT current_database()").fetchone()[0])  # type: ignore[index]
    if info.database != db:
        return (f"replication slot {slot!r} belongs to database {info.database!r}, not {db!r}",
                drop)  # fmt: skip
    return None


def problems(
    conn: Conn, slot: str, publication: str, tables: Sequence[TableId], may_create: bool
) -> list[str]:
    """Server-side prerequisites not met, one line each with the SQL that fixes it."""
    out: list[str] = []
    settings = {
        str(name): str(value)
        for name, value in conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('wal_level', 'max_replication_slots', 'max_wal_senders')"
        ).fetchall()
    }
    if settings.get("wal_level") != "logical":
        out.append(
            f"wal_level is {settings.get('wal_level')!r}, logical decoding needs 'logical'; "
            "fix: ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL"
        )
    row = conn.execute(
        "SELECT current_user, rolreplication OR rolsuper, rolsuper FROM pg_roles "
        "WHERE rolname = current_user"
    ).fetchone()
    assert row is not None
    user, can_replicate, superuser = str(row[0]), bool(row[1]), bool(row[2])
    if not can_replicate:
        out.append(
            f"role {user!r} lacks the REPLICATION privilege; "
            f"fix: ALTER ROLE {quote_ident(user)} WITH REPLICATION;"
        )
    out += _publication_problems(conn, publication, tables, may_create, superuser)
    info = slot_info(conn, slot)
    if info is None:
        used = conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone()
        limit = int(settings.get("max_replication_slots", "0"))
        if used is not None and int(str(used[0])) >= limit:
            out.append(
                f"all {limit} replication slots are in use (max_replication_slots); "
                f"fix: ALTER SYSTEM SET max_replication_slots = {limit + 10}; then restart "
                "PostgreSQL, or drop an unused slot with SELECT pg_drop_replication_slot('…');"
            )
        elif not may_create:
            out.append(f"replication slot {slot!r} does not exist and creating it is not "
                       f"allowed; fix: {_fix_slot_sql(slot)}")  # fmt: skip
    else:
        problem = slot_problem(conn, slot, info)
        if problem:
            out.append(f"{problem[0]}; fix: {problem[1]}")
    return out


def _publication_problems(
    conn: Conn, publication: str, tables: Sequence[TableId], may_create: bool, superuser: bool
) -> list[str]:
    found = _misalignments(conn, publication, tables)
    if not found:
        return []
    if not may_create:
        return [f"publication {publication!r} {what} and changing it is not allowed; "
                f"fix: {fix}" for what, fix in found]  # fmt: skip
    if superuser:
        return []
    # Creating / altering a publication FOR TABLE needs ownership of every table, and
    # altering one ownership of the publication itself.
    rows = conn.execute(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN unnest(%s::text[], %s::text[]) AS x(s, t) ON n.nspname = x.s AND c.relname = x.t "
        "WHERE c.relkind IN ('r', 'p') AND NOT pg_has_role(c.relowner, 'USAGE') "
        "UNION ALL SELECT 'publication ' || pubname FROM pg_publication "
        "WHERE pubname = %s AND NOT pg_has_role(pubowner, 'USAGE') ORDER BY 1",
        ([t.schema for t in tables], [t.name for t in tables], publication),
    ).fetchall()
    not_owned = [str(r[0]) for r in rows]
    if not_owned:
        fix = " ".join(dict.fromkeys(f for _, f in found))  # one SET TABLE may fix several
        return [f"publication {publication!r} must be created or changed by the owner of "
                f"every table (not owned: {', '.join(not_owned)}); "
                f"fix (as a superuser or owner): {fix}"]  # fmt: skip
    return []


def _misalignments(
    conn: Conn, publication: str, tables: Sequence[TableId]
) -> list[tuple[str, str]]:
    """What keeps the publication from sending every change of exactly ``tables``, one
    (what is wrong, the SQL that fixes it) per problem; ``ensure_publication`` fixes each."""
    current = published_tables(conn, publication)
    if current is None:
        return [("does not exist", _fix_publication_sql(publication, tables, False, False))]
    out: list[tuple[str, str]] = []
    via_root = _via_root_missing(conn, publication, tables)
    if current != set(tables) or via_root:
        state = ("sends partitioned tables' changes under their partitions' names" if via_root
                 else "publishes other tables")  # fmt: skip
        out.append((state, _fix_publication_sql(publication, tables, True, via_root)))
    ops = pubopts.unpublished_operations(conn, publication)
    if ops:
        out.append((f"does not publish {', '.join(ops)}", pubopts.publish_all_sql(publication)))
    set_table = _fix_publication_sql(publication, tables, True, False)
    # Named, never shown: a row filter's text may hold personal data.
    out += [(f"has a {kind} on {table}", set_table)
            for table, kind in pubopts.filtered_tables(conn, publication, tables)]  # fmt: skip
    return out


# -- the signal table (DBLog watermarks) and slots with an exported snapshot ----------------


def table_exists(conn: Conn, table: TableId) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (table.schema, table.name),
    ).fetchone()
    return row is not None


_SIGNAL_COLUMNS = (
    "(pipeline varchar(100) PRIMARY KEY, value varchar(200) NOT NULL, "
    "updated_at timestamptz NOT NULL DEFAULT now())"
)


def signal_table_sql(table: TableId) -> str:
    """The DDL of a signal table: one watermark row per pipeline, updated in place."""
    return f"CREATE TABLE IF NOT EXISTS {qualified(table)} {_SIGNAL_COLUMNS};"


def signal_problem(conn: Conn, table: TableId, may_create: bool) -> list[str]:
    if may_create or table_exists(conn, table):
        return []
    return [f"signal table {table} does not exist and creating it is not allowed; "
            f"fix: {signal_table_sql(table)}"]  # fmt: skip


def create_signal_table(conn: Conn, table: TableId) -> None:
    conn.execute(
        sql.SQL("CREATE TABLE IF NOT EXISTS {} " + _SIGNAL_COLUMNS).format(
            sql.Identifier(table.schema, table.name)
        )
    )


def write_signal(conn: Conn, table: TableId, pipeline: str, value: str) -> None:
    """Upsert the pipeline's watermark; ``conn`` is in autocommit, so it commits at once."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (pipeline, value) VALUES (%s, %s) ON CONFLICT (pipeline) "
            "DO UPDATE SET value = EXCLUDED.value, updated_at = now()"
        ).format(sql.Identifier(table.schema, table.name)),
        (pipeline, value),
    )


def recreate_slot_exported(repl: Conn, slot: str, drop: bool) -> tuple[str, str]:
    """On a replication connection: drop the slot (when ``drop``), create it again with an
    exported snapshot; (consistent_point, snapshot_name).

    The snapshot stays importable only while ``repl`` runs no other command and stays open.
    Slot names are checked by the caller (a-z, 0-9, _): the walsender takes no parameters.
    """
    if drop:
        repl.execute(f'DROP_REPLICATION_SLOT "{slot}"')  # no WAIT: fails (55006) when in use
    row = repl.execute(
        f"CREATE_REPLICATION_SLOT \"{slot}\" LOGICAL pgoutput (SNAPSHOT 'export')"
    ).fetchone()
    assert row is not None
    return str(row[1]), str(row[2])
