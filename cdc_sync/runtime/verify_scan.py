"""One table's verification scan: source chunks through the rules against the target rows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from operator import itemgetter, lt
from typing import Any, NamedTuple

from cdc_sync.records import ChangeRecord, Kind, Op, Position, Row, TableId, UnreadableRow
from cdc_sync.sinks.sql.read import Key, TargetReader, key_orderable
from cdc_sync.sources.base import Source
from cdc_sync.transforms import RuleError, TableTransform
from cdc_sync.verify.canonical import RowDigest, key_digest
from cdc_sync.verify.compare import narrow, summarize

MAX_SUSPECTS = 100_000
"""Differing keys kept per table for the re-check and repair; more are counted only."""

TKey = object  # a target key: rendered text, or the values themselves (see Shaper.key_text)
# Key kinds whose canonical values compare equal on both sides as they are (read.py
# canonicalises driver values): the key tuple itself serves as dict key, no rendering.
_PLAIN_KEYS = frozenset(
    {Kind.SMALLINT, Kind.INTEGER, Kind.BIGINT, Kind.MEDIUMINT, Kind.TINYINT, Kind.TEXT}
    | {Kind.VARCHAR, Kind.UUID, Kind.DATE, Kind.BYTES}
)


class Suspect(NamedTuple):
    """A key found differing: the target key values and, when known, the source key."""

    target_key: Key
    source_key: Key | None


@dataclass
class Suspects:
    missing: list[Suspect] = field(default_factory=list)
    extra: list[Suspect] = field(default_factory=list)
    different: list[Suspect] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.missing) + len(self.extra) + len(self.different)

    def all(self) -> list[Suspect]:
        return [*self.missing, *self.extra, *self.different]


class OrderBroken(Exception):
    """A side did not come in Python's order of the key: the table is verified by lookups."""


@dataclass
class Expected:
    """What the target should hold for one source row after the rules (None: nothing)."""

    key: Key | None
    digest: int | None
    refused: bool = False  # a rule refuses the row: the stream dead-letters it


class Shaper:
    """Source rows through a table's rules to target keys and row digests."""

    def __init__(self, tt: TableTransform, position: Position) -> None:
        self.tt = tt
        self.source = tt.source
        self.target = tt.schema
        self.digest = RowDigest([c.type for c in tt.schema.columns])
        key_types = [tt.schema.columns[i].type for i in tt.schema.key_indexes]
        self._key_text = RowDigest(key_types)
        self._tkey = tt.schema.key_indexes
        self._plain = all(t.kind in _PLAIN_KEYS and not t.array_dims for t in key_types)
        self._position = position
        self._now = datetime.now(UTC)
        plans = getattr(tt, "_plans", ())
        self.identity = tt.identity  # no rules: a source row is its own target row
        # Keys pass through when no rule step touches a key column (renames are fine).
        self.passthrough = tt.identity or all(not p.steps for p in plans if p.key)

    def record(self, row: Row, op: Op = Op.INSERT) -> ChangeRecord:
        return ChangeRecord(
            op, self.source.table, self.source, None, row, self._position, "verify", self._now
        )

    def _target_row(self, row: Row) -> tuple[Row | None, bool]:
        """(the target-shaped row or None, whether the stream refuses the row: a rule refuses
        it or the source could not decode it, so it is a dead letter or a stop)."""
        if type(row) is UnreadableRow:
            return None, True
        if self.identity:
            return row, False
        try:
            applied = self.tt.apply(self.record(row))
        except RuleError:
            return None, True
        return (None if applied is None else applied.record.after), False

    def shape(self, row: Row) -> tuple[Row | None, Expected]:
        """The target-shaped row (None when filtered out or refused) and what to expect."""
        out, refused = self._target_row(row)
        if out is None:
            return None, Expected(None, None, refused=refused)
        key = tuple(out[i] for i in self.target.key_indexes)
        return out, Expected(key, self.digest(out))

    def output(self, row: Row) -> Row | None:
        """The target-shaped row, None when filtered out or refused (no ChangeRecord is
        built when the table has no rules)."""
        return self._target_row(row)[0]

    def outputs(self, rows: list[Row]) -> list[Row]:
        """The target-shaped rows expected from ``rows`` (fewer when some are not)."""
        if self.identity and not any(type(r) is UnreadableRow for r in rows):
            return rows
        out = []
        for row in rows:
            shaped = self.output(row)
            if shaped is not None:
                out.append(shaped)
        return out

    def expect(self, row: Row) -> tuple[Key, int] | None:
        """(target key, digest) of a source row, None when not expected."""
        out = self.output(row)
        if out is None:
            return None
        return tuple([out[i] for i in self._tkey]), self.digest(out)

    def key_text(self, key: Key) -> TKey:
        return key if self._plain else self._key_text.text(key)

    def source_key(self, row: Row) -> Key:
        return tuple(row[i] for i in self.source.key_indexes)


