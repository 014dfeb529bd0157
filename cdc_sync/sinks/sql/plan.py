"""Turn ordered change records into ordered groups of set-based statements (pure, no I/O)."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from uuid import UUID

from cdc_sync.errors import PermanentError
from cdc_sync.records import UNCHANGED, ChangeRecord, JsonText, Op, Row, TableId, TableSchema


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


def plan(
    items: Sequence[tuple[ChangeRecord, TableId]], ledger: Ledger | None = None
) -> list[Group]:
    """Groups in apply order. Only *consecutive* steps merge, so a DELETE between two upserts
    of one key splits them and the order of effects is exactly the source's order.

    ``ledger``: what earlier plans of the open target transaction (chunks, rows re-applied
    one by one) learnt about key swaps; this plan's additions wait in ``ledger.pending``
    until the caller has applied the groups (``Ledger.commit``)."""
    groups: list[Group] = []
    cur: Group | None = None
    # Built at the first key change with a full old row, or at once when the ledger knows
    # the open source transaction (its key changes may continue here).
    written: _Written | None = None
    if ledger is not None:
        ledger.pending = None
        if ledger.xid is not None:
            written = _Written((), ledger, ledger.xid)

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
        if written is not None and rec.xid != written.xid:
            # A new source transaction: its key was unique at the last one's commit, so
            # nothing written before can be a second row under a key.
            written = None
            if ledger is not None:
                ledger.pending = _RESET
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
                hold = key if hashable else repr(key)
                if (
                    written is not None
                    and not rec.before_is_key_only
                    and written.taken(target, hold, before)
                ):
                    # Another row of this source transaction holds the key (deferrable
                    # key): the deleted row is not the one the target has there.
                    continue
                add(_REMOVE, target, schema, hold, key)
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
                        base = ledger if ledger is not None and ledger.pending is None else None
                        written = _Written(groups, base, rec.xid)
                    written.moved.add((target, hkey))
                    if written.taken(target, hold, before):
                        # A deferrable source key: an earlier change of this transaction
                        # moved another row onto the old key, and it stays (see taken()).
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
    if written is not None and ledger is not None:
        ledger.pending = written
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
    without one pay a single ``is None`` test per row. Keys it has not seen are asked of
    ``base``, the ledger of the earlier plans of the same source transaction.
    """

    __slots__ = ("_rows", "base", "cleared", "moved", "xid")

    def __init__(self, groups: Sequence[Group], base: Ledger | None, xid: str) -> None:
        self._rows: dict[tuple[TableId, object], Row | None] = {}
        self.base, self.xid = base, xid
        self.moved: set[tuple[TableId, object]] = set()  # new keys of full-row key changes
        self.cleared: set[TableId] = set()  # truncated: the ledger's rows are gone
        for g in groups:
            for key in g.rows:
                self.note(g, key)

    def note(self, group: Group, key: object) -> None:
        kind, target = group.kind, group.target
        if kind is _REMOVE:
            self._rows[(target, key)] = None
        elif kind is _CLEAR:
            self.cleared.add(target)
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
        """True when a key change's old key holds a row this transaction wrote that is not
        the row being moved, so the old key's delete must not happen.

        Under a DEFERRABLE source key one statement may swap keys (1→2, 2→1): uniqueness
        is checked at its end, so for a moment two rows share key 2, and the change
        "2→1" moves the *original* row 2 while the row "1→2" wrote there stays. Only the
        full old row tells the two apart; when the rows are equal they cannot be told
        apart and the delete happens, as it must in the ordinary chain 1→2, 2→1."""
        row = self._rows.get((target, old_key), _UNSEEN)
        if row is not _UNSEEN:
            return row is not None and differs(row, old_row)  # type: ignore[arg-type]
        base = self.base
        if base is None or target in self.cleared:
            return False
        return base.taken(target, old_key, old_row)

    def items(self) -> Iterator[tuple[tuple[TableId, object], Row | None]]:
        return iter(self._rows.items())


