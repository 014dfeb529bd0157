"""XA statements in the binlog decoder: MySQL's XA START query opens a group, never ends one."""

from __future__ import annotations

import pytest

from cdc_sync.errors import PermanentError
from cdc_sync.records import BinlogPosition, Heartbeat, TableId, TxBegin, TxCommit
from cdc_sync.sources.mysql import xa
from cdc_sync.sources.mysql.decoder import BinlogDecoder
from cdc_sync.sources.mysql.events import xid_text

F = "binlog.000001"


def _decoder() -> BinlogDecoder:
    start = BinlogPosition(F, 4)
    return BinlogDecoder([TableId("db", "t")], start, None, None, lambda t: set())


def test_statement_spelling() -> None:
    assert xid_text(7, b"x5", b"b") == "X'7835',X'62',7"
    assert xa.statement("XA COMMIT X'7835',X'62',7") == ("COMMIT", "X'7835',X'62',7")
    assert xa.statement("XA END X'7831',X'',1") == ("END", "X'7831',X'',1")
    assert xa.statement("XA RECOVER") is None


def test_mysql_xa_start_and_end_do_not_end_the_prepare_group() -> None:
    dec = _decoder()
    dec.gtid_event("3e11fa47-71ca-11e1-9e33-c80aa9429562:5", 1, F, 100)
    assert dec.query("XA START X'7831',X'',1", b"db", 1, F, 150) == []
    assert dec.in_transaction
    assert dec.query("XA END X'7831',X'',1", b"db", 1, F, 200) == []
    assert dec.in_transaction  # was: taken for a statement of its own, the group ended


def test_xa_rollback_of_an_unseen_prepare_is_nothing() -> None:
    dec = _decoder()
    dec.gtid_event("0-1-9", 1, F, 100)
    out = dec.query("XA ROLLBACK X'7831',X'',1", b"", 1, F, 180)
    assert not dec.in_transaction
    assert all(isinstance(e, (Heartbeat, TxBegin, TxCommit)) for e in out)
    assert not any(isinstance(e, TxCommit) and e.row_count for e in out)


def test_xa_commit_of_an_unseen_prepare_stops_without_a_reader() -> None:
    dec = _decoder()
    dec.gtid_event("0-1-9", 1, F, 100)
    with pytest.raises(PermanentError, match="XA transaction X'7831',X'',1 committed"):
        dec.query("XA COMMIT X'7831',X'',1", b"", 1, F, 180)


def test_xa_commit_of_an_unseen_prepare_asks_the_reader() -> None:
    dec = _decoder()
    asked: list[tuple[str, BinlogPosition]] = []
    dec.on_prepared_missing = lambda xid, at: asked.append((xid, at)) or []
    dec.gtid_event("0-1-9", 1, F, 100)
    dec.query("XA COMMIT X'7831',X'',1", b"", 1, F, 180)
    assert asked == [("X'7831',X'',1", BinlogPosition(F, 180))]
