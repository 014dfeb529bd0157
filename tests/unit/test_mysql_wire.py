"""The binlog wire layer: packet framing (bulk reads, > 16 MB splits), checksums, hot events."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import pymysql
import pytest

from cdc_sync.errors import TransientError
from cdc_sync.records import BinlogPosition, Heartbeat, TableId, TxBegin, TxCommit
from cdc_sync.sources.mysql.decoder import BinlogDecoder
from cdc_sync.sources.mysql.wire import (
    MAX_PAYLOAD,
    BinlogWire,
    PacketReader,
    StreamConnection,
    _crc32,
)


def packets(payload: bytes, seq: int = 1) -> tuple[bytes, int]:
    """``payload`` framed as the server does: 0xFFFFFF-byte pieces continue in the next."""
    out, rest = [], payload
    while True:
        piece, rest = rest[:MAX_PAYLOAD], rest[MAX_PAYLOAD:]
        out.append(struct.pack("<I", len(piece) | (seq << 24)) + piece)
        seq = (seq + 1) & 0xFF
        if len(piece) < MAX_PAYLOAD:
            return b"".join(out), seq


def conn(data: bytes) -> Any:
    c = StreamConnection(host="127.0.0.1", defer_connect=True)
    c._rfile = io.BufferedReader(io.BytesIO(data))  # type: ignore[arg-type]
    c._sock, c._next_seq_id = None, 1
    return c


def test_framing_small_chunks_and_split_payload() -> None:
    big = bytes(range(256)) * (MAX_PAYLOAD // 256 + 10)  # > 16 MB: two protocol packets
    exact = b"x" * MAX_PAYLOAD  # exactly 0xFFFFFF: followed by an empty packet
    one, seq = packets(b"\x00small")
    two, seq = packets(big, seq)
    three, seq = packets(exact, seq)
    four, _ = packets(b"\x00last", seq)
    reader = PacketReader(conn(one + two + three + four), chunk=7)
    got = [bytes(buf[s:e]) for buf, s, e in (reader.next() for _ in range(4))]
    assert got == [b"\x00small", big, exact, b"\x00last"]
    with pytest.raises(TransientError, match="closed by the server"):
        reader.next()


def test_sequence_mismatch_is_transient() -> None:
    data, _ = packets(b"\x00a", seq=5)
    with pytest.raises(TransientError, match="sequence"):
        PacketReader(conn(data)).next()


def event(etype: int, body: bytes, log_pos: int, checksum: bool, ts: int = 1_700_000_000) -> bytes:
    size = 19 + len(body) + (4 if checksum else 0)
    raw = struct.pack("<IBIIIH", ts, etype, 1, size, log_pos, 0) + body
    if checksum:
        raw += struct.pack("<I", zlib.crc32(raw))
    return b"\x00" + raw


def fde(checksum: bool) -> bytes:
    body = struct.pack("<H", 4) + b"10.11.0-MariaDB".ljust(50, b"\x00") + struct.pack("<IB", 0, 19)
    body += bytes([56, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]) + bytes([1 if checksum else 0])
    raw = struct.pack("<IBIIIH", 0, 15, 1, 19 + len(body) + 4, 0, 0) + body
    return b"\x00" + raw + struct.pack("<I", zlib.crc32(raw) if checksum else 0)


class FakeReader:
    log_file = "mariadb-bin.000001"

    def __init__(self, c: Any) -> None:
        self._stream_connection = c

    def fetchone(self) -> None:
        self._stream_connection._read_packet()  # the library consumes the handed packet


def run(checksum: bool, *payloads: bytes) -> tuple[list[object], BaseException | None]:
    data, seq = b"", 1
    for p in (fde(checksum), *payloads):
        framed, seq = packets(p, seq)
        data += framed
    start = BinlogPosition("mariadb-bin.000001", 4)
    dec = BinlogDecoder([TableId("db", "t")], start, None, None, lambda t: set())
    wire = BinlogWire(FakeReader(conn(data)), dec)
    out: list[object] = []
    try:
        out.extend(wire.events())
    except TransientError as e:
        return out, e
    return out, None


@pytest.mark.parametrize("checksum", [True, False])
def test_gtid_and_xid_with_and_without_checksum(checksum: bool) -> None:
    gtid = event(162, struct.pack("<QIB", 7, 0, 0), 500, checksum)  # MariaDB GTID 0-1-7
    xid = event(16, struct.pack("<Q", 99), 600, checksum)
    out, err = run(checksum, gtid, xid)
    assert isinstance(err, TransientError) and "closed" in str(err)
    pos = BinlogPosition("mariadb-bin.000001", 600)
    assert [type(e) for e in out] == [TxBegin, TxCommit]  # an empty transaction is passed on
    assert isinstance(out[1], TxCommit) and out[1].end_position == pos
    assert out[1].xid == "0-1-7" and out[1].commit_time.timestamp() == 1_700_000_000


def test_checksum_mismatch_is_detected() -> None:
    xid = bytearray(event(16, struct.pack("<Q", 99), 600, True))
    xid[-1] ^= 0xFF
    out, err = run(True, event(16, struct.pack("<Q", 98), 550, True), bytes(xid))
    assert out == [Heartbeat(BinlogPosition("mariadb-bin.000001", 550))]
    assert isinstance(err, TransientError) and "checksum mismatch" in str(err)


def test_query_begin_commit_and_error_packet() -> None:
    def query(text: bytes, pos: int) -> bytes:
        post = struct.pack("<IIBHH", 1, 0, 2, 0, 0)
        return event(2, post + b"db\x00" + text, pos, True)

    out, _ = run(True, query(b"BEGIN", 700), query(b"COMMIT", 800))
    assert [type(e) for e in out] == [TxBegin, TxCommit]
    assert isinstance(out[1], TxCommit) and out[1].xid == "mariadb-bin.000001:700"
    error = b"\xff" + struct.pack("<H", 1236) + b"#HY000" + b"binlog purged"
    with pytest.raises(pymysql.err.OperationalError, match="purged"):
        run(True, error)


@pytest.mark.parametrize(("start", "end"), [(0, 0), (3, 4099), (5, 4100), (7, 20_000), (1, 12_289)])
def test_event_checksum_in_pieces(start: int, end: int) -> None:
    """The checksum is taken in pieces (so zlib keeps the GIL): same value as in one go."""
    data = bytes(range(256)) * 100
    assert _crc32(data, start, end) == zlib.crc32(data[start:end])
