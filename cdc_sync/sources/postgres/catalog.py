"""Read configured tables' schemas (columns, key, types) from pg_catalog on a normal connection."""

from __future__ import annotations

import re
from collections.abc import Sequence

import psycopg

from cdc_sync import logs
from cdc_sync.errors import CdcSyncError, NoKeyError, PermanentError, UnsupportedTypeError
from cdc_sync.records import Column, TableId, TableSchema
from cdc_sync.sources.postgres.types import PgType, TypeResolver

_PLAIN = re.compile(r"[a-z_][a-z0-9_$]*")


def quote_ident(name: str) -> str:
    """Quote an identifier for SQL shown to a DBA (only when needed, so it stays readable)."""
    return name if _PLAIN.fullmatch(name) else '"' + name.replace('"', '""') + '"'


def qualified(table: TableId) -> str:
    return f"{quote_ident(table.schema)}.{quote_ident(table.name)}"


_TYPE_SQL = """
SELECT t.oid, n.nspname, t.typname, t.typtype,
       CASE WHEN t.typcategory = 'A' THEN t.typelem ELSE 0 END,
       t.typbasetype, t.typtypmod,
       CASE WHEN t.typtype = 'e' THEN
         ARRAY(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid
               ORDER BY e.enumsortorder)
       END,
       t.typdelim::text,
       (SELECT x.extname FROM pg_depend d JOIN pg_extension x ON x.oid = d.refobjid
        WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid
          AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' LIMIT 1),
       CASE WHEN t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'
         THEN 'CREATE TYPE ' || quote_ident(n.nspname) || '.' || quote_ident(t.typname)
           || ' AS (' || (SELECT string_agg(quote_ident(a.attname) || ' '
                            || format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attnum)
                          FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0
                            AND NOT a.attisdropped) || ');'
       WHEN t.typtype IN ('r', 'm') THEN
         (SELECT 'CREATE TYPE ' || quote_ident(rn.nspname) || '.' || quote_ident(rt.typname)
            || ' AS RANGE (SUBTYPE = ' || format_type(r.rngsubtype, NULL) || ');'
          FROM pg_range r JOIN pg_type rt ON rt.oid = r.rngtypid
          JOIN pg_namespace rn ON rn.oid = rt.typnamespace
          -- rngmultitypid is PostgreSQL 14+: read through jsonb so 13 parses this too
          WHERE t.oid IN (r.rngtypid, (to_jsonb(r) ->> 'rngmultitypid')::oid))
       END
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE t.oid = %s
"""


def lookup_type(conn: psycopg.Connection[tuple[object, ...]], oid: int) -> PgType | None:
    row = conn.execute(_TYPE_SQL, (oid,)).fetchone()
    if row is None:
        return None
    _, nsp, name, typtype, elem, base, base_typmod, labels, delim, ext, create = row
    return PgType(
        oid, str(nsp), str(name), str(typtype), int(str(elem)), int(str(base)),
        int(str(base_typmod)), tuple(str(x) for x in labels) if isinstance(labels, list) else (),
        None if ext is None else str(ext), None if create is None else str(create), str(delim),
    )  # fmt: skip


_REL_SQL = """
SELECT c.oid, c.relkind, c.relreplident, c.relpersistence
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s
"""

# pgoutput sends neither dropped nor generated columns, so neither does the schema
_COLS_SQL = """
SELECT a.attname, a.atttypid, a.atttypmod, a.attnotnull, a.attndims
FROM pg_attribute a
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
ORDER BY a.attnum
"""

# Key columns of the primary key (indisprimary) or replica identity index (indisreplident),
# in index order, with whether the index is checked immediately (not DEFERRABLE)
_KEY_SQL = """
SELECT a.attname, i.indimmediate, ic.relname
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = %s AND i.{flag}
ORDER BY k.ord
"""

# Unique, non-partial, plain-column indexes over NOT NULL columns: usable as replica identity
_CANDIDATE_SQL = """
SELECT ic.relname
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
WHERE i.indrelid = %s AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
  AND i.indimmediate
  AND NOT EXISTS (SELECT 1 FROM unnest(i.indkey) k(attnum)
                  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                  WHERE NOT a.attnotnull)
ORDER BY ic.relname
LIMIT 1
"""

