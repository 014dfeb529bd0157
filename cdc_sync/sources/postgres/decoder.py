"""Pure pgoutput (protocol v1) decoder: XLogData payloads → canonical source events."""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cdc_sync.errors import NoKeyError, PermanentError
from cdc_sync.records import (
    UNCHANGED,
    ChangeRecord,
    Column,
    Kind,
    Op,
    PgLsn,
    RowProblem,
    SourceEvent,
    TableId,
    TableSchema,
    TxBegin,
    TxCommit,
)
from cdc_sync.sources.postgres.enum_labels import NewLabel, checked
from cdc_sync.sources.postgres.relnames import RelationNames
from cdc_sync.sources.postgres.types import TypeResolver
from cdc_sync.sources.postgres.values import Converter, unrepresentable

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

_BEGIN = struct.Struct(">QqI")  # final_lsn, commit time, xid
_COMMIT = struct.Struct(">BQQq")  # flags, commit_lsn, end_lsn, commit time
_U32 = struct.Struct(">I").unpack_from
_I32 = struct.Struct(">i").unpack_from
_U16 = struct.Struct(">H").unpack_from
_Q = struct.Struct(">Q").unpack_from

_NONE: tuple[SourceEvent, ...] = ()
_T, _N, _U = ord("t"), ord("n"), ord("u")
_NEW, _KEY, _OLD = ord("N"), ord("K"), ord("O")  # tuple markers; ord() is not constant-folded


def pg_time(micros: int) -> datetime:
    """A pgoutput timestamp (microseconds since 2000-01-01 UTC) as an aware UTC datetime."""
    return PG_EPOCH + timedelta(microseconds=micros)


@dataclass(slots=True)
class _Rel:
    """Relation cache entry; ``ignored`` relations are not configured and never decoded."""

    table: TableId
    schema: TableSchema | None
    convs: tuple[Converter | None, ...]
    ncols: int
    ignored: bool
    replident: str = ""
    cols: tuple[tuple[bool, str, int, int], ...] = ()  # (key flag, name, type oid, typmod)


def _cstring(data: bytes, pos: int) -> tuple[str, int]:
    end = data.index(0, pos)
    return data[pos:end].decode(), end + 1


