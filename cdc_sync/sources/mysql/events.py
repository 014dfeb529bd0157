"""Lean event classes for the per-transaction hot path (rows, XID, MariaDB GTID, XA prepare).

Why: with a single-row statement each row costs four events (GTID, TABLE_MAP, ROWS, XID),
and the library's generic event constructors (status bookkeeping, a dict built per rows event
to find the primary key) measured ~30 µs each. These parse only the fields we use; row images
are left unread for :mod:`rows` to decode. Only readers that list them in ``only_events`` get
them (see :mod:`tablemap`).
"""

from __future__ import annotations

from typing import Any

from pymysqlreplication.constants import BINLOG

_V2 = frozenset(
    {BINLOG.WRITE_ROWS_EVENT_V2, BINLOG.UPDATE_ROWS_EVENT_V2, BINLOG.DELETE_ROWS_EVENT_V2}
)


class _Lean:
    """The attributes the library's reader and our decoder read from every event."""

    def __init__(self, packet: Any, event_size: int) -> None:
        self.packet, self.event_size = packet, event_size
        self.event_type, self.timestamp = packet.event_type, packet.timestamp
        self._processed = True


class RowsEvent(_Lean):
    """Header of a WRITE / UPDATE / DELETE rows event (v1 or v2); images left to decode."""

    def __init__(self, packet: Any, event_size: int, table_map: Any, _ctl: Any, **kw: Any) -> None:
        super().__init__(packet, event_size)
        self.table_id = int.from_bytes(packet.read(6), "little")
        if self.table_id not in table_map:  # its table map was filtered out: not ours
            self._processed = False
            return
        known = 10 if self.event_type in _V2 else 8
        lengths = kw.get("post_header_lengths")
        declared = lengths[self.event_type - 1] if lengths else known
        packet.read(2 + max(0, declared - known))  # flags (+ what a newer server added)
        if self.event_type in _V2:
            extra = int.from_bytes(packet.read(2), "little")
            if extra > 2:
                packet.read(extra - 2)
        n = self.number_of_columns = packet.read_length_coded_binary()
        self.columns_present_bitmap = packet.read((n + 7) // 8)
        self.columns_present_bitmap2 = b""

    def body(self) -> bytes:
        """The row images: everything after the header, up to the checksum."""
        return bytes(self.packet.read(self.event_size - self.packet.read_bytes))


class WriteRows(RowsEvent):
    pass


class DeleteRows(RowsEvent):
    pass


class UpdateRows(RowsEvent):
    def __init__(self, packet: Any, event_size: int, table_map: Any, ctl: Any, **kw: Any) -> None:
        super().__init__(packet, event_size, table_map, ctl, **kw)
        if self._processed:
            self.columns_present_bitmap2 = packet.read((self.number_of_columns + 7) // 8)


class Xid(_Lean):
    def __init__(self, packet: Any, event_size: int, *_: Any, **__: Any) -> None:
        super().__init__(packet, event_size)


class MariaGtid(_Lean):
    def __init__(self, packet: Any, event_size: int, *_: Any, **__: Any) -> None:
        super().__init__(packet, event_size)
        head = packet.read(13)
        seq, domain = int.from_bytes(head[0:8], "little"), int.from_bytes(head[8:12], "little")
        self.flags = head[12]
        self.gtid = f"{domain}-{packet.server_id}-{seq}"
        self.xa = bool(self.flags & FL_PREPARED_XA)


FL_PREPARED_XA = 64
"""MariaDB GTID event flag (flags2): the group ends in XA_PREPARE, not in a commit; the rows
take effect only with a later group's ``XA COMMIT`` (MariaDB ≥ 10.5)."""


class XaPrepare(_Lean):
    """XA_PREPARE_LOG_EVENT: one_phase 1, formatID 4, gtrid length 4, bqual length 4, data.
    ``xid`` is spelled as the server writes it in ``XA COMMIT`` / ``XA ROLLBACK`` queries."""

    def __init__(self, packet: Any, event_size: int, *_: Any, **__: Any) -> None:
        super().__init__(packet, event_size)
        head = packet.read(13)
        self.one_phase = head[0] != 0
        fmt, glen, blen = (int.from_bytes(head[i : i + 4], "little") for i in (1, 5, 9))
        data = packet.read(glen + blen)
        self.xid = xid_text(fmt, data[:glen], data[glen:])


def xid_text(fmt: int, gtrid: bytes, bqual: bytes) -> str:
    """An XID as the binlog's XA queries spell it, upper case: ``X'7831',X'',1``."""
    return f"X'{gtrid.hex().upper()}',X'{bqual.hex().upper()}',{fmt}"


BY_TYPE: dict[int, type[_Lean]] = {
    BINLOG.WRITE_ROWS_EVENT_V1: WriteRows,
    BINLOG.WRITE_ROWS_EVENT_V2: WriteRows,
    BINLOG.UPDATE_ROWS_EVENT_V1: UpdateRows,
    BINLOG.UPDATE_ROWS_EVENT_V2: UpdateRows,
    BINLOG.DELETE_ROWS_EVENT_V1: DeleteRows,
    BINLOG.DELETE_ROWS_EVENT_V2: DeleteRows,
    BINLOG.XID_EVENT: Xid,
    BINLOG.MARIADB_GTID_EVENT: MariaGtid,
    BINLOG.XA_PREPARE_EVENT: XaPrepare,
}