_RELKIND_WORDS = {"v": "a view", "m": "a materialized view", "f": "a foreign table",
                  "S": "a sequence", "i": "an index"}  # fmt: skip
# A partitioned table ('p') is read as one table: the publication sends its partitions'
# changes under its own name (publish_via_partition_root, see admin.ensure_publication).
_TABLE_KINDS = ("r", "p")


def _no_key(conn: psycopg.Connection[tuple[object, ...]], table: TableId, oid: int,
            replident: str) -> NoKeyError:  # fmt: skip
    q = qualified(table)
    if replident == "n":
        return NoKeyError(
            f"table {table} has REPLICA IDENTITY NOTHING: updates and deletes cannot be "
            f"replicated; fix: ALTER TABLE {q} REPLICA IDENTITY DEFAULT; (needs a primary key)"
        )
    cand = conn.execute(_CANDIDATE_SQL, (oid,)).fetchone()
    idx = quote_ident(str(cand[0])) if cand else "<unique_index_on_not_null_columns>"
    what = "REPLICA IDENTITY FULL but no primary key" if replident == "f" else "no primary key"
    return NoKeyError(
        f"table {table} has {what} and no replica identity index, so rows cannot be "
        f"identified; fix: ALTER TABLE {q} ADD PRIMARY KEY (<key columns>); "
        f"or: ALTER TABLE {q} REPLICA IDENTITY USING INDEX {idx};"
    )


def _deferrable_key(
    conn: psycopg.Connection[tuple[object, ...]], table: TableId, oid: int, pkey: str
) -> NoKeyError:
    # PostgreSQL never uses a deferrable index as replica identity: with REPLICA IDENTITY
    # DEFAULT the table has none, and once it is in a publication every UPDATE / DELETE on
    # it fails at the source. Refused before the publication is touched.
    q = qualified(table)
    cand = conn.execute(_CANDIDATE_SQL, (oid,)).fetchone()
    idx = quote_ident(str(cand[0])) if cand else "<non_deferrable_unique_index_on_not_null_columns>"
    return NoKeyError(
        f"table {table} has a DEFERRABLE primary key ({quote_ident(pkey)}), which PostgreSQL "
        "cannot use as replica identity: with REPLICA IDENTITY DEFAULT, updates and deletes "
        "on the table would fail at the source once it is published; fix: "
        f"ALTER TABLE {q} REPLICA IDENTITY FULL; or: "
        f"ALTER TABLE {q} REPLICA IDENTITY USING INDEX {idx};"
    )


