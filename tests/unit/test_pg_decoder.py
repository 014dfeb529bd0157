"""The pgoutput v1 decoder on hand-built protocol messages (no server)."""

from __future__ import annotations

import struct
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from cdc_sync.errors import NoKeyError, PermanentError, UnsupportedTypeError
from cdc_sync.records import (
    UNCHANGED,
    ChangeRecord,
    Column,
    ColumnType,
    Kind,
    Op,
    PgLsn,
    TableId,
    TableSchema,
    TxBegin,
    TxCommit,
)
from cdc_sync.sources.postgres.decoder import PgOutputDecoder, pg_time
from cdc_sync.sources.postgres.types import TypeResolver

T = TableId("public", "crm")
OTHER = TableId("public", "other")
TS = 817_000_000_123_456  # µs since 2000-01-01


def cstr(s: str) -> bytes:
    return s.encode() + b"\0"


def begin(final_lsn: int, xid: int = 42) -> bytes:
    return b"B" + struct.pack(">QqI", final_lsn, TS, xid)


def commit(end_lsn: int, commit_lsn: int = 0) -> bytes:
    return b"C" + struct.pack(">BQQq", 0, commit_lsn, end_lsn, TS)


def relation(
    oid: int, table: TableId, cols: list[tuple[bool, str, int, int]], ident: str = "d"
) -> bytes:
    out = b"R" + struct.pack(">I", oid) + cstr(table.schema) + cstr(table.name) + ident.encode()
    out += struct.pack(">H", len(cols))
    for key, name, typ, mod in cols:
        out += bytes([1 if key else 0]) + cstr(name) + struct.pack(">Ii", typ, mod)
    return out


def tup(*vals: str | object | None) -> bytes:
    out = struct.pack(">H", len(vals))
    for v in vals:
        if v is None:
            out += b"n"
        elif v is UNCHANGED:
            out += b"u"
        else:
            assert isinstance(v, str)
            b = v.encode()
            out += b"t" + struct.pack(">I", len(b)) + b
    return out


COLS = [
    (True, "id", 20, -1),
    (False, "name", 1043, 24),
    (False, "amount", 1700, (10 << 16 | 2) + 4),
    (False, "born", 1082, -1),
    (False, "note", 25, -1),
]


def decoder(**kw: object) -> PgOutputDecoder:
    d = PgOutputDecoder(TypeResolver(), **kw)  # type: ignore[arg-type]
    assert d.decode(relation(16384, T, COLS), 100) == ()
    return d


def test_transaction_with_insert_update_delete() -> None:
    d = decoder()
    (b,) = d.decode(begin(0x1_0000_0200, xid=731), 90)
    assert b == TxBegin("731", pg_time(TS), PgLsn(0x1_0000_0200))
    assert b.commit_time.tzinfo is UTC and pg_time(0) == datetime(2000, 1, 1, tzinfo=UTC)
    assert d.in_transaction
    (ins,) = d.decode(
        b"I" + struct.pack(">I", 16384) + b"N" + tup("7", "Ann", "12.30", "2026-11-23", None), 110
    )
    assert isinstance(ins, ChangeRecord)
    assert ins.op is Op.INSERT and ins.table == T and ins.position == PgLsn(110)
    assert ins.after == (7, "Ann", Decimal("12.30"), date(2026, 11, 23), None)
    assert str(ins.after[2]) == "12.30" and ins.xid == "731" and ins.before is None
    assert ins.schema.key == ("id",) and ins.schema.column("name").type.length == 20
    # key change: 'K' old key tuple, non-key positions null
    (upd,) = d.decode(
        b"U"
        + struct.pack(">I", 16384)
        + b"K"
        + tup("7", None, None, None, None)
        + b"N"
        + tup("8", "Ann", "1.00", None, UNCHANGED),
        120,
    )
    assert isinstance(upd, ChangeRecord) and upd.op is Op.UPDATE
    assert upd.before == (7, None, None, None, None) and upd.before_is_key_only
    assert upd.after == (8, "Ann", Decimal("1.00"), None, UNCHANGED)
    assert upd.key_changed() and upd.old_key() == (7,) and upd.key() == (8,)
    (plain,) = d.decode(
        b"U" + struct.pack(">I", 16384) + b"N" + tup("8", "B", None, None, "x"), 121
    )
    assert isinstance(plain, ChangeRecord) and plain.before is None
    assert not plain.before_is_key_only
    (dele,) = d.decode(
        b"D" + struct.pack(">I", 16384) + b"K" + tup("8", None, None, None, None), 130
    )
    assert isinstance(dele, ChangeRecord) and dele.op is Op.DELETE and dele.after is None
    assert dele.key() == (8,) and dele.before_is_key_only
    (c,) = d.decode(commit(0x1_0000_0300), 140)
    assert c == TxCommit("731", pg_time(TS), PgLsn(0x1_0000_0300), 4)
    assert not d.in_transaction
    assert ins.schema is upd.schema is dele.schema


