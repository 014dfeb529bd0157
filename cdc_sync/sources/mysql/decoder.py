"""Binlog events → transaction boundaries, change records and heartbeats."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime
from typing import Any, cast

from pymysqlreplication.event import GtidEvent, HeartbeatLogEvent, QueryEvent, RotateEvent

from cdc_sync.records import (
    BinlogPosition,
    ChangeRecord,
    Heartbeat,
    Idle,
    Op,
    Position,
    SourceEvent,
    TableId,
    TableSchema,
    TxBegin,
    TxCommit,
)
from cdc_sync.sources.mysql import xa
from cdc_sync.sources.mysql.ddl_names import ddl_effects
from cdc_sync.sources.mysql.events import (
    DeleteRows,
    MariaGtid,
    UpdateRows,
    WriteRows,
    XaPrepare,
    Xid,
)
from cdc_sync.sources.mysql.gtids import GtidState
from cdc_sync.sources.mysql.rows import RowDecoder
from cdc_sync.sources.mysql.tablemap import CachedTableMapEvent
from cdc_sync.sources.mysql.versions import TableVersions, mask, not_full, with_problems

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
    __slots__ = ("begun", "gtid", "held", "rows", "skip", "time", "xid")

    def __init__(self, xid: str, gtid: str, when: datetime, skip: bool) -> None:
        self.xid, self.gtid, self.time, self.skip = xid, gtid, when, skip
        self.begun, self.rows = False, 0
        # An XA PREPARE group (see xa): its records, held back until its XA COMMIT.
        self.held: list[ChangeRecord] | None = None


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
        self._config = (tables, json_columns, marker, skip_origins, tinyint1_columns)
        # Called when a DDL statement renames or drops one of them, or declares a foreign
        # key on it (the source decides whether that stops the pipeline: the table may
        # exist again by now, the key's actions may be logged ones).
        self.on_ddl: Callable[[TableId, str, Position], None] | None = None
        self._marker, self._skip_origins = marker, skip_origins
        self._mapped = (self._tables | {marker}) if marker else self._tables
        self.file, self.pos = start.file, start.pos
        self._gtid = gtid
        self._resume = resume_after
        self._resume_gtid = type(gtid)(resume_after.gtid) if gtid and resume_after else None
        self._maps: dict[int, Any] = {}  # table id -> latest TableMapEvent of ours
        self._tv = TableVersions(marker, json_columns, tinyint1_columns)
        self._versions = self._tv.by_object
        self._latest = self._tv.latest
        self._tx: _Tx | None = None
        self._prepared: dict[str, list[ChangeRecord]] = {}  # XA PREPAREd, by XID
        # Reads the records of an XA transaction whose PREPARE lies before this stream's
        # start (see xa_lookback); without it such an XA COMMIT stops the stream.
        self.on_prepared_missing: Callable[[str, BinlogPosition], list[ChangeRecord]] | None
        self.on_prepared_missing = None
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

    def sibling(self, start: BinlogPosition) -> BinlogDecoder:
        """A decoder of the same tables reading from ``start``, without GTID state or
        checkpoint: it re-reads an XA PREPARE group for :mod:`xa_lookback`."""
        tables, json_columns, marker, skip_origins, tiny = self._config
        out = BinlogDecoder(
            tables, start, None, None, json_columns,
            marker=marker, skip_origins=skip_origins, tinyint1_columns=tiny,
        )  # fmt: skip
        out.known_schemas(self._latest)
        return out

    def prepared(self, xid: str) -> list[ChangeRecord] | None:
        """The held records of the XA transaction ``xid`` if its PREPARE was read."""
        return self._prepared.get(xid)

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
            xa_group = getattr(ev, "xa", False)  # MySQL marks it with an XA START query
            self.gtid_event(ev.gtid, ev.timestamp, log_file, ev.packet.log_pos, xa_group)
        elif cls is XaPrepare:
            self.file, self.pos = log_file, ev.packet.log_pos
            yield from self._xa_prepared(ev.xid, ev.one_phase, ev.timestamp)
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

    def gtid_event(
        self, gtid: str, timestamp: int, log_file: str, log_pos: int, xa_group: bool = False
    ) -> None:
        """``xa_group``: MariaDB's flag for a group that ends in XA PREPARE."""
        self.file, self.pos = log_file, log_pos
        self._begin(timestamp, gtid)
        if xa_group:
            self._xa_start()

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
        if q.startswith("XA") and (stmt := xa.statement(q)) is not None:
            return self._xa(*stmt, timestamp)
        if self._tx is None:
            self._begin(timestamp, "")
        tx = self._tx
        assert tx is not None
        out: list[SourceEvent] = []
        m = _TRUNCATE.match(query)
        if m and not tx.skip:
            out += self._truncate(schema, m, tx)
        elif self.on_ddl is not None and q.startswith(("RENAME", "ALTER", "DROP", "CREATE")):
            default = schema.decode() if isinstance(schema, bytes) else str(schema)
            for table, what in ddl_effects(query, default):
                if table in self._tables:
                    self.on_ddl(table, what, self.position())
                    if what == "dropped" and not tx.skip:
                        # A table of that name exists again (on_ddl stops otherwise): the
                        # dropped one's rows are gone at the source, as by a TRUNCATE.
                        out += self._emptied(table, tx)
        return out + self._commit()

    def _truncate(self, schema_raw: Any, m: re.Match[str], tx: _Tx) -> list[SourceEvent]:
        first = (m.group(1) or "").replace("``", "`") or m.group(2)
        second = (m.group(3) or "").replace("``", "`") or m.group(4)
        default = schema_raw.decode() if isinstance(schema_raw, bytes) else str(schema_raw)
        table = TableId(first, second) if second else TableId(default, first)
        return self._emptied(table, tx)

    def _emptied(self, table: TableId, tx: _Tx) -> list[SourceEvent]:
        """A TRUNCATE record for a configured table whose rows are all gone."""
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
        if tx.held:  # never happens in the formats seen: XA groups end in XA_PREPARE
            raise xa.unexpected_prepare(self.position())
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

    # -- XA transactions (see xa) -------------------------------------------------------------

    def _xa_start(self) -> None:
        tx = self._tx
        assert tx is not None
        if tx.begun:  # rows went out as an ordinary transaction's
            raise xa.unexpected_prepare(self.position())
        tx.held = []

    def _xa(self, verb: str, xid: str, timestamp: int) -> list[SourceEvent]:
        """An XA statement logged as a query (its group began with a GTID or not)."""
        if verb == "END":
            return []  # inside the PREPARE group, just before its XA_PREPARE event
        if self._tx is None:
            self._begin(timestamp, "")
        tx = self._tx
        assert tx is not None
        if verb in ("START", "BEGIN"):  # MySQL: opens the PREPARE group
            self._xa_start()
            return []
        held = self._prepared.pop(xid, None)
        if verb == "ROLLBACK" or tx.skip:  # never happened / applied before the checkpoint
            return self._commit()
        if held is None:  # prepared before this stream's start
            if self.on_prepared_missing is None:
                raise xa.not_found(xid, self.position(), "no way to read earlier events here")
            held = self.on_prepared_missing(xid, self.position())
        return self._emit_held(tx, held)

    def _xa_prepared(self, xid: str, one_phase: bool, timestamp: int) -> list[SourceEvent]:
        """The XA_PREPARE event ending a PREPARE group: its rows wait for XA COMMIT (MySQL's
        one-phase commit has them committed here)."""
        if self._tx is None:
            self._begin(timestamp, "")
        tx = self._tx
        assert tx is not None
        if tx.held is None and tx.begun and not tx.skip:
            raise xa.unexpected_prepare(self.position())
        held, tx.held = tx.held or [], None
        if one_phase:
            return self._emit_held(tx, held)
        self._prepared[xid] = held
        tx.begun = False  # nothing of it went out: passed on as an empty transaction
        return self._commit()

    def _emit_held(self, tx: _Tx, held: list[ChangeRecord]) -> list[SourceEvent]:
        """The committing group as the transaction of the held records, at its position."""
        if tx.skip or not held:
            tx.begun = False
            return self._commit()
        out = self._open(tx)
        out += xa.restamp(held, tx.xid, tx.time, cast(TxBegin, out[0]).final_position)
        tx.rows += len(held)
        return out + self._commit()

    # -- rows -------------------------------------------------------------------------------

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
        if tm is None or tx is None or (tx.skip and tx.held is None):
            return None  # a skipped XA PREPARE group is read: its COMMIT may come after
        v = self._versions.get(id(tm.table_obj))
        if v is None or v.table_obj is not tm.table_obj:
            v = self._tv.build(tm)
        dec, schema, table = v.decoder, v.schema, v.schema.table
        full = dec.full_mask
        if ncols != len(dec.specs) or mask(bitmap) != full:
            raise not_full(table)
        if bitmap2 is not None and mask(bitmap2) != full:
            raise not_full(table)
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
            with_problems(out, n, kind, dec.problems, schema)
        if tx.held is not None:  # an XA PREPARE group: nothing has happened yet
            tx.held += cast(list[ChangeRecord], out[n:])
            return None
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
        if tx.held is not None:  # an XA PREPARE group: none of its rows are ours to pass on
            tx.held = None
            return None
        return out


_KIND: dict[type, int] = {WriteRows: 0, UpdateRows: 1, DeleteRows: 2}
_INSERT, _UPDATE, _DELETE = Op.INSERT, Op.UPDATE, Op.DELETE
_new = tuple.__new__
if ChangeRecord._fields != (
    "op", "table", "schema", "before", "after", "position", "xid", "commit_time",
    "before_is_key_only", "changed", "problem",
):  # fmt: skip
    raise AssertionError("ChangeRecord's fields changed: update BinlogDecoder.rows")
