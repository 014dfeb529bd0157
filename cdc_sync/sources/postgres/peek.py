"""A slot's retained changes read without consuming them (replay), and moving a slot forward."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import psycopg
from psycopg import sql

from cdc_sync.errors import PermanentError
from cdc_sync.records import PgLsn, SourceEvent, TableId, TableSchema
from cdc_sync.sources.postgres.admin import SlotInfo, slot_info
from cdc_sync.sources.postgres.catalog import lookup_type
from cdc_sync.sources.postgres.decoder import PgOutputDecoder
from cdc_sync.sources.postgres.stream import classify
from cdc_sync.sources.postgres.types import PgType, TypeResolver
from cdc_sync.sources.postgres.values import SESSION_SETTINGS

Conn = psycopg.Connection[tuple[object, ...]]

_PEEK = (
    "SELECT (lsn - '0/0'::pg_lsn)::bigint, data "
    "FROM pg_logical_slot_peek_binary_changes(%s, %s::pg_lsn, NULL, "
    "'proto_version', '1', 'publication_names', %s)"
)


def connect(dsn: str) -> Conn:
    try:
        return psycopg.connect(
            dsn, autocommit=True, connect_timeout=10, application_name="cdc-sync"
        )
    except psycopg.Error as e:
        raise classify(e, "cannot connect to the source database") from e


def slot(conn: Conn, name: str) -> SlotInfo:
    """The slot's state; a missing slot is a PermanentError (nothing to reset or replay)."""
    try:
        info = slot_info(conn, name)
    except psycopg.Error as e:
        raise classify(e, "cannot read the replication slot") from e
    if info is None:
        raise PermanentError(f"replication slot {name!r} does not exist (run the pipeline once)")
    return info


def confirmed(info: SlotInfo, name: str) -> PgLsn:
    if info.confirmed_flush is None:
        raise PermanentError(f"replication slot {name!r} is not a logical slot")
    return PgLsn.from_body(info.confirmed_flush)


def advance(conn: Conn, name: str, to: PgLsn) -> PgLsn:
    """Move the slot's confirmed point forward so the server may recycle the WAL before it."""
    try:
        row = conn.execute(
            "SELECT end_lsn::text FROM pg_replication_slot_advance(%s, %s::pg_lsn)",
            (name, to.body()),
        ).fetchone()
    except psycopg.Error as e:
        raise classify(e, f"cannot advance replication slot {name!r}") from e
    assert row is not None
    return PgLsn.from_body(str(row[0]))


def peek(
    dsn: str,
    slot_name: str,
    publication: str,
    schemas: Mapping[TableId, TableSchema],
    *,
    after: PgLsn,
    upto: PgLsn | None,
) -> Iterator[SourceEvent]:
    """Events of the transactions the slot still retains that end after ``after``, read with
    the same pgoutput options and decoder as the stream; the slot does not move.

    ``upto``: the server stops decoding at the first transaction committing at or past it
    (that one is included; the caller drops what ends after ``upto``). A server-side cursor
    keeps memory flat however much the slot retains."""
    conn = connect(dsn)
    # Type lookups need a second connection: the peek connection is busy with its cursor.
    lookups: list[Conn] = []

    def lookup(oid: int) -> PgType | None:
        if not lookups:
            lookups.append(connect(dsn))
        return lookup_type(lookups[0], oid)

    try:
        conn.autocommit = False
        for name, value in SESSION_SETTINGS.items():
            # Values are converted from text exactly as on the replication connection.
            conn.execute(sql.SQL("SELECT set_config({}, {}, false)").format(name, value))
        resolver = TypeResolver(lookup)
        decoder = PgOutputDecoder(resolver, list(schemas), schemas, after.value)
        pub = '"' + publication.replace('"', '""') + '"'
        limit = upto.body() if upto is not None else None
        with conn.cursor(name="cdc_sync_replay_peek") as cur:
            cur.itersize = 2000
            cur.execute(_PEEK, (slot_name, limit, pub))
            for lsn, data in cur:
                assert isinstance(lsn, int) and isinstance(data, bytes)
                yield from decoder.decode(data, lsn)
        conn.rollback()
    except psycopg.Error as e:
        raise classify(e, f"cannot read the changes retained by slot {slot_name!r}") from e
    finally:
        conn.close()
        for c in lookups:
            c.close()