def test_full_identity_old_tuple_and_truncate() -> None:
    known = TableSchema(T, tuple(Column(n, ColumnType(Kind.TEXT)) for n in ("id", "v")), ("id",))
    d = PgOutputDecoder(TypeResolver(), known={T: known})
    d.decode(relation(1, T, [(True, "id", 25, -1), (True, "v", 25, -1)], ident="f"), 1)
    d.decode(relation(2, OTHER, [(True, "id", 23, -1)]), 2)
    d.decode(begin(10), 10)
    (upd,) = d.decode(b"U\0\0\0\1O" + tup("a", "x") + b"N" + tup("a", "y"), 11)
    assert isinstance(upd, ChangeRecord)
    assert upd.before == ("a", "x") and not upd.before_is_key_only
    assert upd.schema is known  # FULL flags every column; the key stays the primary key
    evs = d.decode(b"T" + struct.pack(">IBII", 2, 0, 1, 2), 12)
    assert [(e.op, e.table, e.before, e.after) for e in evs] == [  # type: ignore[union-attr]
        (Op.TRUNCATE, T, None, None),
        (Op.TRUNCATE, OTHER, None, None),
    ]


def test_unconfigured_tables_are_not_decoded() -> None:
    d = decoder(tables=[T])
    d.decode(relation(2, OTHER, [(True, "p", 600, -1)]), 2)  # point: unsupported, but not ours
    d.decode(begin(10), 10)
    assert d.decode(b"I\0\0\0\2N" + tup("(1,2)"), 11) == ()
    assert d.decode(b"T" + struct.pack(">IBI", 1, 0, 2), 12) == []
    (c,) = d.decode(commit(20), 13)
    assert isinstance(c, TxCommit) and c.row_count == 0


def test_transactions_up_to_checkpoint_are_skipped() -> None:
    d = decoder(resume_after=500)
    ins = b"I" + struct.pack(">I", 16384) + b"N" + tup("1", None, None, None, None)
    assert d.decode(begin(400), 400) == ()
    assert d.decode(ins, 401) == ()
    assert d.decode(relation(16384, T, COLS), 402) == ()  # the cache is still kept up to date
    assert d.decode(commit(500), 403) == ()
    assert [type(e) for e in d.decode(begin(500), 500)] == [TxBegin]
    assert len(d.decode(ins, 501)) == 1
    (c,) = d.decode(commit(600), 502)
    assert c == TxCommit("42", pg_time(TS), PgLsn(600), 1)


def test_relation_change_mid_stream_adds_column() -> None:
    d = decoder()
    d.decode(begin(10), 10)
    (a,) = d.decode(b"I\0\0\x40\0N" + tup("1", "x", "1", None, None), 11)
    d.decode(relation(16384, T, [*COLS, (False, "extra", 1186, -1)]), 12)
    (b,) = d.decode(b"I\0\0\x40\0N" + tup("2", "x", "1", None, None, "P1D"), 13)
    assert isinstance(a, ChangeRecord) and isinstance(b, ChangeRecord)
    assert b.schema.names[-1] == "extra" and a.schema.names[-1] == "note"
    assert b.schema.column("extra").nullable
    # the same relation again: the very same schema object (cheap identity checks)
    d.decode(relation(16384, T, [*COLS, (False, "extra", 1186, -1)]), 14)
    (c,) = d.decode(b"I\0\0\x40\0N" + tup("3", "x", "1", None, None, None), 15)
    assert isinstance(c, ChangeRecord) and c.schema is b.schema


def test_catalog_nullability_and_key_order_are_kept() -> None:
    known = TableSchema(
        T,
        (
            Column("b", ColumnType(Kind.INTEGER), nullable=False),
            Column("a", ColumnType(Kind.INTEGER), nullable=False),
        ),
        ("a", "b"),
    )
    d = PgOutputDecoder(TypeResolver(), known={T: known})
    d.decode(relation(1, T, [(True, "b", 23, -1), (True, "a", 23, -1)]), 1)
    assert d.schema(T) is known


def _one(d: PgOutputDecoder, data: bytes) -> ChangeRecord:
    (rec,) = d.decode(data, 11)
    assert isinstance(rec, ChangeRecord)
    return rec


