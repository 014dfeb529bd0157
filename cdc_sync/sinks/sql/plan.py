"""Turn ordered change records into ordered groups of set-based statements (pure, no I/O)."""

from __future__ import annotations

import enum
import math
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
    written: _Written | None = None  # built at the first key change with a full old row

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
        if written is not None:
            written.note(c, key)
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
                full = before is not None and not rec.before_is_key_only
                if unchanged and full and before is not None and _fills(before, unchanged):
                    # The full old row has the unchanged (TOASTed) values: a whole new row,
                    # so the move needs no REKEY (which cannot tell swapped rows apart).
                    row = tuple(
                        b if v is UNCHANGED else v for v, b in zip(row, before, strict=True)
                    )
                    unchanged = ()
                if unchanged:
                    g = add(_REKEY, target, schema, None, row, unchanged=unchanged)
                    g.old_key = old
                    continue
                hold = old if hashable else repr(old)
                if full and before is not None:
                    if written is None:
                        written = _Written(groups)
                    if written.taken(target, hold, before):
                        # A deferrable source key: an earlier change of this batch moved
                        # another row onto the old key, and that row stays (see taken()).
                        add(_UPSERT, target, schema, hkey, row)
                        continue
                add(_REMOVE, target, schema, hold, old)
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


def _fills(before: Row, unchanged: tuple[int, ...]) -> bool:
    """Whether an old row carries the values a new row left UNCHANGED. An unchanged
    (TOASTed) value is never NULL, so None there means the old row does not have it."""
    return all(before[i] is not None and before[i] is not UNCHANGED for i in unchanged)


def _same(a: object, b: object) -> bool:
    """Value equality that also holds for NaN and for arrays holding NaN (decoded twice,
    two float objects that ``==`` calls different)."""
    if a is b or a == b:
        return True
    if isinstance(a, float) and isinstance(b, float):
        return math.isnan(a) and math.isnan(b)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) == len(b):
        return all(_same(x, y) for x, y in zip(a, b, strict=True))
    return False


def differs(written: Row, old: Row) -> bool:
    """Whether the row an earlier change wrote under a key cannot be the old row a key
    change moves away from it. Columns UNCHANGED on either side are not evidence."""
    return any(
        w is not UNCHANGED and o is not UNCHANGED and not _same(w, o)
        for w, o in zip(written, old, strict=True)
    )


class _Written:
    """The last row this plan writes under each (target, key), for key changes to consult.

    Built only when a batch has a key change with a full old row (REPLICA IDENTITY FULL,
    MySQL full images), from the groups so far, then kept up to date by ``add``: batches
    without one pay a single ``is None`` test per row.
    """

    __slots__ = ("_rows",)

    def __init__(self, groups: Sequence[Group]) -> None:
        self._rows: dict[tuple[TableId, object], Row | None] = {}
        for g in groups:
            for key in g.rows:
                self.note(g, key)

    def note(self, group: Group, key: object) -> None:
        kind, target = group.kind, group.target
        if kind is _REMOVE:
            self._rows[(target, key)] = None
        elif kind is _CLEAR:
            for k in [k for k in self._rows if k[0] == target]:
                self._rows[k] = None
        elif kind is _REKEY:
            row = group.rows[key]
            if group.old_key is not None:
                self._rows[(target, _hkey(group, group.old_key))] = None
            self._rows[(target, _hkey(group, _new_key(group, row)))] = row
        else:
            self._rows[(target, key)] = group.rows[key]

    def taken(self, target: TableId, old_key: object, old_row: Row) -> bool:
        """True when a key change's old key holds a row this batch wrote that is not the
        row being moved, so the old key's delete must not happen.

        Under a DEFERRABLE source key one statement may swap keys (1→2, 2→1): uniqueness
        is checked at its end, so for a moment two rows share key 2, and the change
        "2→1" moves the *original* row 2 while the row "1→2" wrote there stays. Only the
        full old row tells the two apart; when the rows are equal they cannot be told
        apart and the delete happens, as it must in the ordinary chain 1→2, 2→1."""
        row = self._rows.get((target, old_key))
        return row is not None and differs(row, old_row)


def _new_key(group: Group, row: Row) -> tuple[object, ...]:
    return tuple(row[i] for i in group.schema.key_indexes)


def _hkey(group: Group, key: tuple[object, ...]) -> object:
    hashable = not any(group.schema.columns[i].type.array_dims for i in group.schema.key_indexes)
    return key if hashable else repr(key)
