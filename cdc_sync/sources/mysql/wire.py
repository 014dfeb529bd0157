"""The binlog hot path: raw replication packets → decoder calls, without per-event objects.

Why: with the library's reader every event costs ~20 µs before we see it (``fetchone``, a
``BinLogPacketWrapper``, an event object, PyMySQL's packet read), and a single-row autocommit
transaction is four events (GTID, TABLE_MAP, ROWS, XID). Profiled on the 125k-change drain
(``python -m bench.mysql_decode``) that machinery was ~40 % of the CPU.

How: the library still connects, registers as a replica, sends the dump command and parses
the first event (the fake ROTATE). After that :class:`BinlogWire` reads the connection's
socket in bulk and frames the MySQL packets itself. The hot event types are parsed here from
the bytes (MariaDB / MySQL GTID, TABLE_MAP on a cache hit, WRITE / UPDATE / DELETE rows v1 /
v2, XID, QUERY); rows events of tables we do not capture are skipped by table id before
anything is decoded. Every other packet (ROTATE, FORMAT_DESCRIPTION, HEARTBEAT, GTID_LIST,
TABLE_MAP misses…) is handed to the library's ``fetchone`` through
:class:`StreamConnection`, so rare events keep the library's parsing and bookkeeping.

Wire facts relied on (MySQL client/server protocol, binlog v4):

* packet: 3-byte little-endian length, 1-byte sequence id, payload; a payload of 0xFFFFFF
  bytes continues in the next packet (events > 16 MB);
* payload: 0x00 then the event; 0xFF an error packet; 0xFE and < 9 bytes end of stream;
* event: 19-byte header (timestamp 4, type 1, server_id 4, event_size 4, log_pos 4, flags 2),
  body, then a CRC32 of header + body when the binlog's checksum algorithm is CRC32. The
  algorithm is in each binlog's FORMAT_DESCRIPTION event (its byte before the trailing 4), and
  the server sends every event of that binlog the same way; the trailer is verified.
"""

from __future__ import annotations

import select
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pymysql
from pymysql.protocol import MysqlPacket
from pymysqlreplication.constants import BINLOG

from cdc_sync.errors import PermanentError, TransientError
from cdc_sync.records import Idle, SourceEvent
from cdc_sync.sources.mysql import tablemap
from cdc_sync.sources.mysql.conn import Connection as MysqlConnection
from cdc_sync.sources.mysql.decoder import BinlogDecoder
from cdc_sync.sources.mysql.events import FL_PREPARED_XA
from cdc_sync.sources.mysql.tablemap import CachedTableMapEvent

MAX_PAYLOAD = 0xFFFFFF
_DRAINED = Idle(drained=True)
CHUNK = 256 * 1024
_CRC_PIECE = 4096  # below zlib's 5 KiB threshold for releasing the GIL
_HEADER = struct.Struct("<IBIIIH")  # timestamp, type, server_id, event_size, log_pos, flags
_U32 = struct.Struct("<I")
_MARIA_GTID = struct.Struct("<QI")  # seq, domain

_WRITE_V1, _WRITE_V2 = BINLOG.WRITE_ROWS_EVENT_V1, BINLOG.WRITE_ROWS_EVENT_V2
_UPDATE_V1, _UPDATE_V2 = BINLOG.UPDATE_ROWS_EVENT_V1, BINLOG.UPDATE_ROWS_EVENT_V2
_DELETE_V1, _DELETE_V2 = BINLOG.DELETE_ROWS_EVENT_V1, BINLOG.DELETE_ROWS_EVENT_V2
_ROWS_KIND = {
    _WRITE_V1: 0, _WRITE_V2: 0, _UPDATE_V1: 1, _UPDATE_V2: 1, _DELETE_V1: 2, _DELETE_V2: 2,
}  # fmt: skip
_ROWS_V2 = frozenset({_WRITE_V2, _UPDATE_V2, _DELETE_V2})
_TABLE_MAP = BINLOG.TABLE_MAP_EVENT
_XID = BINLOG.XID_EVENT
_QUERY = BINLOG.QUERY_EVENT
_MARIADB_GTID = BINLOG.MARIADB_GTID_EVENT
_MYSQL_GTID = BINLOG.GTID_LOG_EVENT
_FORMAT_DESCRIPTION = BINLOG.FORMAT_DESCRIPTION_EVENT
_FAST = frozenset({*_ROWS_KIND, _TABLE_MAP, _XID, _QUERY, _MARIADB_GTID, _MYSQL_GTID})
# Events this reader cannot decode and the library would silently filter out: MariaDB's
# compressed query / rows events (log_bin_compress) and MySQL's partial JSON updates. A row
# change must never be skipped, so meeting one stops the stream (check refuses the settings).
_UNREADABLE = {
    **{t: "compressed (log_bin_compress = ON)" for t in range(165, 172)},
    BINLOG.PARTIAL_UPDATE_ROWS_EVENT: "partial JSON update (binlog_row_value_options)",
}
_KNOWN_POST_HEADER = {_QUERY: 13, **dict.fromkeys(_ROWS_KIND, 8), **dict.fromkeys(_ROWS_V2, 10)}
_NOT_OURS = object()  # a cached table map of a table we do not capture


