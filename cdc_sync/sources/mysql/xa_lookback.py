"""Re-reading an XA PREPARE group that lies before the stream's start, when its COMMIT comes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cdc_sync.records import BinlogPosition, ChangeRecord
from cdc_sync.sources.mysql import catalog, xa
from cdc_sync.sources.mysql.decoder import BinlogDecoder

_PAGE = 5000  # SHOW BINLOG EVENTS rows per query: a binlog file may hold millions

# Why: the checkpoint moves on past a PREPARE group while its XA transaction is pending
# (ordinary transactions keep committing, and holding them back could stall the pipeline
# for as long as a coordinator leaves the transaction prepared). A stream started after it
# therefore meets the XA COMMIT without the rows, which are only in the PREPARE group: that
# group is found by its XID (the "XA START <xid>" of its GTID event, MariaDB, or of its
# first query, MySQL) and read again over a short second binlog connection.


def find_prepare(conn: Any, xid: str, before: BinlogPosition) -> BinlogPosition | None:
    """Where the last XA START of ``xid`` before ``before`` is (an XID is free again once
    its transaction ended), searching the binlog files from ``before``'s backwards."""
    want = f"XA START {xid}"
    files = [str(r[0]) for r in catalog.query(conn, "SHOW BINARY LOGS")]
    upto = BinlogPosition(before.file, 0)
    for name in reversed([f for f in files if BinlogPosition(f, 0) <= upto]):
        found, at = None, 4
        while True:
            rows = catalog.query(
                conn, "SHOW BINLOG EVENTS IN %s FROM %s LIMIT %s", (name, at, _PAGE)
            )
            for _, pos, _etype, _, _end, info in rows:
                if name == before.file and int(pos) >= before.pos:
                    break
                text = str(info).upper()
                if text.startswith(want) and text[len(want) : len(want) + 1] in ("", " "):
                    found = int(pos)
            else:
                if len(rows) == _PAGE:
                    at = int(rows[-1][4])
                    continue
            break
        if found is not None:
            return BinlogPosition(name, found)
    return None


def read_prepared(
    conn: Callable[[], Any],
    decoder: BinlogDecoder,
    open_at: Callable[..., Any],
    xid: str,
    before: BinlogPosition,
) -> list[ChangeRecord]:
    """The records of ``xid``'s PREPARE group before ``before``; PermanentError if the
    binlog no longer holds it (never an empty guess). ``conn``: the catalog connection;
    ``open_at(start=)``: a binlog reader from a file:pos, as ``stream.open_reader``."""
    start = find_prepare(conn(), xid, before)
    if start is None:
        raise xa.not_found(xid, before, "no XA START of it in the binlog files on the server")
    side = decoder.sibling(start)
    reader = open_at(start=start)
    try:
        while True:
            ev = reader.fetchone()
            if ev is None:
                raise xa.not_found(xid, before, f"the binlog ended after {start.to_text()}")
            for _ in side.feed(ev, reader.log_file):
                pass
            held = side.prepared(xid)
            if held is not None:
                return held
            if BinlogPosition(reader.log_file, side.pos) >= before:
                raise xa.not_found(xid, before, f"no XA PREPARE after {start.to_text()}")
    finally:
        reader.close()
