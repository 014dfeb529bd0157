"""Binlog events → transaction boundaries, change records and heartbeats."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime
from typing import Any, cast

from pymysqlreplication.event import GtidEvent, HeartbeatLogEvent, QueryEvent, RotateEvent

from cdc_sync.errors import PermanentError
from cdc_sync.records import (
    BinlogPosition,
    ChangeRecord,
    Heartbeat,
    Idle,
    Op,
    Position,
    RowProblem,
    SourceEvent,
    TableId,
    TableSchema,
    TxBegin,
    TxCommit,
)
from cdc_sync.sources.mysql.columns import build_schema, key_from_table_map, specs_from_table_map
from cdc_sync.sources.mysql.ddl_names import tables_gone
from cdc_sync.sources.mysql.events import DeleteRows, MariaGtid, UpdateRows, WriteRows, Xid
from cdc_sync.sources.mysql.gtids import GtidState
from cdc_sync.sources.mysql.rows import RowDecoder
from cdc_sync.sources.mysql.tablemap import CachedTableMapEvent

_IDLE = Idle()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TRUNCATE = re.compile(
    r"^\s*truncate\s+(?:table\s+)?(?:`((?:[^`]|``)+)`|(\w+))(?:\.(?:`((?:[^`]|``)+)`|(\w+)))?\s*$",
    re.IGNORECASE,
)
EMPTY_COMMIT_SECONDS = 10.0
"""At most this often a transaction without rows for our tables is passed on as an empty
transaction (so the checkpoint keeps up with a binlog busy with other tables and the stored
position is not purged away); in between such transactions only produce Heartbeats."""
# Logged inside a transaction (ORMs' nested transactions), never the end of one: the rows
# rolled back to a savepoint are not in the binlog, the rows around it are.
_SAVEPOINT = re.compile(r"^(SAVEPOINT|RELEASE\s+SAVEPOINT|ROLLBACK\s+(WORK\s+)?TO)\b")


class _Tx:
    __slots__ = ("begun", "gtid", "rows", "skip", "time", "xid")

    def __init__(self, xid: str, gtid: str, when: datetime, skip: bool) -> None:
        self.xid, self.gtid, self.time, self.skip = xid, gtid, when, skip
        self.begun, self.rows = False, 0


class _TableVersion:
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


class BinlogDecoder:
    """Stateful: tracks the binlog file, open transaction, GTID state and table versions.

    ``resume_after`` is the checkpoint: a transaction at or before it is read but not
    emitted (GTID comparison when ``gtid`` tracks state, else file:pos).

    Two-way loop prevention: ``marker`` is the origin marker table (see
    ``cdc_sync.sinks.sql.origin``), whose row a tagging pipeline writes first in each of its
    transactions. Its rows are never emitted; once one names an origin in ``skip_origins``
    the rest of the transaction's rows are dropped, and the transaction is still passed on
    (TxBegin, TxCommit counting the rows emitted) so checkpoints advance as before.
    """

    def __init__(
        self,
        tables: Collection[TableId],
        start: BinlogPosition,
        gtid: GtidState | None,
        resume_after: BinlogPosition | None,
        json_columns: Callable[[TableId], set[str]],
        *,
        marker: TableId | None = None,
        skip_origins: frozenset[str] = frozenset(),
        tinyint1_columns: Callable[[TableId], set[str]] | None = None,
    ) -> None:
        self._tables = frozenset(tables)  # the tables whose rows are emitted
        # Called when a DDL statement renames or drops one of them (the source decides
        # whether that stops the pipeline: the table may exist again by now).
        self.on_table_gone: Callable[[TableId, str, Position], None] | None = None
        self._marker, self._skip_origins = marker, skip_origins
        self._mapped = (self._tables | {marker}) if marker else self._tables
        self.file, self.pos = start.file, start.pos
        self._gtid = gtid
        self._resume = resume_after
        self._resume_gtid = type(gtid)(resume_after.gtid) if gtid and resume_after else None
        self._json_columns = json_columns
        self._maps: dict[int, Any] = {}  # table id -> latest TableMapEvent of ours
        self._versions: dict[int, _TableVersion] = {}  # id(table_obj) -> version
        self._latest: dict[TableId, TableSchema] = {}
        self._json: dict[TableId, tuple[tuple[str, ...], set[str]]] = {}
        self._tinyint1_columns = tinyint1_columns
        self._tiny: dict[TableId, tuple[tuple[str, ...], set[str]]] = {}
        self._tx: _Tx | None = None
        self._last_empty = 0.0
        self._when_ts, self._when = -1, _EPOCH

    @property
    def in_transaction(self) -> bool:
        return self._tx is not None

    def position(self) -> BinlogPosition:
        return BinlogPosition(self.file, self.pos, self._gtid.text() if self._gtid else "")

    def known_schemas(self, schemas: dict[TableId, TableSchema]) -> None:
        """Schemas from prepare(): an equal table map reuses these objects."""
        self._latest.update(schemas)

    # -- dispatch ---------------------------------------------------------------------------

    def feed(self, ev: Any, log_file: str) -> Iterator[SourceEvent]:
        """A library-parsed event (the slow path: rare event types, table-map misses)."""
        cls = type(ev)
        if cls is WriteRows or cls is UpdateRows or cls is DeleteRows:
            self.pos = ev.packet.log_pos
            yield from self._rows(ev)
            return
        if cls is CachedTableMapEvent:
            self.pos = ev.packet.log_pos
            self.table_map(ev)
            return
        if cls is Xid:
            yield from self.xid(log_file, ev.packet.log_pos)
        elif cls is MariaGtid or cls is GtidEvent:
            self.gtid_event(ev.gtid, ev.timestamp, log_file, ev.packet.log_pos)
        elif cls is QueryEvent:
            yield from self.query(ev.query, ev.schema, ev.timestamp, log_file, ev.packet.log_pos)
        elif cls is HeartbeatLogEvent:
            yield _IDLE
            if self._tx is None and ev.packet.log_pos:
                self.file, self.pos = ev.ident, max(self.pos, ev.packet.log_pos)
                yield Heartbeat(self.position())
        elif cls is RotateEvent:
            new = BinlogPosition(ev.next_binlog, ev.position)
            if new > BinlogPosition(self.file, self.pos):
                self.file, self.pos = ev.next_binlog, ev.position
            # Table ids are per server run and the server rotates on restart: forget them.
            self._maps.clear()
            if self._tx is None:
                yield Heartbeat(self.position())

    # -- the fast path: fields parsed from the raw packet by :mod:`wire` -----------------------

    def table_map(self, tm: Any) -> bool:
        """Remember a table map of one of our tables (``False``: not ours)."""
        if TableId(tm.schema, tm.table) in self._mapped:
            self._maps[tm.table_id] = tm
            return True
        return False

    def gtid_event(self, gtid: str, timestamp: int, log_file: str, log_pos: int) -> None:
        self.file, self.pos = log_file, log_pos
        self._begin(timestamp, gtid)

    def xid(self, log_file: str, log_pos: int) -> list[SourceEvent]:
        self.file, self.pos = log_file, log_pos
        return self._commit()

    def query(
        self, query: str, schema: Any, timestamp: int, log_file: str, log_pos: int
    ) -> list[SourceEvent]:
        self.file, self.pos = log_file, log_pos
        return self._query(query, schema, timestamp)

    # -- transactions -----------------------------------------------------------------------

    def _begin(self, timestamp: int, gtid: str) -> None:
        if timestamp != self._when_ts:  # consecutive transactions mostly share a second
            self._when_ts, self._when = timestamp, datetime.fromtimestamp(timestamp, UTC)
        if self._resume_gtid is not None and gtid:
            skip = self._resume_gtid.seen(gtid)
        elif self._resume_gtid is not None:
            # A group without a GTID (not written by a GTID server) is compared by position.
            skip = self._resume is not None and self.position() <= self._resume
        else:
            skip = self._resume is not None and self.position() <= self._resume
        xid = gtid or f"{self.file}:{self.pos}"
        self._tx = _Tx(xid, gtid, self._when, skip)

    def _query(self, query: str, schema: Any, timestamp: int) -> list[SourceEvent]:
        q = query.strip().upper()
        if q == "BEGIN":
            if self._tx is None:  # MySQL without GTIDs: BEGIN opens the transaction
                self._begin(timestamp, "")
            return []
        if q in ("COMMIT", "ROLLBACK") and self._tx is not None:
            # Non-transactional engines end their group with a query: their rows happened.
            return self._commit()
        if self._tx is not None and _SAVEPOINT.match(q):
            return []
        if self._tx is None:
            self._begin(timestamp, "")
        tx = self._tx
        assert tx is not None
        out: list[SourceEvent] = []
        m = _TRUNCATE.match(query)
        if m and not tx.skip:
            out += self._truncate(schema, m, tx)
        elif self.on_table_gone is not None and q.startswith(("RENAME", "ALTER", "DROP")):
            default = schema.decode() if isinstance(schema, bytes) else str(schema)
            for table, what in tables_gone(query, default):
                if table in self._tables:
                    self.on_table_gone(table, what, self.position())
        return out + self._commit()

    def _truncate(self, schema_raw: Any, m: re.Match[str], tx: _Tx) -> list[SourceEvent]:
        first = (m.group(1) or "").replace("``", "`") or m.group(2)
        second = (m.group(3) or "").replace("``", "`") or m.group(4)
        default = schema_raw.decode() if isinstance(schema_raw, bytes) else str(schema_raw)
        table = TableId(first, second) if second else TableId(default, first)
        schema = self._latest.get(table)
        if table not in self._tables or schema is None:
            return []
        out = self._open(tx)
        tx.rows += 1
        pos = self.position()
        out.append(ChangeRecord(Op.TRUNCATE, table, schema, None, None, pos, tx.xid, tx.time))
        return out

    def _open(self, tx: _Tx) -> list[SourceEvent]:
        if tx.begun:
            return []
        tx.begun = True
        if tx.gtid and self._gtid is not None:
            self._gtid.add(tx.gtid)  # positions inside carry the state after this tx
            tx.gtid = ""
        return [TxBegin(tx.xid, tx.time, self.position())]

    def _commit(self) -> list[SourceEvent]:
        tx, self._tx = self._tx, None
        if tx is None:
            return [Heartbeat(self.position())]
        if tx.gtid and self._gtid is not None:
            self._gtid.add(tx.gtid)
        end = self.position()
        if tx.begun:
            return [TxCommit(tx.xid, tx.time, end, tx.rows)]
        now = time.monotonic()
        if not tx.skip and now - self._last_empty >= EMPTY_COMMIT_SECONDS:
            self._last_empty = now
            return [TxBegin(tx.xid, tx.time, end), TxCommit(tx.xid, tx.time, end, 0)]
        return [Heartbeat(end)]

    # -- rows -------------------------------------------------------------------------------

    def _version(self, tm: Any) -> _TableVersion:
        table = TableId(tm.schema, tm.table)
        if table == self._marker:
            return self._marker_version(tm, table)
        json = self._asked(table, tm, 252, self._json_columns, self._json)
        tiny = self._asked(table, tm, 1, self._tinyint1_columns, self._tiny)
        specs = specs_from_table_map(tm, json, tiny)
        schema = build_schema(table, specs, key_from_table_map(tm))
        old = self._latest.get(table)
        if old is not None and old == schema:
            schema = old  # same definition: keep the object, the runtime compares identity
        self._latest[table] = schema
        if len(self._versions) > 1024:
            self._versions.clear()
        v = self._versions[id(tm.table_obj)] = _TableVersion(
            tm.table_obj, schema, RowDecoder(table, specs)
        )
        return v

    def _marker_version(self, tm: Any, table: TableId) -> _TableVersion:
        specs = specs_from_table_map(tm, ())
        names = [s.name for s in specs]
        if "origin" not in names:
            raise PermanentError(
                f"the origin marker table {table} has no column 'origin'; drop it and let "
                "the pipeline writing into this database create it again"
            )
        at = names.index("origin")
        schema = build_schema(table, specs, (names[at],))
        v = self._versions[id(tm.table_obj)] = _TableVersion(
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

    def _rows(self, ev: Any) -> Iterator[SourceEvent]:
        bitmap2 = ev.columns_present_bitmap2 if type(ev) is UpdateRows else None
        out = self.rows(
            _KIND[type(ev)], ev.table_id, ev.number_of_columns, ev.columns_present_bitmap,
            bitmap2, ev.body, ev.packet.log_pos,
        )  # fmt: skip
        if out:
            yield from out

    def rows(  # noqa: PLR0917 (the hot path: positional on purpose)
        self,
        kind: int,
        table_id: int,
        ncols: int,
        bitmap: bytes,
        bitmap2: bytes | None,
        body: Callable[[], bytes],
        log_pos: int,
    ) -> list[SourceEvent] | None:
        """A rows event: ``kind`` 0 write, 1 update, 2 delete; ``body()`` the row images."""
        self.pos = log_pos
        tx = self._tx
        tm = self._maps.get(table_id)
        if tm is None or tx is None or tx.skip:
            return None
        v = self._versions.get(id(tm.table_obj))
        if v is None or v.table_obj is not tm.table_obj:
            v = self._version(tm)
        dec, schema, table = v.decoder, v.schema, v.schema.table
        full = dec.full_mask
        if ncols != len(dec.specs) or _mask(bitmap) != full:
            raise _not_full(table)
        if bitmap2 is not None and _mask(bitmap2) != full:
            raise _not_full(table)
        if (at := v.origin_at) is not None:
            return self._marker_rows(dec, at, tx, kind, body)
        data = body()
        pos: Position
        if tx.begun:
            out: list[SourceEvent] = []
            pos = BinlogPosition(self.file, self.pos, self._gtid.text() if self._gtid else "")
        else:
            out = self._open(tx)
            pos = cast(TxBegin, out[0]).final_position  # one position object for both
        xid, when = tx.xid, tx.time
        n = len(out)
        # tuple.__new__ with all eleven fields: NamedTuple's own __new__ is a Python call,
        # ~40 % of building a record (one per row change; fields checked at import below).
        cr = ChangeRecord
        if kind == 0:
            out += [
                _new(cr, (_INSERT, table, schema, None, r, pos, xid, when, False, (), None))
                for r in dec.rows(data)
            ]
        elif kind == 2:
            out += [
                _new(cr, (_DELETE, table, schema, r, None, pos, xid, when, False, (), None))
                for r in dec.rows(data)
            ]
        else:
            out += [
                _new(cr, (_UPDATE, table, schema, b, a, pos, xid, when, False, (), None))
                for b, a in dec.pairs(data)
            ]
        if dec.problems:
            _with_problems(out, n, kind, dec.problems, schema)
        tx.rows += len(out) - n
        return out

    def _marker_rows(
        self, dec: RowDecoder, at: int, tx: _Tx, kind: int, body: Callable[[], bytes]
    ) -> list[SourceEvent] | None:
        """A rows event of the origin marker table: never emitted; an origin to skip drops
        the rest of the transaction (``tx.skip``), which is opened here so that its
        TxBegin / TxCommit still go out."""
        if kind == 2 or not self._skip_origins:
            return None
        data = body()
        images = dec.rows(data) if kind == 0 else [a for _, a in dec.pairs(data)]
        if not any(r[at] in self._skip_origins for r in images):
            return None
        out = self._open(tx)
        tx.skip = True
        return out


_KIND: dict[type, int] = {WriteRows: 0, UpdateRows: 1, DeleteRows: 2}
_INSERT, _UPDATE, _DELETE = Op.INSERT, Op.UPDATE, Op.DELETE
_new = tuple.__new__
if ChangeRecord._fields != (
    "op", "table", "schema", "before", "after", "position", "xid", "commit_time",
    "before_is_key_only", "changed", "problem",
):  # fmt: skip
    raise AssertionError("ChangeRecord's fields changed: update BinlogDecoder.rows")


def _with_problems(
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


def _mask(bitmap: bytes) -> int:
    return int.from_bytes(bitmap, "little")


def _not_full(table: TableId) -> PermanentError:
    return PermanentError(
        f"table {table}: a rows event lacks columns; set binlog_row_image = FULL "
        "(SET GLOBAL binlog_row_image = 'FULL'; and in my.cnf)"
    )