class _Unparsed(Exception):
    """Raised into the library's fetchone when it wants a packet we have not handed it (the
    one we did hand it was filtered out): one library call parses exactly one packet."""


class StreamConnection(MysqlConnection):
    """The replication connection. Until :meth:`attach` it is a plain PyMySQL connection
    (login, the library's SET statements, register, dump); afterwards ``_read_packet``, the
    library's only read, returns the packet :class:`BinlogWire` handed over."""

    _attached = False
    _handed: MysqlPacket | None = None

    def attach(self) -> None:
        self._attached = True

    def hand(self, payload: bytes) -> None:
        self._handed = MysqlPacket(payload, self.encoding)

    def _read_packet(self, packet_type: Any = MysqlPacket) -> Any:
        if not self._attached:
            return super()._read_packet(packet_type)
        pkt, self._handed = self._handed, None
        if pkt is None:
            raise _Unparsed
        return pkt


def _crc32(buf: bytes, start: int, end: int) -> int:
    """``zlib.crc32(buf[start:end])`` in pieces that keep the GIL: zlib releases it for
    inputs over 5 KiB (a rows event of ~100 rows), and taking it back waits for the writer
    thread, which may keep it for a whole switch interval (5 ms) while it formats COPY rows.
    Profiled on the MySQL→PG drain, that wait was ~5 % of the decoding thread."""
    if end - start <= _CRC_PIECE:
        return zlib.crc32(buf[start:end])
    view, crc = memoryview(buf), 0
    for o in range(start, end, _CRC_PIECE):
        crc = zlib.crc32(view[o : min(o + _CRC_PIECE, end)], crc)
    return crc


def _lost(what: str) -> TransientError:
    return TransientError(f"binlog connection lost ({what}); resuming from the checkpoint")


class PacketReader:
    """Frames MySQL packets from the connection's socket, reading it in large chunks.

    ``next()`` returns ``(buf, start, end)``: the payload is ``buf[start:end]`` (no copy for
    packets inside one chunk; a split > 16 MB payload is joined).
    """

    def __init__(self, conn: Any, chunk: int = CHUNK) -> None:
        self._conn, self._chunk = conn, chunk
        # PyMySQL's buffered reader: anything it already buffered is returned first.
        self._read1: Callable[[int], bytes] = conn._rfile.read1
        self._buf, self._pos = b"", 0
        self._seq = conn._next_seq_id
        sock = conn._sock
        if sock is not None and conn._current_timeout != conn._read_timeout:
            sock.settimeout(conn._read_timeout)  # a dead peer shows as a read timeout
            conn._current_timeout = conn._read_timeout

    def _fill(self, n: int) -> None:
        """Make ``n`` bytes available at ``self._pos``."""
        rest = self._buf[self._pos :]
        parts = bytearray(rest) if n > self._chunk else None
        have = len(rest)
        while have < n:
            try:
                chunk = self._read1(max(self._chunk, n - have))
            except OSError as e:  # includes the read timeout
                self._conn._force_close()
                raise _lost(type(e).__name__) from e
            if not chunk:
                self._conn._force_close()
                raise _lost("closed by the server")
            if parts is not None:
                parts += chunk
            else:
                rest += chunk
            have += len(chunk)
        self._buf, self._pos = (bytes(parts) if parts is not None else rest), 0

    def _one(self) -> tuple[int, int]:
        """One protocol packet: (start, length) in ``self._buf``."""
        if len(self._buf) - self._pos < 4:
            self._fill(4)
        head = _U32.unpack_from(self._buf, self._pos)[0]
        n, seq = head & 0xFFFFFF, head >> 24
        if seq != self._seq:
            self._conn._force_close()
            raise _lost(f"packet sequence {seq}, expected {self._seq}")
        self._seq = (seq + 1) & 0xFF
        if len(self._buf) - self._pos < 4 + n:
            self._fill(4 + n)
        start = self._pos + 4
        self._pos = start + n
        return start, n

    def drained(self) -> bool:
        """Nothing buffered and nothing waiting on the socket: the server has sent all it
        has for now. A hint only (PyMySQL's own buffer is not looked into): a wrong answer
        commits a batch early, never loses or reorders anything."""
        if self._pos < len(self._buf):
            return False
        sock = self._conn._sock
        return sock is not None and not select.select([sock], [], [], 0)[0]

    def next(self) -> tuple[bytes, int, int]:
        start, n = self._one()
        if n < MAX_PAYLOAD:
            return self._buf, start, start + n
        parts = [self._buf[start : start + n]]
        while n == MAX_PAYLOAD:  # the payload continues in the next packet
            start, n = self._one()
            parts.append(self._buf[start : start + n])
        data = b"".join(parts)
        return data, 0, len(data)