_UNSEEN = object()
_RESET = object()  # Ledger.pending: a new source transaction, forget the last one's keys
_NAN = object()  # NaN in a fingerprint: equal to itself, as differs() takes it


class Ledger:
    """What the plans of one open target transaction learnt about the open source
    transaction's key changes, for the next plans: a swap may be split across flush_rows
    chunks, or re-applied row by row after a refusal.

    Per target table, the fingerprint of the last row written under each key that a key
    change with a full old row moved a row onto (``hash(key)`` → ``hash(row)``): two ints
    per entry (~135 MB per million such key changes), nothing for other writes, which
    only update or drop entries already there. A key written by a plain INSERT in an
    earlier chunk is not known (deferred key checks: INSERT onto a key, then the old row
    moved away, in different chunks). Dropped at the next source transaction and with the
    target transaction (the sink makes one per target transaction). The rows' columns
    UNCHANGED (TOAST) are left out of the fingerprint, and are not evidence, as in differs().
    """

    __slots__ = ("_marks", "pending", "xid")

    def __init__(self) -> None:
        self.xid: str | None = None  # the source transaction the entries belong to
        self._marks: dict[TableId, dict[int, int | tuple[tuple[int, ...], int]]] = {}
        self.pending: _Written | object | None = None  # the last plan's, to commit

    def __len__(self) -> int:
        return sum(len(m) for m in self._marks.values())

    def commit(self) -> None:
        """The last plan's groups were applied: what it learnt is now true of the target."""
        w, self.pending = self.pending, None
        if not isinstance(w, _Written):
            if w is _RESET:
                self._marks, self.xid = {}, None
            return
        if w.base is None:  # a new source transaction
            self._marks = {}
        self.xid = w.xid
        for target in w.cleared:
            self._marks.pop(target, None)
        marks, moved = self._marks, w.moved
        for tk, row in w.items():
            target, key = tk
            m = marks.get(target)
            h = hash(key)
            if row is None:
                if m is not None:
                    m.pop(h, None)
            elif tk in moved or (m is not None and h in m):
                if m is None:
                    m = marks[target] = {}
                m[h] = _mark(row)

    def taken(self, target: TableId, old_key: object, old_row: Row) -> bool:
        m = self._marks.get(target)
        mark = None if m is None else m.get(hash(old_key))
        if mark is None or UNCHANGED in old_row:
            return False  # an old row with UNCHANGED values: no evidence either way
        if isinstance(mark, int):
            return mark != _fingerprint(old_row, ())
        skip, fp = mark
        return fp != _fingerprint(old_row, skip)


def _mark(row: Row) -> int | tuple[tuple[int, ...], int]:
    if UNCHANGED in row:
        skip = _unchanged(row)
        return skip, _fingerprint(row, skip)
    return _fingerprint(row, ())


def _fingerprint(row: Row, skip: tuple[int, ...]) -> int:
    """A hash of the row's values, equal for rows differs() calls equal (NaN, arrays)."""
    if skip:
        row = tuple(v for i, v in enumerate(row) if i not in skip)
    return hash(tuple(v if type(v) in _PLAIN else _canon(v) for v in row))


# Hashable, never NaN: taken as they are (most values; the rest go through _canon)
_PLAIN = frozenset({int, str, bool, bytes, type(None), date, datetime, time, UUID, JsonText})


def _canon(v: object) -> object:
    if isinstance(v, list | tuple):  # arrays
        return tuple(_canon(x) for x in v)
    # NaN's hash is the object's identity (Python 3.10+), and differs() calls NaNs equal
    if (isinstance(v, float) and math.isnan(v)) or (isinstance(v, Decimal) and v.is_nan()):
        return _NAN
    if type(v).__hash__ is None:  # unhashable (not a canonical value type): by its text
        return repr(v)
    return v


def _new_key(group: Group, row: Row) -> tuple[object, ...]:
    return tuple(row[i] for i in group.schema.key_indexes)


def _hkey(group: Group, key: tuple[object, ...]) -> object:
    hashable = not any(group.schema.columns[i].type.array_dims for i in group.schema.key_indexes)
    return key if hashable else repr(key)
