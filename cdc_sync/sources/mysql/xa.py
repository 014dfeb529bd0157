"""XA transactions in the binlog: their statements, and rows held from PREPARE to COMMIT."""

from __future__ import annotations

import re
from datetime import datetime

from cdc_sync.errors import PermanentError
from cdc_sync.records import BinlogPosition, ChangeRecord, Position, SourceEvent

# What the binlog holds (seen on MariaDB 10.11; MySQL 8 per its manual):
#
# * XA START … XA END; XA PREPARE: one event group: a GTID event (MariaDB: flag
#   FL_PREPARED_XA; MySQL: an "XA START <xid>" query follows it), the rows, an
#   "XA END <xid>" query and an XA_PREPARE event (one_phase 0). Nothing is committed yet.
# * XA COMMIT / XA ROLLBACK <xid>, from any session, any time later: a group of its own,
#   a GTID event then the "XA COMMIT <xid>" / "XA ROLLBACK <xid>" query, no rows, no XID.
#   Ordinary transactions of other sessions may lie in between.
# * XA COMMIT <xid> ONE PHASE: MariaDB logs an ordinary transaction (GTID, rows, XID);
#   MySQL the first group above with one_phase 1 in the XA_PREPARE event.
# * XA ROLLBACK before PREPARE: nothing.
#
# So a prepared group's rows are held (by XID) and only emitted, as the committing group's
# transaction at its position, when its XA COMMIT comes; XA ROLLBACK drops them.
_XA = re.compile(r"^XA\s+(START|BEGIN|END|COMMIT|ROLLBACK)\s+(X'[0-9A-F]*',X'[0-9A-F]*',\d+)")


def statement(query_upper: str) -> tuple[str, str] | None:
    """(verb, xid) of an XA statement as the binlog spells it (upper-cased); else None."""
    m = _XA.match(query_upper)
    if m is None:
        return None
    return m.group(1), m.group(2)


def restamp(
    held: list[ChangeRecord], xid: str, when: datetime, position: Position
) -> list[SourceEvent]:
    """The held records as changes of the committing transaction: its xid, commit time and
    position (the prepared group's position may be before the checkpoint by now)."""
    return [r._replace(position=position, xid=xid, commit_time=when) for r in held]


def side_server_id(server_id: int) -> int:
    """The server id of the short second binlog connection that re-reads a PREPARE group:
    a server drops a replica's dump connection when another one registers with its id."""
    return (server_id + 0x40000000) % 0xFFFFFFFF or 1


def not_found(xid: str, at: BinlogPosition, why: str) -> PermanentError:
    return PermanentError(
        f"XA transaction {xid} committed at {at.to_text()}, but its rows (logged at its "
        f"XA PREPARE, before the position this stream started from) cannot be read: {why}. "
        "cdc-sync stops rather than miss or guess them; re-snapshot the tables it wrote "
        "with `cdc-sync snapshot` and start from the new position"
    )


def unexpected_prepare(at: BinlogPosition) -> PermanentError:
    return PermanentError(
        f"an XA PREPARE event at {at.to_text()} ends a transaction that was not marked as an "
        "XA transaction when it began: its rows may already have been passed on as committed. "
        "This server's binlog format is not one cdc-sync knows; please report it"
    )