class PgOutputDecoder:
    """Decodes one replication session's messages; keeps the relation cache.

    ``resume_after`` (an end LSN, i.e. our checkpoint): transactions whose commit record
    starts before it ended at or before it and were applied already; they are skipped
    (ARCHITECTURE.md invariant 2: PG15 re-sends confirmed transactions after restarts).
    """

    def __init__(
        self,
        resolver: TypeResolver,
        tables: Collection[TableId] | None = None,
        known: Mapping[TableId, TableSchema] | None = None,
        resume_after: int = 0,
        skip_origins: Collection[str] = (),
        *,
        names: RelationNames | None = None,
    ) -> None:
        self._resolver = resolver
        self._names = names  # configured tables by oid: see RelationNames
        # Transactions a two-way link's other direction applied here (loop prevention): their
        # rows are dropped, their begin / commit still pass so positions move on.
        self._skip_origins = frozenset(skip_origins)
        self._tables = frozenset(tables) if tables is not None else None
        self._schemas: dict[TableId, TableSchema] = dict(known or {})
        self._rels: dict[int, _Rel] = {}
        self._resume_after = resume_after
        self._xid = ""
        self._commit_time = PG_EPOCH
        self._in_tx = False
        self._skip = False
        self._drop = False  # rows of this transaction are not emitted (skipped or an echo)
        self._rows = 0
        self._problem: RowProblem | None = None  # set by _checked_tuple for the row just read
        self._tolerated: set[str] = set()  # enum labels looked up and still unknown
        self._dispatch = {
            ord("B"): self._begin,
            ord("C"): self._commit,
            ord("R"): self._relation,
            ord("Y"): self._type,
            ord("I"): self._insert,
            ord("U"): self._update,
            ord("D"): self._delete,
            ord("T"): self._truncate,
            ord("O"): self._origin,
            ord("M"): self._message,
        }

    @property
    def in_transaction(self) -> bool:
        return self._in_tx

    def schema(self, table: TableId) -> TableSchema | None:
        return self._schemas.get(table)

    def decode(self, data: bytes, wal_start: int) -> Sequence[SourceEvent]:
        """Events for one XLogData payload; ``wal_start`` is its position in the stream."""
        handler = self._dispatch.get(data[0])
        if handler is None:
            raise PermanentError(f"unknown pgoutput message type {chr(data[0])!r}")
        return handler(data, wal_start)

    # -- transaction boundaries ------------------------------------------------------------

    def _begin(self, data: bytes, wal_start: int) -> Sequence[SourceEvent]:
        final_lsn, ts, xid = _BEGIN.unpack_from(data, 1)
        self._in_tx, self._rows = True, 0
        self._xid, self._commit_time = str(xid), pg_time(ts)
        # The commit record starts at final_lsn; one starting before our checkpoint (an end
        # LSN) cannot end after it, since WAL records do not overlap.
        self._skip = final_lsn < self._resume_after
        self._drop = self._skip
        if self._skip:
            return _NONE
        return (TxBegin(self._xid, self._commit_time, PgLsn(final_lsn)),)

    def _commit(self, data: bytes, wal_start: int) -> Sequence[SourceEvent]:
        _flags, _commit_lsn, end_lsn, ts = _COMMIT.unpack_from(data, 1)
        self._in_tx = False
        self._drop = False
        if self._skip:
            self._skip = False
            if end_lsn > self._resume_after:  # would mean the reasoning in _begin is wrong
                raise PermanentError("skipped a transaction that ends after the checkpoint")
            return _NONE
        return (TxCommit(self._xid, pg_time(ts), PgLsn(end_lsn), self._rows),)

    def _origin(self, data: bytes, wal_start: int) -> Sequence[SourceEvent]:
        # Sent after Begin when the transaction was written in a replication origin session.
        name, _ = _cstring(data, 9)
        if name in self._skip_origins:
            self._drop = True
        return _NONE

    def _message(self, data: bytes, wal_start: int) -> Sequence[SourceEvent]:
        # pg_logical_emit_message() output; only sent when asked for, parsed and ignored.
        _prefix, pos = _cstring(data, 10)
        if pos + 4 + _U32(data, pos)[0] > len(data):
            raise PermanentError("truncated pgoutput logical message")
        return _NONE

    # -- relations and types ---------------------------------------------------------------

    def _type(self, data: bytes, wal_start: int) -> Sequence[SourceEvent]:
        (oid,) = _U32(data, 1)
        self._resolver.forget(oid)
        return _NONE

    def _relation(self, data: bytes, wal_start: int) -> Sequence[SourceEvent]:
        (relid,) = _U32(data, 1)
        nsp, pos = _cstring(data, 5)
        name, pos = _cstring(data, pos)
        replident = chr(data[pos])
        (ncols,) = _U16(data, pos + 1)
        pos += 3
        table = TableId(nsp or "pg_catalog", name)
        if self._names is not None:
            table = self._names.configured(relid, table)
        if self._tables is not None and table not in self._tables:
            self._rels[relid] = _Rel(table, None, (), ncols, True)
            return _NONE
        cols: list[tuple[bool, str, int, int]] = []
        for _ in range(ncols):
            flags = data[pos]
            colname, pos = _cstring(data, pos + 1)
            (typoid,) = _U32(data, pos)
            (typmod,) = _I32(data, pos + 4)
            pos += 8
            cols.append((bool(flags & 1), colname, typoid, typmod))
        # Re-sent for a known table (after an ALTER): a column may allow NULL now.
        names = self._names
        relaxed = names.nullable(relid) if names and table in self._schemas else frozenset()
        schema, convs = self._build_schema(table, replident, cols, relaxed)
        self._schemas[table] = schema
        self._rels[relid] = _Rel(table, schema, convs, ncols, False, replident, tuple(cols))
        return _NONE

    def _relearn(self, rel: _Rel, label: str) -> None:
        """A row holds an enum label added since ``rel`` was read (no message says so): its
        columns' types are read again, so the record's schema names the label and the target
        gets it before the row. A label still unknown (renamed since) is let through once."""
        for _key, _name, typoid, _mod in rel.cols:
            self._resolver.forget(typoid)
        schema, convs = self._build_schema(rel.table, rel.replident, list(rel.cols))
        enums = [c.type.enum_labels for c in schema.columns if c.type.kind is Kind.ENUM]
        if not any(label in labels for labels in enums):
            self._tolerated.add(label)
            schema, convs = self._build_schema(rel.table, rel.replident, list(rel.cols))
        self._schemas[rel.table] = schema
        rel.schema, rel.convs = schema, convs

    def _build_schema(
        self,
        table: TableId,
        replident: str,
        cols: list[tuple[bool, str, int, int]],
        relaxed: frozenset[str] = frozenset(),
    ) -> tuple[TableSchema, tuple[Converter | None, ...]]:
        prev = self._schemas.get(table)
        prev_cols = {c.name: c for c in prev.columns} if prev else {}
        columns: list[Column] = []
        convs: list[Converter | None] = []
        for _key, name, typoid, typmod in cols:
            ctype, conv = self._resolver.resolve(typoid, typmod, str(table), name)
            if ctype.kind is Kind.ENUM:
                conv = checked(conv, ctype, self._tolerated)
            old = prev_cols.get(name)
            if old is not None and not old.nullable and name in relaxed:
                old = Column(name, old.type, nullable=True)  # DROP NOT NULL at the source
            if old is not None and old.type.kind is ctype.kind and (
                old.type == ctype or (ctype.array_dims == 1 and old.type.array_dims > 1
                                      and old.type.element() == ctype.element())
            ):  # fmt: skip
                # Same column as known: keep nullability and array dims from the catalog,
                # which the Relation message does not carry.
                columns.append(old)
            elif old is not None and old.type.kind is Kind.ENUM is ctype.kind:
                # Labels added: the catalog's nullability and array dims still hold.
                dims = old.type.array_dims if ctype.array_dims else 0
                columns.append(
                    Column(name, dataclasses.replace(ctype, array_dims=dims), old.nullable)
                )
            else:
                columns.append(Column(name, ctype, nullable=True))
            convs.append(conv)
        flagged = [name for key, name, _, _ in cols if key]
        if replident == "f":
            # REPLICA IDENTITY FULL flags every column; the key is the primary key we know.
            key = prev.key if prev and all(k in prev_cols for k in prev.key) else ()
        elif prev is not None and set(flagged) == set(prev.key):
            key = prev.key  # keep the primary key's column order
        else:
            key = tuple(flagged)
        if not key:
            raise NoKeyError(
                f"table {table} has no primary key or replica identity index any more "
                f"(replica identity {replident!r}); restore one, e.g. "
                f"ALTER TABLE {table} REPLICA IDENTITY DEFAULT;"
            )
        schema = TableSchema(table, tuple(columns), key)
        if prev is not None and prev == schema:
            schema = prev  # same object: consumers can skip re-checking an unchanged schema
        return schema, tuple(convs)

    # -- row changes -----------------------------------------------------------------------

    def _rel(self, relid: int) -> _Rel:
        rel = self._rels.get(relid)
        if rel is None:
            raise PermanentError(f"pgoutput sent a change for unknown relation oid {relid}")
        return rel

    def _tuple(self, data: bytes, pos: int, rel: _Rel) -> tuple[tuple[object, ...], int]:
        # The hottest loop of the daemon (once per column of every row): locals only.
        (n,) = _U16(data, pos)
        if n != rel.ncols:
            raise PermanentError(f"{rel.table}: tuple has {n} columns, relation {rel.ncols}")
        start = pos
        pos += 2
        out: list[object] = []
        append = out.append
        u32 = _U32
        try:
            for conv in rel.convs:
                kind = data[pos]
                if kind == _T:
                    end = pos + 5 + u32(data, pos + 1)[0]
                    if conv is None:
                        append(data[pos + 5 : end].decode())
                    else:
                        append(conv(data[pos + 5 : end].decode()))
                    pos = end
                elif kind == _N:
                    append(None)
                    pos += 1
                elif kind == _U:
                    append(UNCHANGED)
                    pos += 1
                else:
                    raise PermanentError(f"{rel.table}: unsupported tuple data kind {kind!r}")
        except (ValueError, ArithmeticError):
            return self._checked_tuple(data, start, rel)
        except NewLabel as e:
            self._relearn(rel, e.label)
            return self._tuple(data, start, rel)
        return tuple(out), pos

    def _checked_tuple(self, data: bytes, pos: int, rel: _Rel) -> tuple[tuple[object, ...], int]:
        """The slow path of :meth:`_tuple` for a value Python cannot hold (timestamp
        'infinity', year > 9999): it is None and ``_problem`` names its column (the record
        is refused later, by ``on_error``)."""
        assert rel.schema is not None
        start = pos
        pos += 2
        out: list[object] = []
        for i, conv in enumerate(rel.convs):
            kind = data[pos]
            if kind == _T:
                end = pos + 5 + _U32(data, pos + 1)[0]
                try:
                    text = data[pos + 5 : end].decode()
                    out.append(text if conv is None else conv(text))
                except NewLabel as e:
                    self._relearn(rel, e.label)
                    return self._checked_tuple(data, start, rel)
                except (ValueError, ArithmeticError):  # UnicodeDecodeError is a ValueError
                    out.append(None)
                    if self._problem is None:
                        self._problem = unrepresentable(rel.table, rel.schema.columns[i])
                pos = end
            elif kind in (_N, _U):
                out.append(None if kind == _N else UNCHANGED)
                pos += 1
            else:
                raise PermanentError(f"{rel.table}: unsupported tuple data kind {kind!r}")
        return tuple(out), pos

    def _old(
        self, before: tuple[object, ...], rel: _Rel
    ) -> tuple[tuple[object, ...], bool, RowProblem | None]:
        """An old row with an undecodable value: its key is all a change needs from it
        (a DELETE, an UPDATE that fixes the value), unless the key is what failed."""
        problem, self._problem = self._problem, None
        assert problem is not None and rel.schema is not None
        keys = rel.schema.key_indexes
        if any(before[k] is None for k in keys):
            return before, False, problem
        return tuple(v if i in keys else None for i, v in enumerate(before)), True, None

    def _insert(self, data: bytes, wal_start: int) -> Sequence[SourceEvent]:
        rel = self._rel(_U32(data, 1)[0])
        if rel.ignored or self._drop:
            return _NONE
        if data[5] != _NEW:
            raise PermanentError(f"{rel.table}: malformed INSERT message")
        after, _ = self._tuple(data, 6, rel)
        self._rows += 1
        assert rel.schema is not None
        problem, self._problem = self._problem, None
        return (
            ChangeRecord(Op.INSERT, rel.table, rel.schema, None, after, PgLsn(wal_start),
                         self._xid, self._commit_time, problem=problem),
        )  # fmt: skip

    def _update(self, data: bytes, wal_start: int) -> Sequence[SourceEvent]:
        rel = self._rel(_U32(data, 1)[0])
        if rel.ignored or self._drop:
            return _NONE
        pos, before, key_only, problem = 5, None, False, None
        marker = data[pos]
        if marker in (_KEY, _OLD):
            before, pos = self._tuple(data, pos + 1, rel)
            key_only = marker == _KEY
            if self._problem is not None:
                before, key_only, problem = self._old(before, rel)
            marker = data[pos]
        if marker != _NEW:
            raise PermanentError(f"{rel.table}: malformed UPDATE message")
        after, _ = self._tuple(data, pos + 1, rel)
        self._rows += 1
        assert rel.schema is not None
        problem, self._problem = problem or self._problem, None
        return (
            ChangeRecord(Op.UPDATE, rel.table, rel.schema, before, after, PgLsn(wal_start),
                         self._xid, self._commit_time, key_only, problem=problem),
        )  # fmt: skip

    def _delete(self, data: bytes, wal_start: int) -> Sequence[SourceEvent]:
        rel = self._rel(_U32(data, 1)[0])
        if rel.ignored or self._drop:
            return _NONE
        marker = data[5]
        if marker not in (_KEY, _OLD):
            raise PermanentError(f"{rel.table}: malformed DELETE message")
        before, _ = self._tuple(data, 6, rel)
        key_only, problem = marker == _KEY, None
        if self._problem is not None:
            before, key_only, problem = self._old(before, rel)
        self._rows += 1
        assert rel.schema is not None
        return (
            ChangeRecord(Op.DELETE, rel.table, rel.schema, before, None, PgLsn(wal_start),
                         self._xid, self._commit_time, key_only, problem=problem),
        )  # fmt: skip

    def _truncate(self, data: bytes, wal_start: int) -> Sequence[SourceEvent]:
        (nrels,) = _U32(data, 1)
        # data[5] holds options (CASCADE / RESTART IDENTITY): the target decides for itself
        if self._drop:
            return _NONE
        out: list[SourceEvent] = []
        for i in range(nrels):
            rel = self._rel(_U32(data, 6 + 4 * i)[0])
            if rel.ignored:
                continue
            assert rel.schema is not None
            self._rows += 1
            out.append(
                ChangeRecord(Op.TRUNCATE, rel.table, rel.schema, None, None, PgLsn(wal_start),
                             self._xid, self._commit_time)
            )  # fmt: skip
        return out
