"""Turn ordered change records into ordered groups of set-based statements (pure, no I/O)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from cdc_sync.errors import PermanentError
from cdc_sync.records import UNCHANGED, ChangeRecord, Op, Row, TableId, TableSchema


class Kind(enum.Enum):
    UPSERT = "upsert"  # full new row: INSERT … ON CONFLICT (key) DO UPDATE
    UPDATE = "update"  # row with UNCHANGED columns: UPDATE only the columns that came
    DELETE = "delete"  # by key
    TRUNCATE = "truncate"
    REKEY = "rekey"  # key change of a row with UNCHANGED columns: UPDATE … WHERE key = old


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


def _hashable(key: tuple[object, ...]) -> object:
    """Keys are tuples of scalars; array-typed key columns (rare) arrive as lists."""
    for v in key:
        if type(v) is list:
            return repr(key)
    return key


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
        *,
        key: object,
        value: Row,
        unchanged: tuple[int, ...] = (),
    ) -> Group:
        nonlocal cur
        c = cur
        if (
            c is None
            or c.kind is not kind
            or kind is Kind.REKEY
            or kind is Kind.TRUNCATE
            or (c.target is not target and c.target != target)
            or c.unchanged != unchanged
            or (c.schema is not schema and c.schema != schema)
        ):
            c = cur = Group(kind, target, schema, unchanged)
            groups.append(c)
        if key in c.rows:
            # Re-insert so the dict's order is the order of the last occurrence.
            del c.rows[key]
        c.rows[key] = value
        return c

    for rec, target in items:
        op = rec.op
        schema = rec.schema
        idx = schema.key_indexes
        c, new = cur, rec.after
        if (
            op is Op.INSERT
            and c is not None
            and c.kind is Kind.UPSERT
            and c.schema is schema
            and c.target is target
            and not c.unchanged
            and len(idx) == 1
            and new is not None
        ):
            # Fast path for the bulk of a backlog: another insert into the open upsert group.
            one = _hashable((new[idx[0]],))
            if one in c.rows:
                del c.rows[one]
            c.rows[one] = new
            continue
        try:
            if op is Op.DELETE:
                before = rec.before
                if before is None:
                    raise ValueError("no old key")
                key = tuple([before[i] for i in idx])
                add(Kind.DELETE, target, schema, key=_hashable(key), value=key)
                continue
            if op is Op.TRUNCATE:
                add(Kind.TRUNCATE, target, schema, key=None, value=())
                continue
            row = rec.after
            if row is None:
                raise ValueError("no new row")
            key = tuple([row[i] for i in idx])
            if op is Op.INSERT:
                add(Kind.UPSERT, target, schema, key=_hashable(key), value=row)
                continue
            unchanged = _unchanged(row) if UNCHANGED in row else ()
            before = rec.before
            old = None if before is None else tuple([before[i] for i in idx])
            if old is not None and old != key:
                if unchanged:
                    g = add(Kind.REKEY, target, schema, key=None, value=row, unchanged=unchanged)
                    g.old_key = old
                else:
                    add(Kind.DELETE, target, schema, key=_hashable(old), value=old)
                    add(Kind.UPSERT, target, schema, key=_hashable(key), value=row)
            elif unchanged:
                add(Kind.UPDATE, target, schema, key=_hashable(key), value=row, unchanged=unchanged)
            else:
                add(Kind.UPSERT, target, schema, key=_hashable(key), value=row)
        except ValueError as e:
            # A record without the row its op needs: a source bug, not something to retry.
            raise PermanentError(
                f"target table {target}: malformed {op.value} record at {rec.position}: {e}"
            ) from None
    return groups
