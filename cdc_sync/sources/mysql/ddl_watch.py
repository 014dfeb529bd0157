"""What a DDL statement in the binlog means for the stream of the configured tables."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pymysql

from cdc_sync.errors import PermanentError
from cdc_sync.records import Position, TableId
from cdc_sync.sources.mysql.cascades import declared
from cdc_sync.sources.mysql.catalog import query
from cdc_sync.sources.mysql.errors import classify


class DdlWatch:
    """The decoder's ``on_ddl``: a configured table renamed or dropped, or given a foreign key
    whose actions the binlog misses (unless its entry accepts them), stops the stream at that
    statement. Both are judged by the catalog as it is now, so that after the fix (the name
    in the config, the key's actions) the restarted stream goes past the statement."""

    def __init__(self, catalog: Callable[[], Any], accepted: frozenset[TableId]) -> None:
        self._catalog, self._accepted = catalog, accepted

    def __call__(self, table: TableId, what: str, at: Position) -> None:
        try:
            if what != "references":
                self._table_gone(table, what, at)
            elif table not in self._accepted:
                problem = declared(self._catalog(), table, at.to_text())
                if problem is not None:
                    raise PermanentError(problem)
        except pymysql.MySQLError as e:
            raise classify(e, "cannot read the source catalog") from e

    def _table_gone(self, table: TableId, what: str, at: Position) -> None:
        """Its rows would no longer be read under the configured name: unless a table of
        that name exists again by now (a re-created table, an online schema change's swap),
        stop and say so."""
        found = query(
            self._catalog(),
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
            (table.schema, table.name),
        )
        if not found:
            raise PermanentError(
                f"configured table {table} was {what} at the source (at {at.to_text()}) and "
                "no table of that name exists now: cdc-sync stops rather than miss its rows. "
                "Renamed: put the new name in the config (same target table) and start again "
                "(with snapshot: initial its rows are copied first); dropped on purpose: remove it "
                "from the config"
            )
