"""MySQL BINARY(n): fixed-length BYTES from the source, BINARY(n) in a MySQL target."""

from __future__ import annotations

import pytest
from sqlalchemy.dialects import mysql

from cdc_sync.records import ColumnType, Kind, TableId
from cdc_sync.sinks.sql.mysql_types import MySqlTypes
from cdc_sync.sinks.sql.mysql_values import Refused, literal_for
from cdc_sync.sources.mysql import columns as ct
from cdc_sync.sources.mysql.columns import ColumnSpec, column_type

T = TableId("db", "t")


def test_binary_is_fixed_and_varbinary_is_not() -> None:
    fixed = column_type(T, ColumnSpec("b", ct.STRING, max_length=16, charset="binary"))
    varying = column_type(T, ColumnSpec("b", ct.VARCHAR, max_length=16, charset="binary"))
    assert fixed == ColumnType(Kind.BYTES, length=16, fixed=True)
    assert fixed.source_name == "binary(16)" and varying.source_name == "varbinary(16)"
    assert not varying.fixed
    # compared: BINARY(16) -> VARBINARY(16) is a schema change
    assert fixed != varying and hash(fixed) != hash(varying)


@pytest.mark.parametrize(
    ("ctype", "key", "spelled"),
    [
        (ColumnType(Kind.BYTES, length=16, fixed=True), None, "BINARY(16)"),
        (ColumnType(Kind.BYTES, length=16, fixed=True), 16, "BINARY(16)"),
        (ColumnType(Kind.BYTES, length=255, fixed=True), None, "BINARY(255)"),
        # BINARY(0) holds only b'' like VARBINARY(0); SQLAlchemy would spell it BINARY(1)
        (ColumnType(Kind.BYTES, length=0, fixed=True), None, "VARBINARY(0)"),
        (ColumnType(Kind.BYTES, length=16), None, "VARBINARY(16)"),
        (ColumnType(Kind.BYTES, length=16), 16, "VARBINARY(16)"),
    ],
)
def test_target_type(ctype: ColumnType, key: int | None, spelled: str) -> None:
    got = MySqlTypes().column_type(ctype, T, "b", key=key)
    assert str(got.compile(dialect=mysql.dialect())) == spelled


def test_literal_refuses_a_value_binary_would_pad() -> None:
    lit = literal_for(ColumnType(Kind.BYTES, length=4, fixed=True))
    assert lit(b"ab\x00\x00") == "x'61620000'"
    assert lit(b"toolong") == "x'746f6f6c6f6e67'"  # the server refuses it (1406)
    with pytest.raises(Refused, match=r"shorter than BINARY\(4\)"):
        lit(b"ab")
    assert literal_for(ColumnType(Kind.BYTES, length=4))(b"ab") == "x'6162'"
