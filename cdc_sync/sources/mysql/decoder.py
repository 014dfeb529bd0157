"""Binlog events → transaction boundaries, change records and heartbeats."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime
from typing import Any

from pymysqlreplication.event import GtidEvent, HeartbeatLogEvent, QueryEvent, RotateEvent

from cdc_sync.errors import PermanentError
from cdc_sync.records import (
    BinlogPosition,
    ChangeRecord,
    Heartbeat,
    Idle,
    Op,
    SourceEvent,
    TableId,
    TableSchema,
    TxBegin,
    TxCommit,
)
from cdc_sync.sources.mysql.columns import build_schema, key_from_table_map, specs_from_table_map
from cdc_sync.sources.mysql.events import DeleteRows, MariaGtid, UpdateRows, WriteRows, Xid
from cdc_sync.sources.mysql.gtids import GtidState
from cdc_sync.sources.mysql.rows import RowDecoder
from cdc_sync.sources.mysql.tablemap import CachedTableMapEvent

_IDLE = Idle()
_TRUNCATE = re.compile(
    r"^\s*truncate\s+(?:table\s+)?(?:`((?:[^`]|``)+)`|(\w+))(?:\.(?:`((?:[^`]|``)+)`|(\w+)))?\s*$",
    re.IGNORECASE,
)
EMPTY_COMMIT_SECONDS = 10.0
"""At most this often a transaction without rows for our tables is passed on as an empty
transaction (so the checkpoint keeps up with a binlog busy with other tables and the stored
position is not purged away); in between such transactions only produce Heartbeats."""


class _Tx:
    __slots__ = ("begun", "gtid", "rows", "skip", "time", "xid")

    def __init__(self, xid: str, gtid: str, when: datetime, skip: bool) -> None:
        self.xid, self.gtid, self.time, self.skip = xid, gtid, when, skip
        self.begun, self.rows = False, 0


class _TableVersion:
    """One table-map version of a configured table: its schema and row decoder."""

    __slots__ = ("decoder", "schema", "table_obj")

    def __init__(self, table_obj: Any, schema: TableSchema, decoder: RowDecoder) -> None:
        self.table_obj, self.schema, self.decoder = table_obj, schema, decoder


class BinlogDecoder:
    """Stateful: tracks the binlog file, open transaction, GTID state and table versions.

    ``resume_after`` is the checkpoint: a transaction at or before it is read but not
    emitted (GTID comparison when ``gtid`` tracks state, else file:pos).
    """

    def __init__(
        self,
        tables: Collection[TableId],
        start: BinlogPosition,
        gtid: GtidState | None,
        resume_after: BinlogPosition | None,
        json_columns: Callable[[TableId], set[str]],
    ) -> None:
        self._tables = frozenset(tables)
        self.file, self.pos = start.file, start.pos
        self._gtid = gtid
        self._resume = resume_after
        self._resume_gtid = type(gtid)(resume_after.gtid) if gtid and resume_after else None
        self._json_columns = json_columns
        self._maps: dict[int, Any] = {}  # table id -> latest TableMapEvent of ours
        self._versions: dict[int, _TableVersion] = {}  # id(table_obj) -> version
        self._latest: dict[TableId, TableSchema] = {}
        self._json: dict[TableId, tuple[tuple[str, ...], set[str]]] = {}
        self._tx: _Tx | None = None
        self._last_empty = 0.0

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
        cls = type(ev)
        if cls is WriteRows or cls is UpdateRows or cls is DeleteRows:
            self.pos = ev.packet.log_pos
            yield from self._rows(ev)
            return
        if cls is CachedTableMapEvent:
            self.pos = ev.packet.log_pos
            if TableId(ev.schema, ev.table) in self._tables:
                self._maps[ev.table_id] = ev
            return
        if cls is Xid:
            self.file, self.pos = log_file, ev.packet.log_pos
            yield from self._commit()
        elif cls is MariaGtid or cls is GtidEvent:
            self.file, self.pos = log_file, ev.packet.log_pos
            self._begin(ev, ev.gtid)
        elif cls is QueryEvent:
            self.file, self.pos = log_file, ev.packet.log_pos
            yield from self._query(ev)
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

    # -- transactions -----------------------------------------------------------------------

    def _begin(self, ev: Any, gtid: str) -> None:
        when = datetime.fromtimestamp(ev.timestamp, UTC)
        if self._resume_gtid is not None:
            skip = self._resume_gtid.seen(gtid)
        else:
            skip = self._resume is not None and self.position() <= self._resume
        xid = gtid or f"{self.file}:{self.pos}"
        self._tx = _Tx(xid, gtid, when, skip)

    def _query(self, ev: Any) -> Iterator[SourceEvent]:
        q = ev.query.strip().upper()
        if q == "BEGIN":
            if self._tx is None:  # MySQL without GTIDs: BEGIN opens the transaction
                self._begin(ev, "")
            return
        if q in ("COMMIT", "ROLLBACK") and self._tx is not None:
            # Non-transactional engines end their group with a query: their rows happened.
            yield from self._commit()
            return
        if self._tx is None:
            self._begin(ev, "")
        tx = self._tx
        assert tx is not None
        m = _TRUNCATE.match(ev.query)
        if m and not tx.skip:
            yield from self._truncate(ev, m, tx)
        yield from self._commit()

    def _truncate(self, ev: Any, m: re.Match[str], tx: _Tx) -> Iterator[SourceEvent]:
        first = (m.group(1) or "").replace("``", "`") or m.group(2)
        second = (m.group(3) or "").replace("``", "`") or m.group(4)
        schema_raw = ev.schema.decode() if isinstance(ev.schema, bytes) else str(ev.schema)
        table = TableId(first, second) if second else TableId(schema_raw, first)
        schema = self._latest.get(table)
        if table not in self._tables or schema is None:
            return
        yield from self._open(tx)
        tx.rows += 1
        pos = self.position()
        yield ChangeRecord(Op.TRUNCATE, table, schema, None, None, pos, tx.xid, tx.time)

    def _open(self, tx: _Tx) -> Iterator[SourceEvent]:
        if not tx.begun:
            tx.begun = True
            if tx.gtid and self._gtid is not None:
                self._gtid.add(tx.gtid)  # positions inside carry the state after this tx
                tx.gtid = ""
            yield TxBegin(tx.xid, tx.time, self.position())

    def _commit(self) -> Iterator[SourceEvent]:
        tx, self._tx = self._tx, None
        if tx is None:
            yield Heartbeat(self.position())
            return
        if tx.gtid and self._gtid is not None:
            self._gtid.add(tx.gtid)
        end = self.position()
        if tx.begun:
            yield TxCommit(tx.xid, tx.time, end, tx.rows)
            return
        now = time.monotonic()
        if not tx.skip and now - self._last_empty >= EMPTY_COMMIT_SECONDS:
            self._last_empty = now
            yield TxBegin(tx.xid, tx.time, end)
            yield TxCommit(tx.xid, tx.time, end, 0)
        else:
            yield Heartbeat(end)

    # -- rows -------------------------------------------------------------------------------

    def _version(self, tm: Any) -> _TableVersion:
        v = self._versions.get(id(tm.table_obj))
        if v is not None and v.table_obj is tm.table_obj:
            return v
        table = TableId(tm.schema, tm.table)
        specs = specs_from_table_map(tm, self._json_for(table, tm))
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

    def _json_for(self, table: TableId, tm: Any) -> set[str]:
        """MariaDB JSON columns of a table, asked again only when its LONGTEXT columns change."""
        lobs = tuple(c.name for c in tm.columns if c.type == 252)
        if not lobs:
            return set()
        known = self._json.get(table)
        if known is None or known[0] != lobs:
            known = self._json[table] = (lobs, self._json_columns(table))
        return known[1]

    def _rows(self, ev: Any) -> Iterator[SourceEvent]:
        tx = self._tx
        tm = self._maps.get(ev.table_id)
        if tm is None or tx is None or tx.skip:
            return
        v = self._version(tm)
        dec, schema, table = v.decoder, v.schema, v.schema.table
        if ev.number_of_columns != len(dec.specs) or _mask(ev.columns_present_bitmap) != (
            dec.full_mask
        ):
            raise _not_full(table)
        data = ev.body()
        yield from self._open(tx)
        pos = BinlogPosition(self.file, self.pos, self._gtid.text() if self._gtid else "")
        xid, when = tx.xid, tx.time
        if type(ev) is WriteRows:
            out = [
                ChangeRecord(Op.INSERT, table, schema, None, r, pos, xid, when)
                for r in dec.rows(data)
            ]
        elif type(ev) is DeleteRows:
            out = [
                ChangeRecord(Op.DELETE, table, schema, r, None, pos, xid, when)
                for r in dec.rows(data)
            ]
        else:
            if _mask(ev.columns_present_bitmap2) != dec.full_mask:
                raise _not_full(table)
            out = [
                ChangeRecord(Op.UPDATE, table, schema, b, a, pos, xid, when)
                for b, a in dec.pairs(data)
            ]
        tx.rows += len(out)
        yield from out


def _mask(bitmap: bytes) -> int:
    return int.from_bytes(bitmap, "little")


def _not_full(table: TableId) -> PermanentError:
    return PermanentError(
        f"table {table}: a rows event lacks columns; set binlog_row_image = FULL "
        "(SET GLOBAL binlog_row_image = 'FULL'; and in my.cnf)"
    )
