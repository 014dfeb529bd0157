"""The signal table's shape (DBLog watermarks): checked by ``check``, and the fix to print."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from cdc_sync.config.dsn import parse_mysql_dsn
from cdc_sync.config.models import Config, MysqlSource
from cdc_sync.records import TableId
from cdc_sync.sources.mysql import admin as my_admin
from cdc_sync.sources.mysql.catalog import query as my_query
from cdc_sync.sources.postgres import admin as pg_admin

# What the daemon writes: an upsert of (pipeline, value, updated_at) keyed by pipeline.
NEEDED = ("pipeline", "value", "updated_at")

# (name, NOT NULL without a default / identity / generation expression) per column.
_PG_COLUMNS = """
SELECT a.attname::text,
       a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = ''
FROM pg_attribute a
WHERE a.attrelid = to_regclass(format('%%I.%%I', %s::text, %s::text)) AND a.attnum > 0
  AND NOT a.attisdropped
"""
# Whole-column, non-partial unique indexes, one row per index: its column names.
_PG_UNIQUE = """
SELECT array_agg(a.attname::text)
FROM pg_index i
JOIN LATERAL unnest(i.indkey) AS k(attnum) ON true
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = to_regclass(format('%%I.%%I', %s::text, %s::text)) AND i.indisunique
  AND i.indpred IS NULL AND i.indexprs IS NULL
GROUP BY i.indexrelid
"""
_MY_COLUMNS = (
    "SELECT COLUMN_NAME, IS_NULLABLE = 'NO' AND COLUMN_DEFAULT IS NULL AND EXTRA NOT LIKE "
    "'%%auto_increment%%' AND EXTRA NOT LIKE '%%VIRTUAL%%' AND EXTRA NOT LIKE '%%STORED%%' "
    "AND EXTRA NOT LIKE '%%PERSISTENT%%' FROM information_schema.COLUMNS "
    "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s"
)
_MY_UNIQUE = (
    "SELECT INDEX_NAME, GROUP_CONCAT(COLUMN_NAME), MAX(SUB_PART IS NOT NULL) "
    "FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s "
    "AND NON_UNIQUE = 0 GROUP BY INDEX_NAME"
)


def signal_ddl(mysql: bool, table: TableId) -> str:
    """The statement that creates a signal table of the right shape on the source."""
    return my_admin.signal_table_sql(table) if mysql else pg_admin.signal_table_sql(table)


def fix_text(mysql: bool, table: TableId) -> str:
    """How to make ``table`` a signal table the daemon can write its watermarks into."""
    return (
        "rename or drop a signal table of another shape (or set signal_table to another "
        f"name), create it as {signal_ddl(mysql, table)} and grant the daemon's user INSERT, "
        "UPDATE on it (or let the daemon create it); then restart the daemon, which captures "
        "the signal table from its start"
    )


def shape_problems(
    table: TableId,
    columns: Iterable[tuple[str, bool]],
    unique: Iterable[list[str]],
    mysql: bool,
) -> list[str]:
    """What stops the daemon's watermark upsert on an existing ``table`` ([] when nothing):
    ``columns``: (name, needs a value); ``unique``: each whole-column unique index."""
    cols = dict(columns)
    why = []
    missing = [c for c in NEEDED if c not in cols]
    if missing:
        why.append(f"it has no column {', '.join(repr(c) for c in missing)}")
    extra = sorted(c for c, needs in cols.items() if needs and c not in NEEDED)
    if extra:
        why.append(
            f"its column(s) {', '.join(repr(c) for c in extra)} are NOT NULL without a "
            "default, and the daemon writes only (pipeline, value, updated_at)"
        )
    if "pipeline" in cols and ["pipeline"] not in [sorted(u) for u in unique]:
        why.append("it has no primary key or unique index on (pipeline) alone")
    if not why:
        return []
    return [
        f"signal table {table} exists but the daemon cannot write its watermarks into it: "
        f"{'; '.join(why)}. Fix: {fix_text(mysql, table)}"
    ]


def _pg_shape(dsn: str, table: TableId) -> list[str] | None:
    from cdc_sync.sources.postgres.peek import connect  # noqa: PLC0415  (a PG source only)

    with connect(dsn) as conn:
        args = (table.schema, table.name)
        cols = [(str(n), bool(v)) for n, v in conn.execute(_PG_COLUMNS, args).fetchall()]
        found = conn.execute(_PG_UNIQUE, args).fetchall()
        unique = [[str(c) for c in cast("list[object]", r[0])] for r in found]
    return shape_problems(table, cols, unique, mysql=False) if cols else None


def _my_shape(dsn_text: str, table: TableId) -> list[str] | None:
    from cdc_sync.sources.mysql.oldest import connect  # noqa: PLC0415  (a MySQL source only)

    conn: Any
    conn, _ = connect(parse_mysql_dsn(dsn_text))
    try:
        args = (table.schema, table.name)
        cols = [(str(n), bool(v)) for n, v in my_query(conn, _MY_COLUMNS, args)]
        unique = [str(c).split(",") for _, c, sub in my_query(conn, _MY_UNIQUE, args) if not sub]
    finally:
        conn.close()
    return shape_problems(table, cols, unique, mysql=True) if cols else None


def signal_problems(config: Config, name: str) -> list[str]:
    """An existing signal table of the wrong shape, as ``check`` problems. A missing one is
    the source's own check (``signal_problem``: created at start when allowed)."""
    pc = config.pipelines[name]
    if pc.signal_table is None:
        return []
    table = TableId.parse(pc.signal_table)
    sc = config.sources[pc.source]
    dsn = sc.dsn.get_secret_value()
    found = _my_shape(dsn, table) if isinstance(sc, MysqlSource) else _pg_shape(dsn, table)
    return [f"source: {p}" for p in found or []]
