"""What an existing publication withholds: unpublished operations, row filters, column lists."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg import sql

from cdc_sync import logs
from cdc_sync.records import TableId
from cdc_sync.sources.postgres.catalog import quote_ident

Conn = psycopg.Connection[tuple[object, ...]]

OPERATIONS = ("insert", "update", "delete", "truncate")
# Truncates too: the pipeline's per-table apply_truncate decides what becomes of them.
_PUBLISH_ALL = f"publish = '{', '.join(OPERATIONS)}'"


def unpublished_operations(conn: Conn, publication: str) -> list[str]:
    """The operations the (existing) publication does not send: pgoutput drops those changes
    without a word, e.g. every DELETE of a publication made WITH (publish = 'insert, update')."""
    row = conn.execute(
        "SELECT pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication "
        "WHERE pubname = %s",
        (publication,),
    ).fetchone()
    if row is None:
        return []
    return [op for op, on in zip(OPERATIONS, row, strict=True) if not on]


def publish_all_sql(publication: str) -> str:
    return f"ALTER PUBLICATION {quote_ident(publication)} SET ({_PUBLISH_ALL});"


def publish_all(conn: Conn, publication: str) -> None:
    conn.execute(
        sql.SQL("ALTER PUBLICATION {} SET (" + _PUBLISH_ALL + ")").format(
            sql.Identifier(publication)
        )
    )


def filtered_tables(
    conn: Conn, publication: str, tables: Sequence[TableId]
) -> list[tuple[TableId, str]]:
    """Configured tables the publication lists with a row filter and / or a column list
    (PostgreSQL 15): (table, what it has). A row filter withholds rows (and turns an update
    that leaves it into a delete), a column list withholds columns.

    Only whether one exists is read, never its text: a filter's values may be personal data.
    prqual / prattrs are read through jsonb so that 13 and 14, which lack them, parse this."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname, (to_jsonb(pr) ->> 'prqual') IS NOT NULL, "
        "(to_jsonb(pr) ->> 'prattrs') IS NOT NULL "
        "FROM pg_publication p JOIN pg_publication_rel pr ON pr.prpubid = p.oid "
        "JOIN pg_class c ON c.oid = pr.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN unnest(%s::text[], %s::text[]) AS x(s, t) ON n.nspname = x.s AND c.relname = x.t "
        "WHERE p.pubname = %s ORDER BY 1, 2",
        ([t.schema for t in tables], [t.name for t in tables], publication),
    ).fetchall()
    out: list[tuple[TableId, str]] = []
    for schema, name, has_filter, has_columns in rows:
        kinds = [k for k, on in (("row filter", has_filter), ("column list", has_columns)) if on]
        if kinds:
            out.append((TableId(str(schema), str(name)), " and a ".join(kinds)))
    return out


def withheld(conn: Conn, publication: str, tables: Sequence[TableId]) -> tuple[str, str] | None:
    """(what the publication withholds of the configured tables, the SQL that ends it), or
    None. pgoutput judges each change by the publication as it was at that change, so what
    it withheld cannot be read again from the slot, even after the fix."""
    ops = unpublished_operations(conn, publication)
    filtered = filtered_tables(conn, publication, tables)
    if not ops and not filtered:
        return None
    what = [f"does not publish {', '.join(ops)}"] if ops else []
    what += [f"has a {kind} on {table}" for table, kind in filtered]
    fixes = [publish_all_sql(publication)] if ops else []
    if filtered:
        names = ", ".join(str(t) for t in tables)
        fixes.append(f"ALTER PUBLICATION {quote_ident(publication)} SET TABLE {names};")
    return "; ".join(what), " ".join(fixes)


def realigned(publication: str, what: str) -> None:
    """Logged at WARNING when a start made a publication that withheld changes send them
    all again: those withheld before (since the DBA's change) never reach the target."""
    logs.get("cdc_sync.sources").warning(
        "publication_realigned",
        publication=publication,
        withheld=what,
        why="it now publishes every change of the configured tables; the changes it withheld "
        "before this start (deletes, truncates, filtered rows or columns) never reach the target",
        fix="cdc-sync verify -c <config> -p <pipeline> --repair",
    )