@dataclass
class ScanResult:
    table: TableId
    target: TableId
    mode: str  # ordered | lookup
    rows_checked: int = 0  # source rows read
    target_rows: int = 0
    not_expected: int = 0  # source rows filtered out or refused by a rule
    suspects: Suspects = field(default_factory=Suspects)
    overflow: int = 0  # differing keys beyond MAX_SUSPECTS (counted, not kept)

    def add(self, kind: str, found: list[Suspect]) -> None:
        room = max(MAX_SUSPECTS - len(self.suspects), 0)
        self.overflow += max(len(found) - room, 0)
        getattr(self.suspects, kind).extend(found[:room])


def scan_table(
    source: Source,
    reader: TargetReader,
    shaper: Shaper,
    chunk: int,
    after_chunk: Callable[[], None],
) -> ScanResult:
    """Ordered merge when the key passes through and sorts alike on both sides; else (or
    when an order check fails mid-way) key lookups, with a compact set of seen keys."""
    if shaper.passthrough and key_orderable(shaper.target) and key_orderable(shaper.source):
        try:
            return _ordered(source, reader, shaper, chunk, after_chunk)
        except OrderBroken:
            pass
    return _lookup(source, reader, shaper, chunk, after_chunk)


def _check_order(prev: Key | None, rows: list[Row], idx: tuple[int, ...]) -> None:
    """``prev`` < the key of rows[0] < … (strictly), checked by C-level comparisons."""
    if not rows:
        return
    try:
        if len(idx) == 1:
            (i,) = idx
            keys: list[Any] = [r[i] for r in rows]
            ok = prev is None or prev[0] < keys[0]
        else:
            keys = list(map(itemgetter(*idx), rows))
            ok = prev is None or prev < keys[0]
        ok = ok and all(map(lt, keys, islice(keys, 1, None)))
    except (TypeError, ArithmeticError):  # values that do not order in Python (NULL, NaN)
        ok = False
    if not ok:
        raise OrderBroken


def _ordered(
    source: Source, reader: TargetReader, shaper: Shaper, chunk: int, done: Callable[[], None]
) -> ScanResult:
    """Both sides in key order, chunk by chunk: a source chunk's key range is read from the
    target, summaries compared, and only a mismatching chunk narrowed to keys.

    The equal chunk (the common case) costs a generated digest function per row on each
    side and two sums: no per-key structure, no ChangeRecord when the table has no rules.
    """
    res = ScanResult(shaper.source.table, reader.table, "ordered")
    after: Key | None = None  # last source key read (= target key: the key passes through)
    pages = _prefetch(source, shaper, chunk)
    skey_idx, tkey_idx = shaper.source.key_indexes, shaper.target.key_indexes
    many = shaper.digest.many
    while True:
        rows = next(pages)
        upto = shaper.source_key(rows[-1]) if len(rows) == chunk else None  # last: the rest
        _check_order(after, rows, skey_idx)
        res.rows_checked += len(rows)
        expected = shaper.outputs(rows)
        res.not_expected += len(rows) - len(expected)
        # Read after shaping, not in a thread alongside it: both hold the GIL (measured slower).
        tgt = _target_range(reader, tkey_idx, after, upto, page=chunk, res=res)
        if summarize(many(expected)) != summarize(many(tgt)):
            _narrow_chunk(shaper, reader, rows, tgt, res)
        done()
        if upto is None:
            return res
        after = upto


