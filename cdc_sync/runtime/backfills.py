"""The value a column the source added gets in the target rows that were already there."""

from __future__ import annotations

from cdc_sync.records import Backfill, TableId, TableSchema
from cdc_sync.sinks.sql.backfill import BackfillOf
from cdc_sync.sources.base import Source
from cdc_sync.transforms import TableTransform


def backfiller(source: Source, table: TableId, tt: TableTransform) -> BackfillOf | None:
    """Read from the source's catalog when asked, for tables without rules only: a rule could
    rename, mask, hash or drop the column, and one value alone cannot pass through a row's
    rules (those tables keep NULL and the WARNING, as before)."""
    if not tt.identity:
        return None
    columns = {c.name: c for c in tt.schema.columns}

    def of(name: str) -> Backfill | None:
        col = columns.get(name)
        return None if col is None else source.backfill(table, col)

    return of


def read_now(
    source: Source, table: TableId, tt: TableTransform, old: TableSchema | None
) -> BackfillOf | None:
    """:func:`backfiller`'s answers for the columns ``tt.schema`` has and ``old`` lacks, read
    here (the reading thread): the DDL runs on the writer thread, which must not use the
    source's connections."""
    of = backfiller(source, table, tt)
    if of is None or old is None:
        return None
    fills = {c.name: of(c.name) for c in tt.schema.columns if c.name not in old.names}
    return fills.get