def test_errors_name_table_and_column_never_the_value() -> None:
    d = decoder()
    d.decode(begin(10), 10)
    # A value Python cannot hold: None in the row, the problem on the record (refused by
    # on_error later), the rest of the row decoded.
    rec = _one(d, b"I\0\0\x40\0N" + tup("1", "x", "1", "infinity", "n"))
    assert rec.after == (1, "x", Decimal("1"), None, "n") and rec.problem is not None
    assert rec.problem.column == "born"
    assert "public.crm" in rec.problem.reason and "'born'" in rec.problem.reason
    rec = _one(d, b"I\0\0\x40\0N" + tup("1", "x", "secret-value", None, None))
    assert rec.problem is not None and rec.problem.column == "amount"
    assert "secret-value" not in rec.problem.reason
    assert _one(d, b"I\0\0\x40\0N" + tup("2", "x", "1", None, None)).problem is None
    # In an old row (REPLICA IDENTITY FULL) only the key is needed: a DELETE, or the
    # UPDATE that fixes the value, still applies with the key alone.
    old = b"O" + tup("3", "x", "1", "infinity", "n")
    rec = _one(d, b"D\0\0\x40\0" + old)
    assert rec.problem is None and rec.before_is_key_only
    assert rec.before == (3, None, None, None, None)
    rec = _one(d, b"U\0\0\x40\0" + old + b"N" + tup("3", "x", "1", "2020-01-02", "n"))
    assert rec.problem is None and rec.before_is_key_only
    assert rec.after == (3, "x", Decimal("1"), date(2020, 1, 2), "n")
    with pytest.raises(UnsupportedTypeError):
        d.decode(relation(16384, T, [*COLS, (False, "p", 600, -1)]), 12)
    with pytest.raises(NoKeyError, match="REPLICA IDENTITY"):
        d.decode(relation(3, OTHER, [(False, "id", 23, -1)], ident="n"), 13)
    with pytest.raises(PermanentError, match="unknown relation"):
        d.decode(b"I\0\0\0\x09N" + tup("1"), 14)
    with pytest.raises(PermanentError, match="unknown pgoutput message"):
        d.decode(b"Z", 15)


def test_origin_type_and_message_are_parsed_and_ignored() -> None:
    d = decoder()
    assert d.decode(b"O" + struct.pack(">Q", 5) + cstr("node1"), 1) == ()
    assert d.decode(b"Y" + struct.pack(">I", 5000) + cstr("public") + cstr("mood"), 2) == ()
    assert (
        d.decode(b"M\1" + struct.pack(">Q", 7) + cstr("pfx") + struct.pack(">I", 2) + b"hi", 3)
        == ()
    )


def test_an_enum_label_added_since_the_relation_is_read_from_the_catalog() -> None:
    """``ALTER TYPE … ADD VALUE`` sends no message: the first row with the new label makes
    the decoder read the enum again (through an array and a domain too), so the record's
    schema carries the label. A label the catalog still lacks passes, after one lookup."""
    from cdc_sync.sources.postgres.types import PgType  # noqa: PLC0415

    labels = ["a", "b"]
    lookups: list[int] = []

    def lookup(oid: int) -> PgType | None:
        lookups.append(oid)
        return {
            5000: PgType(5000, "public", "mood", "e", enum_labels=tuple(labels)),
            5001: PgType(5001, "public", "_mood", "b", elem=5000),
            5002: PgType(5002, "public", "mood_d", "d", base=5000),
        }.get(oid)

    d = PgOutputDecoder(TypeResolver(lookup))
    cols = [(True, "id", 23, -1), (False, "m", 5000, -1), (False, "ms", 5001, -1),
            (False, "md", 5002, -1)]  # fmt: skip
    d.decode(relation(1, T, cols), 1)
    d.decode(begin(10), 10)
    rec = _one(d, b"I\0\0\0\x01N" + tup("1", "a", "{a,b}", "b"))
    assert rec.after == (1, "a", ["a", "b"], "b")
    first = rec.schema
    for label, values in (
        ("c", ("2", "c", None, None)),
        ("d", ("3", None, "{a,d}", None)),
        ("e", ("4", None, None, "e")),
    ):
        labels.append(label)
        lookups.clear()
        rec = _one(d, b"I\0\0\0\x01N" + tup(*values))
        assert lookups, values  # read again
        assert [c.type.enum_labels for c in rec.schema.columns[1:]] == [tuple(labels)] * 3
        assert rec.schema.columns[2].type.array_dims == 1
    assert rec.schema != first
    lookups.clear()
    rec = _one(d, b"I\0\0\0\x01N" + tup("5", "zz", None, None))  # renamed since: passes on
    assert rec.after == (5, "zz", None, None) and lookups
    lookups.clear()
    assert _one(d, b"I\0\0\0\x01N" + tup("6", "zz", None, None)).after[1] == "zz"
    assert not lookups  # once


def test_a_configured_table_under_another_name_is_followed_or_stops() -> None:
    """By oid: renamed back since → its changes are the table's; still renamed → a stop that
    names both names (never a skip: the checkpoint would move past its changes)."""
    from cdc_sync.sources.postgres.relnames import RelationNames  # noqa: PLC0415

    now = {16384: T}
    names = RelationNames({16384: T}, now.get)
    renamed = TableId("public", "crm_tmp")
    d = PgOutputDecoder(TypeResolver(), [T], names=names)
    d.decode(relation(16384, renamed, COLS), 1)  # renamed back since: followed
    d.decode(begin(10), 10)
    rec = _one(d, b"I\0\0\x40\0N" + tup("1", "x", "1", None, None))
    assert rec.table == T
    assert names.configured(99, renamed) == renamed  # another relation: as named
    now[16384] = renamed
    with pytest.raises(PermanentError, match=r"public\.crm was renamed to public\.crm_tmp"):
        RelationNames({16384: T}, now.get).configured(16384, renamed)
    del now[16384]
    with pytest.raises(PermanentError, match="dropped since"):
        RelationNames({16384: T}, now.get).configured(16384, renamed)
