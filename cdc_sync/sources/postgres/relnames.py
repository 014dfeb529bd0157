"""Configured tables followed by relation oid: a table renamed while streaming is not skipped."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import psycopg

from cdc_sync.errors import PermanentError
from cdc_sync.records import TableId

Conn = psycopg.Connection[tuple[object, ...]]


def table_oids(conn: Conn, tables: Sequence[TableId]) -> dict[int, TableId]:
    """{relation oid: configured table} for the configured tables that exist now."""
    rows = conn.execute(
        "SELECT c.oid, x.s, x.t FROM unnest(%s::text[], %s::text[]) AS x(s, t) "
        "JOIN pg_namespace n ON n.nspname = x.s "
        "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = x.t",
        ([t.schema for t in tables], [t.name for t in tables]),
    ).fetchall()
    return {int(str(oid)): TableId(str(s), str(t)) for oid, s, t in rows}


def nullable_columns(conn: Conn, oid: int) -> frozenset[str]:
    """The relation's columns that allow NULL now."""
    rows = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 "
        "AND NOT attisdropped AND NOT attnotnull",
        (oid,),
    ).fetchall()
    return frozenset(str(r[0]) for r in rows)


def relation_name(conn: Conn, oid: int) -> TableId | None:
    """The relation's name now (None: dropped since)."""
    row = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s",
        (oid,),
    ).fetchone()
    return None if row is None else TableId(str(row[0]), str(row[1]))


class RelationNames:
    """Which configured table a Relation message is about, by oid.

    pgoutput names a relation as it was named at the change. Under another name (``ALTER
    TABLE … RENAME TO`` or ``SET SCHEMA``) a configured table's changes looked like an
    unconfigured table's and were skipped, checkpoint and all: renaming it back lost them.
    Now: renamed back since (its name now is the configured one) → its changes are the
    table's; still renamed → the daemon stops before any of them is skipped, naming both
    names, so that renaming it back and starting again replays them."""

    def __init__(
        self,
        oids: Mapping[int, TableId],
        name_now: Callable[[int], TableId | None],
        nullable_now: Callable[[int], frozenset[str]] | None = None,
    ) -> None:
        self._oids = dict(oids)
        self._name_now = name_now
        self._nullable_now = nullable_now
        self._followed: dict[int, TableId] = {}

    def nullable(self, relid: int) -> frozenset[str]:
        """Columns that allow NULL now. A Relation message carries no nullability, so a
        DROP NOT NULL at the source was invisible while streaming: the target kept its NOT
        NULL and every row with a NULL there became a dead letter."""
        return self._nullable_now(relid) if self._nullable_now is not None else frozenset()

    def configured(self, relid: int, named: TableId) -> TableId:
        """The table to decode ``relid``'s changes as (``named`` unless it is a configured
        table under another name)."""
        table = self._oids.get(relid)
        if table is None or table == named:
            return named
        if self._followed.get(relid) == named:
            return table
        now = self._name_now(relid)
        if now == table:
            self._followed[relid] = named
            return table
        where = f"is now {now}" if now is not None else "has been dropped since"
        raise PermanentError(
            f"configured table {table} was renamed to {named} while the pipeline streamed "
            f"(relation oid {relid}; it {where}): its changes under that name are not "
            f"replicated. Fix: rename it back (ALTER TABLE {named} RENAME TO …) and start "
            "again, which replays them; or, to follow the new name, configure it and run "
            "cdc-sync verify --repair"
        )