def _narrow_chunk(
    shaper: Shaper, reader: TargetReader, rows: list[Row], tgt: list[Row], res: ScanResult
) -> None:
    """A mismatching chunk: both sides by key text, to missing / extra / different keys."""
    key_text = shaper.key_text
    src: dict[TKey, tuple[int, Key]] = {}
    for row in rows:
        exp = shaper.expect(row)
        if exp is not None:
            src[key_text(exp[0])] = (exp[1], shaper.source_key(row))
    out: dict[TKey, int] = {}
    keys: dict[TKey, Key] = {}
    for row in tgt:
        key = reader.key_of(row)
        text = key_text(key)
        out[text] = shaper.digest(row)
        keys[text] = key
    diff = narrow(src, out)
    # The key passes through the rules: source key values = target key values.
    res.add("missing", [Suspect(s, s) for _, s in diff.missing])
    res.add("different", [Suspect(s, s) for _, s in diff.different])
    res.add("extra", [Suspect(keys[k], keys[k]) for k in diff.extra])


def _target_range(
    reader: TargetReader,
    key_idx: tuple[int, ...],
    after: Key | None,
    upto: Key | None,
    *,
    page: int,
    res: ScanResult,
) -> list[Row]:
    """The target rows with ``after`` < key <= ``upto``, in key order (checked); canonical
    keys, other values as the row digest takes them."""
    out: list[Row] = []
    prev = after
    while True:
        # Twice the chunk: a range holds one chunk's rows when equal, so one query suffices.
        rows = reader.scan(prev, 2 * page, upto=upto, for_digest=True)
        _check_order(prev, rows, key_idx)
        out += rows
        res.target_rows += len(rows)
        if len(rows) < 2 * page:
            return out
        prev = reader.key_of(rows[-1])


def _lookup(
    source: Source, reader: TargetReader, shaper: Shaper, chunk: int, done: Callable[[], None]
) -> ScanResult:
    """Source chunks in the source's order, their target rows looked up by the transformed
    key; then one pass over the target's keys finds the extras. Memory: a 64-bit digest per
    expected key in a set (about 70 bytes per row: 70 MB for a million rows)."""
    res = ScanResult(shaper.source.table, reader.table, "lookup")
    seen: set[int] = set()
    pages = _prefetch(source, shaper, chunk)
    while True:
        rows = next(pages)
        src: dict[TKey, tuple[int, Suspect]] = {}
        keys: list[Key] = []
        for row in rows:
            _, exp = shaper.shape(row)
            if exp.key is None or exp.digest is None:
                res.not_expected += 1
                continue
            text = shaper.key_text(exp.key)
            seen.add(key_digest(text))
            src[text] = (exp.digest, Suspect(exp.key, shaper.source_key(row)))
            keys.append(exp.key)
        res.rows_checked += len(rows)
        found = reader.lookup(keys)
        tgt = {shaper.key_text(k): shaper.digest(r) for k, r in found.items()}
        diff = narrow(src, tgt, extras=False)
        res.add("missing", [s for _, s in diff.missing])
        res.add("different", [s for _, s in diff.different])
        done()
        if len(rows) < chunk:
            break
    prev: Key | None = None
    while True:
        page = reader.scan(prev, chunk, keys_only=True)
        res.target_rows += len(page)
        extra = []
        for key in page:
            if key_digest(shaper.key_text(key)) not in seen:
                extra.append(Suspect(key, key if shaper.passthrough else None))
        res.add("extra", extra)
        done()
        if len(page) < chunk:
            return res
        prev = page[-1]


def _prefetch(source: Source, shaper: Shaper, chunk: int) -> Iterator[list[Row]]:
    """Source chunks in key order, the next one read by a thread while this one is compared
    (the drivers release the GIL while waiting: source and target reads overlap)."""
    table, schema = shaper.source.table, shaper.source
    with ThreadPoolExecutor(1, thread_name_prefix="verify-read") as pool:
        fut = pool.submit(source.read_chunk, table, schema, None, chunk)
        while True:
            rows = fut.result()
            if len(rows) == chunk:
                fut = pool.submit(
                    source.read_chunk, table, schema, shaper.source_key(rows[-1]), chunk
                )
            yield rows
            if len(rows) < chunk:
                return