class BinlogWire:
    """Turns the attached replication connection's packets into decoder calls."""

    def __init__(self, reader: Any, decoder: BinlogDecoder) -> None:
        self._reader, self._decoder = reader, decoder
        conn = reader._stream_connection
        if not isinstance(conn, StreamConnection):
            raise TypeError("the binlog reader was not opened by stream.open_reader")
        self._conn = conn
        self.packets = PacketReader(conn)
        conn.attach()
        self.checksum: bool | None = None  # unknown until a FORMAT_DESCRIPTION event
        self._post_header: bytes = b""
        # table-map event bytes (after the header, without checksum) -> parsed map / _NOT_OURS
        self._maps: dict[bytes, Any] = {}

    # -- the slow path --------------------------------------------------------------------

    def _library(self, payload: bytes) -> Iterator[SourceEvent]:
        """One packet parsed by the library's reader (its bookkeeping: log_file, FDE…)."""
        self._conn.hand(payload)
        try:
            ev = self._reader.fetchone()
        except _Unparsed:
            ev = None  # filtered out by the library (event type or table not wanted)
        if payload[5] == _FORMAT_DESCRIPTION:
            self._format_description(payload)
        if ev is not None:
            yield from self._decoder.feed(ev, self._reader.log_file)
        return

    def _format_description(self, p: bytes) -> None:
        # After OK byte + header: binlog version 2, server version 50, created 4, header
        # length 1, post-header lengths; then the checksum algorithm (1) and 4 trailer bytes.
        end = len(p)
        self.checksum = p[end - 5] == 1  # 1: CRC32, 0: off
        self._post_header = p[1 + 19 + 57 : end - 5]

    def _extra(self, etype: int) -> int:
        """Post-header bytes a newer server declared beyond what we parse."""
        ph = self._post_header
        known = _KNOWN_POST_HEADER[etype]
        return max(0, ph[etype - 1] - known) if etype <= len(ph) else 0

    # -- the loop ----------------------------------------------------------------------------

    def events(self) -> Iterator[SourceEvent]:
        """Events until the connection fails (TransientError) or the server ends the stream."""
        decoder, reader, nxt = self._decoder, self._reader, self.packets.next
        maps, header, crc = self._maps, _HEADER.unpack_from, _crc32
        rows_kind, cache_on = _ROWS_KIND, tablemap.enabled
        drained = self.packets.drained
        pending = False  # a transaction went out since the last DRAINED
        while True:
            # Checked before each read, not only right after an XID: other events (GTID,
            # heartbeat, another table's transaction) may follow it before the stream goes
            # quiet, and the loop must still hear that it did.
            if pending and not decoder.in_transaction and drained():
                pending = False
                yield _DRAINED
            buf, s, e = nxt()
            first = buf[s]
            if first != 0:
                if first == 0xFF:  # error packet: PyMySQL raises the server's error
                    pymysql.err.raise_mysql_exception(bytes(buf[s:e]))
                if first == 0xFE and e - s < 9:
                    raise TransientError("binlog stream ended by the server")
                continue
            if e - s < 20:
                continue  # an OK packet without an event: the library skips these too
            ts, etype, server_id, size, log_pos, _ = header(buf, s + 1)
            checksum = self.checksum
            if etype in _UNREADABLE:
                raise PermanentError(
                    f"binlog event at {reader.log_file}:{log_pos} is a {_UNREADABLE[etype]} "
                    "event, which cdc-sync cannot decode; turn the setting off on the source "
                    "and re-snapshot the tables written since it was on"
                )
            if etype not in _FAST or checksum is None:
                yield from self._library(bytes(buf[s:e]))
                continue
            if 1 + size != e - s:
                raise TransientError(f"binlog event of {size} bytes in a {e - s - 1}-byte packet")
            body, end = s + 20, e
            if checksum:
                end -= 4
                if crc(buf, s + 1, end) != _U32.unpack_from(buf, end)[0]:
                    raise TransientError(
                        f"binlog event checksum mismatch before {reader.log_file}:{log_pos}"
                    )
            kind = rows_kind.get(etype)
            if kind is not None:
                out = self._rows(buf, body, end, etype, kind, log_pos)
                if out:
                    yield from out
            elif etype == _TABLE_MAP:
                raw = buf[body:end]
                tm = maps.get(raw) if cache_on["cache"] else None
                if tm is None:
                    yield from self._table_map_miss(bytes(buf[s:e]), raw)
                elif tm is not _NOT_OURS:
                    decoder.pos = log_pos
                    decoder.table_map(tm)
                    tablemap.stats["hits"] += 1
            elif etype == _MARIADB_GTID:
                seq, domain = _MARIA_GTID.unpack_from(buf, body)
                xa_group = bool(buf[body + 12] & FL_PREPARED_XA)  # flags2, after seq, domain
                gtid = f"{domain}-{server_id}-{seq}"
                decoder.gtid_event(gtid, ts, reader.log_file, log_pos, xa_group)
            elif etype == _XID:
                out = decoder.xid(reader.log_file, log_pos)
                if out:
                    yield from out
                    pending = True
            elif etype == _QUERY:
                out = self._query(buf, body, end, ts, log_pos)
                if out:
                    yield from out
            else:  # MySQL GTID: flags 1, sid 16, gno 8
                sid = buf[body + 1 : body + 17].hex()
                gno = int.from_bytes(buf[body + 17 : body + 25], "little")
                gtid = f"{sid[:8]}-{sid[8:12]}-{sid[12:16]}-{sid[16:20]}-{sid[20:]}:{gno}"
                decoder.gtid_event(gtid, ts, reader.log_file, log_pos)

    def _table_map_miss(self, payload: bytes, raw: bytes) -> Iterator[SourceEvent]:
        """Parsed by the library (its TableMapEvent, through the tablemap cache); remembered
        by its bytes, which fully determine the parse (see :mod:`tablemap`)."""
        self._conn.hand(payload)
        try:
            ev = self._reader.fetchone()
        except _Unparsed:
            ev = None  # a table the library filters out: not ours
        if ev is not None and type(ev) is not CachedTableMapEvent:
            raise AssertionError(f"a TABLE_MAP packet parsed as {type(ev).__name__}")
        if len(self._maps) >= 4096:  # table ids change on every ALTER / reopen
            self._maps.clear()
        if ev is None or not self._decoder.table_map(ev):
            self._maps[raw] = _NOT_OURS
            return
        self._decoder.pos = ev.packet.log_pos
        self._maps[raw] = ev
        yield from ()

    def _rows(  # noqa: PLR0917 (the hot path: positional on purpose)
        self, buf: bytes, o: int, end: int, etype: int, kind: int, log_pos: int
    ) -> list[SourceEvent] | None:
        # table id 6, flags 2, [v2: extra-data length 2 (itself included) + data], then the
        # column count (length-encoded), the present-columns bitmap(s) and the row images.
        table_id = int.from_bytes(buf[o : o + 6], "little")
        decoder = self._decoder
        if table_id not in decoder._maps:  # not one of our tables: skip before decoding
            decoder.pos = log_pos
            return None
        o += 8 + (self._extra(etype) if self._post_header else 0)
        if etype in _ROWS_V2:
            o += int.from_bytes(buf[o : o + 2], "little")
        n = buf[o]
        if n < 0xFB:
            o += 1
        elif n == 0xFC:
            n, o = int.from_bytes(buf[o + 1 : o + 3], "little"), o + 3
        elif n == 0xFD:
            n, o = int.from_bytes(buf[o + 1 : o + 4], "little"), o + 4
        else:
            n, o = int.from_bytes(buf[o + 1 : o + 9], "little"), o + 9
        nb = (n + 7) // 8
        bitmap = buf[o : o + nb]
        o += nb
        bitmap2 = None
        if kind == 1:
            bitmap2 = buf[o : o + nb]
            o += nb
        start = o
        return decoder.rows(kind, table_id, n, bitmap, bitmap2, lambda: buf[start:end], log_pos)

    def _query(
        self, buf: bytes, o: int, end: int, ts: int, log_pos: int
    ) -> list[SourceEvent] | None:
        # thread id 4, exec time 4, schema length 1, error code 2, status vars length 2,
        # [extra post-header], status vars, schema, NUL, query text.
        schema_len = buf[o + 8]
        status_len = int.from_bytes(buf[o + 11 : o + 13], "little")
        o += 13 + (self._extra(_QUERY) if self._post_header else 0) + status_len
        schema = buf[o : o + schema_len]
        query = buf[o + schema_len + 1 : end].decode("utf-8", errors="backslashreplace")
        return self._decoder.query(query, schema, ts, self._reader.log_file, log_pos)
