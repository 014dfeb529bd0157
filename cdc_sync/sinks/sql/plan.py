"""Turn ordered change records into ordered groups of set-based statements (pure, no I/O)."""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cdc_sync.errors import PermanentError
from cdc_sync.records import UNCHANGED, ChangeRecord, Op, Row, TableId, TableSchema


class Kind(enum.Enum):
    UPSERT = "upsert"  # full new row: INSERT … ON CONFLICT (key) DO UPDATE
    UPDATE = "update"  # row with UNCHANGED columns: UPDATE only the columns that came
    DELETE = "delete"  # by key
    TRUNCATE = "truncate"
    REKEY = "rekey"  # key change of a row with UNCHANGED columns: UPDATE … WHERE key = old


# Enum members as module constants: in Python 3.11 ``Op.DELETE`` is a class-attribute lookup
# through a descriptor (~0.1 µs), and plan() made six of them per row.
_INSERT, _DELETE, _TRUNCATE = Op.INSERT, Op.DELETE, Op.TRUNCATE
_UPSERT, _UPDATE, _REMOVE, _CLEAR, _REKEY = (
    Kind.UPSERT, Kind.UPDATE, Kind.DELETE, Kind.TRUNCATE, Kind.REKEY,
)  # fmt: skip


@dataclass(slots=True)
class Group:
    """Consecutive steps on one table that one statement (or a few chunks) can apply.

    ``rows`` maps the (hashable) key to the row (UPSERT / UPDATE / REKEY) or the key tuple
    (DELETE). Only the last row per key is kept: PostgreSQL rejects an ON CONFLICT DO UPDATE
    that touches the same row twice, and within one run of one kind the last row wins anyway.
    A REKEY group has exactly one row and its ``old_key``.
    """

    kind: Kind
    target: TableId
    schema: TableSchema
    unchanged: tuple[int, ...] = ()  # column indexes whose value is UNCHANGED (UPDATE/REKEY)
    rows: dict[object, Row] = field(default_factory=dict)
    old_key: tuple[object, ...] | None = None
    inserts_only: bool = True  # UPSERT: every row came from a source INSERT


KeyOf = Callable[[Row], tuple[object, ...]]


def _key_of(schema: TableSchema) -> tuple[KeyOf, bool]:
    """How to take the key from a row of ``schema``, and whether key tuples are hashable
    as they are (array-typed key columns, rare, arrive as lists and need ``repr``)."""
    idx = schema.key_indexes
    hashable = not any(schema.columns[i].type.array_dims for i in idx)
    if len(idx) == 1:
        (only,) = idx
        return (lambda row: (row[only],)), hashable
    return (lambda row: tuple([row[i] for i in idx])), hashable


def _unchanged(row: Row) -> tuple[int, ...]:
    return tuple(i for i, v in enumerate(row) if v is UNCHANGED)


def plan(items: Sequence[tuple[ChangeRecord, TableId]]) -> list[Group]:
    """Groups in apply order. Only *consecutive* steps merge, so a DELETE between two upserts
    of one key splits them and the order of effects is exactly the source's order."""
    groups: list[Group] = []
    cur: Group | None = None

    def add(
        kind: Kind,
        target: TableId,
        schema: TableSchema,
        key: object,
        value: Row,
        *,
        unchanged: tuple[int, ...] = (),
        insert: bool = False,
    ) -> Group:
        nonlocal cur
        c = cur
        if (
            c is None
            or c.kind is not kind
            or kind is _REKEY
            or kind is _CLEAR
            or (c.target is not target and c.target != target)
            or c.unchanged != unchanged
            or (c.schema is not schema and c.schema != schema)
        ):
            c = cur = Group(kind, target, schema, unchanged)
            groups.append(c)
        if not insert:
            c.inserts_only = False
        rows = c.rows
        if key in rows:
            # Re-insert so the dict's order is the order of the last occurrence.
            del rows[key]
        rows[key] = value
        return c

    last_schema: TableSchema | None = None
    key_of: KeyOf = tuple
    hashable = True
    for rec, target in items:
        op = rec.op
        schema = rec.schema
        if schema is not last_schema:  # derived once per run of one table's records
            last_schema = schema
            key_of, hashable = _key_of(schema)
        try:
            if op is _DELETE:
                before = rec.before
                if before is None:
                    raise ValueError("no old key")
                key = key_of(before)
                add(_REMOVE, target, schema, key if hashable else repr(key), key)
                continue
            if op is _TRUNCATE:
                add(_CLEAR, target, schema, None, ())
                continue
            row = rec.after
            if row is None:
                raise ValueError("no new row")
            key = key_of(row)
            hkey = key if hashable else repr(key)
            if op is _INSERT:
                add(_UPSERT, target, schema, hkey, row, insert=True)
                continue
            unchanged = _unchanged(row) if UNCHANGED in row else ()
            before = rec.before
            old = None if before is None else key_of(before)
            if old is not None and old != key:
                if unchanged:
                    g = add(_REKEY, target, schema, None, row, unchanged=unchanged)
                    g.old_key = old
                else:
                    add(_REMOVE, target, schema, old if hashable else repr(old), old)
                    add(_UPSERT, target, schema, hkey, row)
            elif unchanged:
                add(_UPDATE, target, schema, hkey, row, unchanged=unchanged)
            else:
                add(_UPSERT, target, schema, hkey, row)
        except ValueError as e:
            # A record without the row its op needs: a source bug, not something to retry.
            raise PermanentError(
                f"target table {target}: malformed {op.value} record at {rec.position}: {e}"
            ) from None
    return groups
