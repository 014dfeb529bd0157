"""Foreign keys whose referential actions change rows that the binlog never shows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cdc_sync.records import TableId
from cdc_sync.sources.mysql.catalog import query

# InnoDB runs these actions inside the storage engine: the rows they delete or change are not
# written to the binlog (MariaDB KB "Replication and Foreign Keys"; MySQL the same with its
# InnoDB foreign keys). RESTRICT and NO ACTION change nothing.
_UNLOGGED = ("CASCADE", "SET NULL", "SET DEFAULT")


@dataclass(frozen=True)
class Cascade:
    """One foreign key of a configured (child) table with an action the binlog misses."""

    table: TableId
    name: str
    columns: tuple[str, ...]
    parent: TableId
    parent_columns: tuple[str, ...]
    on_delete: str
    on_update: str

    @property
    def actions(self) -> str:
        out = [f"ON DELETE {self.on_delete}"] if self.on_delete in _UNLOGGED else []
        out += [f"ON UPDATE {self.on_update}"] if self.on_update in _UNLOGGED else []
        return " ".join(out)

    def problem(self) -> str:
        """What goes wrong and the fixes, naming the key (never a value)."""
        return (
            f"table {self.table}: foreign key {self.name} ({', '.join(self.columns)}) -> "
            f"{self.parent} ({', '.join(self.parent_columns)}) is {self.actions}; MySQL and "
            "MariaDB do not write the rows such an action deletes or changes to the binlog, "
            "so the target would keep them as they were; fix: make the key ON DELETE / ON "
            "UPDATE RESTRICT and have the application change the child rows itself, or set "
            f"`fk_cascades: accept` on the table entry of {self.table} when the target does the "
            "same itself (this foreign key, with its actions, in the target) or when such rows "
            "may stay (`cdc-sync verify` reports them, `--repair` removes them)"
        )


def cascades(conn: Any, tables: Sequence[TableId]) -> list[Cascade]:
    """The foreign keys of ``tables`` (as the child side) with an unlogged action."""
    out: list[Cascade] = []
    for t in tables:
        # One table at a time, each information_schema table on its own with constant
        # schema and table names: MariaDB then opens just that table. A join of the two
        # (or a row-constructor IN) made it open every table of every database, and
        # MariaDB 10.11 crashed (SIGSEGV in get_all_tables) under concurrent DDL.
        rules = query(
            conn,
            "SELECT CONSTRAINT_NAME, DELETE_RULE, UPDATE_RULE "
            "FROM information_schema.REFERENTIAL_CONSTRAINTS "
            "WHERE CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s",
            (t.schema, t.name),
        )
        acting = {
            str(name): (str(d).upper(), str(u).upper())
            for name, d, u in rules
            if str(d).upper() in _UNLOGGED or str(u).upper() in _UNLOGGED
        }
        if not acting:
            continue
        cols: dict[str, list[tuple[Any, ...]]] = {}
        for row in query(
            conn,
            "SELECT CONSTRAINT_NAME, COLUMN_NAME, REFERENCED_TABLE_SCHEMA, "
            "REFERENCED_TABLE_NAME, REFERENCED_COLUMN_NAME "
            "FROM information_schema.KEY_COLUMN_USAGE "
            "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND REFERENCED_TABLE_NAME IS NOT NULL "
            "ORDER BY CONSTRAINT_NAME, ORDINAL_POSITION",
            (t.schema, t.name),
        ):
            cols.setdefault(str(row[0]), []).append(row)
        for name, (on_delete, on_update) in sorted(acting.items()):
            key = cols.get(name, [])
            parent = TableId(str(key[0][2]), str(key[0][3])) if key else TableId("?", "?")
            out.append(
                Cascade(
                    t,
                    name,
                    tuple(str(c[1]) for c in key),
                    parent,
                    tuple(str(c[4]) for c in key),
                    on_delete,
                    on_update,
                )
            )
    return out


def declared(conn: Any, table: TableId, at: str) -> str | None:
    """After a DDL statement at ``at`` declared a foreign key on ``table``: why the stream
    must stop (the table has such a key now), or None."""
    found = cascades(conn, [table])
    if not found:
        return None
    return (
        f"a foreign key was declared on {table} at the source (at {at}): "
        + "; ".join(c.problem() for c in found)
        + ". Rows its actions changed since then are not in the target: after the fix, "
        "`cdc-sync verify --repair` brings them in line"
    )