class UnsupportedColumns(PermanentError):
    """Several columns of one table have types that cannot be replicated."""

    def __init__(self, errors: Sequence[UnsupportedTypeError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = list(errors)


def read_schema(
    conn: psycopg.Connection[tuple[object, ...]], table: TableId, resolver: TypeResolver
) -> TableSchema:
    """The table's schema; raises PermanentError / NoKeyError / UnsupportedTypeError."""
    rel = conn.execute(_REL_SQL, (table.schema, table.name)).fetchone()
    if rel is None:
        raise PermanentError(f"configured table {table} does not exist in the source database")
    oid, relkind, replident = int(str(rel[0])), str(rel[1]), str(rel[2])
    if relkind not in _TABLE_KINDS:
        raise PermanentError(
            f"configured table {table} is {_RELKIND_WORDS.get(relkind, 'not a table')}; "
            "only ordinary and partitioned tables can be replicated"
        )
    if str(rel[3]) != "p":
        # Logical decoding never sees an unlogged or temporary table's changes, and no
        # publication may hold one: say why instead of PostgreSQL's bare "cannot add".
        unlogged = str(rel[3]) == "u"
        raise PermanentError(
            f"configured table {table} is {'unlogged' if unlogged else 'a temporary table'}: "
            "its changes are not written to the WAL, so logical replication cannot capture "
            "them" + (f"; fix: ALTER TABLE {qualified(table)} SET LOGGED;" if unlogged else "")
        )
    columns, unsupported = [], []
    for name, typoid, typmod, notnull, ndims in conn.execute(_COLS_SQL, (oid,)).fetchall():
        try:
            ctype, _ = resolver.resolve(
                int(str(typoid)), int(str(typmod)), str(table), str(name), int(str(ndims))
            )
        except UnsupportedTypeError as e:  # every such column at once, not one per run
            unsupported.append(e)
            continue
        columns.append(Column(str(name), ctype, nullable=not notnull))
    if len(unsupported) == 1:
        raise unsupported[0]
    if unsupported:
        raise UnsupportedColumns(unsupported)
    flag = "indisreplident" if replident == "i" else "indisprimary"
    rows = conn.execute(_KEY_SQL.format(flag=flag), (oid,)).fetchall()
    key = tuple(str(r[0]) for r in rows)
    if replident == "n" or not key:
        raise _no_key(conn, table, oid, replident)
    if replident == "d" and rows[0][1] is False:
        raise _deferrable_key(conn, table, oid, str(rows[0][2]))
    return TableSchema(table, tuple(columns), key)


def read_schemas(
    conn: psycopg.Connection[tuple[object, ...]],
    tables: Sequence[TableId],
    resolver: TypeResolver,
) -> tuple[dict[TableId, TableSchema], list[CdcSyncError]]:
    """Schemas of all tables that are fine, and the error of every table that is not."""
    schemas: dict[TableId, TableSchema] = {}
    problems: list[CdcSyncError] = []
    for table in tables:
        try:
            schemas[table] = read_schema(conn, table, resolver)
        except UnsupportedColumns as e:
            problems.extend(e.errors)
        except CdcSyncError as e:  # collected: the operator gets every problem at once
            problems.append(e)
    return schemas, problems + _nested_partitions(conn, tables)


_ANCESTORS_SQL = """
SELECT x.s, x.t, an.nspname, ac.relname
FROM unnest(%s::text[], %s::text[]) AS x(s, t)
JOIN pg_namespace n ON n.nspname = x.s
JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = x.t AND c.relispartition
CROSS JOIN LATERAL pg_partition_ancestors(c.oid) a(relid)
JOIN pg_class ac ON ac.oid = a.relid AND ac.oid <> c.oid
JOIN pg_namespace an ON an.oid = ac.relnamespace
"""


def _nested_partitions(
    conn: psycopg.Connection[tuple[object, ...]], tables: Sequence[TableId]
) -> list[CdcSyncError]:
    """A partition configured with its partitioned table: the publication sends the
    partition's changes under the partitioned table's name only, so the partition's own
    pipeline entry would never see a change (silently)."""
    if not tables:
        return []
    configured = set(tables)
    rows = conn.execute(
        _ANCESTORS_SQL, ([t.schema for t in tables], [t.name for t in tables])
    ).fetchall()
    return [
        PermanentError(
            f"configured table {TableId(str(s), str(t))} is a partition of {up}, which is "
            f"configured too: its changes arrive as {up}'s; configure one of them"
        )
        for s, t, us, un in rows
        if (up := TableId(str(us), str(un))) in configured
    ]


_GENERATED_SQL = """
SELECT x.s, x.t, a.attname
FROM unnest(%s::text[], %s::text[]) AS x(s, t)
JOIN pg_namespace n ON n.nspname = x.s
JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = x.t
JOIN pg_attribute a ON a.attrelid = c.oid
WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated <> ''
ORDER BY 1, 2, a.attnum
"""


def warn_generated(conn: psycopg.Connection[tuple[object, ...]], tables: Sequence[TableId]) -> None:
    """WARNING per generated column of a configured table: pgoutput (PostgreSQL 15) never
    sends them, so the target table has no such column unless the DBA makes one there."""
    rows = conn.execute(
        _GENERATED_SQL, ([t.schema for t in tables], [t.name for t in tables])
    ).fetchall()
    for schema, table, column in rows:
        logs.get("cdc_sync.sources").warning(
            "source_generated_column_not_sent",
            table=f"{schema}.{table}",
            column=str(column),
            why="PostgreSQL's logical replication does not send generated columns: the "
            "target table gets no such column, and nothing fills one made there by hand",
            fix="create it in the target table as a generated column with the same "
            "expression (GENERATED ALWAYS AS (...) STORED), if the target needs it",
        )
