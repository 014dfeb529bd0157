"""Table-map versions of the captured tables: schema and row decoder per version."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from cdc_sync.errors import PermanentError
from cdc_sync.records import ChangeRecord, RowProblem, SourceEvent, TableId, TableSchema
from cdc_sync.sources.mysql.columns import build_schema, key_from_table_map, specs_from_table_map
from cdc_sync.sources.mysql.rows import RowDecoder


class TableVersion:
    """One table-map version of a configured table: its schema and row decoder.

    ``origin_at``: None for a captured table; for the origin marker table the index of its
    ``origin`` column (its rows are read for the tag, never emitted)."""

    __slots__ = ("decoder", "origin_at", "schema", "table_obj")

    def __init__(
        self,
        table_obj: Any,
        schema: TableSchema,
        decoder: RowDecoder,
        origin_at: int | None = None,
    ) -> None:
        self.table_obj, self.schema, self.decoder = table_obj, schema, decoder
        self.origin_at = origin_at


class TableVersions:
    """Versions by table-map object (``by_object``, read by the decoder's hot path) and the
    latest schema per table (``latest``); the catalog is asked what table maps cannot tell."""

    def __init__(
        self,
        marker: TableId | None,
        json_columns: Callable[[TableId], set[str]],
        tinyint1_columns: Callable[[TableId], set[str]] | None,
    ) -> None:
        self._marker = marker
        self._json_columns, self._tinyint1_columns = json_columns, tinyint1_columns
        self.by_object: dict[int, TableVersion] = {}  # id(table_obj) -> version
        self.latest: dict[TableId, TableSchema] = {}
        self._json: dict[TableId, tuple[tuple[str, ...], set[str]]] = {}
        self._tiny: dict[TableId, tuple[tuple[str, ...], set[str]]] = {}

    def build(self, tm: Any) -> TableVersion:
        """The version of a table map not seen before (a new table id or definition)."""
        table = TableId(tm.schema, tm.table)
        if table == self._marker:
            return self._marker_version(tm, table)
        json = self._asked(table, tm, 252, self._json_columns, self._json)
        tiny = self._asked(table, tm, 1, self._tinyint1_columns, self._tiny)
        specs = specs_from_table_map(tm, json, tiny)
        schema = build_schema(table, specs, key_from_table_map(tm))
        old = self.latest.get(table)
        if old is not None and old == schema:
            schema = old  # same definition: keep the object, the runtime compares identity
        self.latest[table] = schema
        if len(self.by_object) > 1024:
            self.by_object.clear()
        v = self.by_object[id(tm.table_obj)] = TableVersion(
            tm.table_obj, schema, RowDecoder(table, specs)
        )
        return v

    def _marker_version(self, tm: Any, table: TableId) -> TableVersion:
        specs = specs_from_table_map(tm, ())
        names = [s.name for s in specs]
        if "origin" not in names:
            raise PermanentError(
                f"the origin marker table {table} has no column 'origin'; drop it and let "
                "the pipeline writing into this database create it again"
            )
        at = names.index("origin")
        schema = build_schema(table, specs, (names[at],))
        v = self.by_object[id(tm.table_obj)] = TableVersion(
            tm.table_obj, schema, RowDecoder(table, specs), at
        )
        return v

    def _asked(
        self,
        table: TableId,
        tm: Any,
        code: int,
        ask: Callable[[TableId], set[str]] | None,
        known: dict[TableId, tuple[tuple[str, ...], set[str]]],
    ) -> set[str]:
        """What the table map cannot tell about a table's columns of binlog type ``code``
        (MariaDB JSON among LONGTEXT: 252; TINYINT(1) among TINY: 1), from the catalog:
        asked again only when those columns change (an ALTER), not per table map."""
        names = tuple(c.name for c in tm.columns if c.type == code)
        if not names or ask is None:
            return set()
        got = known.get(table)
        if got is None or got[0] != names:
            got = known[table] = (names, ask(table))
        return got[1]


def with_problems(
    out: list[SourceEvent], n: int, kind: int, problems: dict[int, RowProblem], schema: TableSchema
) -> None:
    """Mark the records of images holding zero dates (``out[n:]`` are the event's records,
    ``problems`` by image number). A new row's problem goes on its record, which must not
    be applied (dead letter or stop, by ``on_error``). An old row only needs its key: it
    keeps just that, so the DELETE, or the UPDATE that fixes the date at the source, still
    applies; unless the key itself is what cannot be decoded."""
    keys = schema.key_indexes
    for index, problem in problems.items():
        i, old = (n + index // 2, index % 2 == 0) if kind == 1 else (n + index, kind == 2)
        rec = cast(ChangeRecord, out[i])
        before = rec.before
        if old and before is not None and all(before[k] is not None for k in keys):
            key_only = tuple(v if j in keys else None for j, v in enumerate(before))
            out[i] = rec._replace(before=key_only, before_is_key_only=True)
        else:
            out[i] = rec._replace(problem=problem)


def mask(bitmap: bytes) -> int:
    return int.from_bytes(bitmap, "little")


def not_full(table: TableId) -> PermanentError:
    return PermanentError(
        f"table {table}: a rows event lacks columns; set binlog_row_image = FULL "
        "(SET GLOBAL binlog_row_image = 'FULL'; and in my.cnf)"
    )
