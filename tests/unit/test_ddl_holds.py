"""Which existing target columns hold a source column's values, and which need a value the
source no longer sends (the server-side behaviour: tests/integration/test_ddl_drift_routes.py)."""

from __future__ import annotations

import pytest

from cdc_sync.records import ColumnType, Kind, TableId
from cdc_sync.sinks.sql.ddl import _holds_ints
from cdc_sync.sinks.sql.ddl_notes import no_key_index
from cdc_sync.sinks.sql.mysql_ddl import _existing, _holds
from cdc_sync.sinks.sql.types import PostgresTypes

T = TableId("public", "t")


@pytest.mark.parametrize(
    ("ct", "target", "holds"),
    [
        (ColumnType(Kind.INTEGER), "bigint", True),  # widened by the daemon for a later type
        (ColumnType(Kind.INTEGER), "integer", True),
        (ColumnType(Kind.SMALLINT), "integer", True),
        (ColumnType(Kind.YEAR), "integer", True),
        (ColumnType(Kind.BIGINT), "integer", False),  # narrower: widened instead
        (ColumnType(Kind.INTEGER, unsigned=True), "numeric(20,0)", True),  # MySQL source
        (ColumnType(Kind.BIGINT, unsigned=True), "numeric(20,0)", True),
        (ColumnType(Kind.BIGINT, unsigned=True), "numeric(19,0)", False),
        (ColumnType(Kind.BIGINT), "numeric(21,2)", True),
        (ColumnType(Kind.BIGINT), "numeric(20,2)", False),
        (ColumnType(Kind.BIGINT), "numeric", True),
        (ColumnType(Kind.INTEGER), "text", False),
        (ColumnType(Kind.NUMERIC, precision=10, scale=0), "bigint", False),  # not an integer
        (ColumnType(Kind.INTEGER, array_dims=1), "bigint[]", False),
    ],
)
def test_pg_target_integer_at_least_as_wide_holds(ct: ColumnType, target: str, holds: bool) -> None:
    assert _holds_ints(ct, PostgresTypes().base_name(ct, T).removesuffix("[]"), target) is holds


@pytest.mark.parametrize(
    ("row", "needs"),
    [
        (("varchar", "varchar(10)", "NO", "utf8mb4_bin", None, "", "", ""), True),
        (("varchar", "varchar(10)", "YES", "utf8mb4_bin", None, "", "", ""), False),
        (("int", "int(11)", "NO", None, "5", "", "", ""), False),  # a default fills it
        (("int", "int(11)", "NO", None, None, "auto_increment", "PRI", ""), False),
        (("int", "int(11)", "NO", None, None, "STORED GENERATED", "", ""), False),
        (("int", "int(11)", "NO", None, None, "PERSISTENT", "", ""), False),  # MariaDB
        (("int", "int(11)", "NO", None, None, "VIRTUAL GENERATED", "", ""), False),
    ],
)
def test_mysql_column_that_needs_a_value(row: tuple[object, ...], needs: bool) -> None:
    assert _existing(row).needs_value is needs


def test_mysql_modify_keeps_comment_and_collation() -> None:
    col = _existing(("varchar", "varchar(10)", "NO", "latin1_general_cs", None, "", "",
                     "it's 100% \\ kept"))  # fmt: skip
    assert col.keep_collation() == " CHARACTER SET latin1 COLLATE latin1_general_cs"
    assert col.keep_comment() == " COMMENT 'it''s 100% \\\\ kept'"


def test_no_key_index_names_the_dropped_key_column() -> None:
    err = no_key_index(T, ("a",), [["a", "b"]], ("a", "v"))
    assert "holds 'b', which the source table no longer has" in str(err)
    assert "re-key the target table on (a)" in str(err)
    plain = no_key_index(T, ("a",), [["v"]], ("a", "v"))
    assert str(plain).endswith("changes cannot be applied by key")


@pytest.mark.parametrize(
    ("target", "source", "holds"),
    [
        ("decimal(20,2)", "int", True),  # 18 whole digits >= 10
        ("decimal(12,2)", "int", True),
        ("decimal(11,2)", "int", False),  # 9 whole digits < 10
        ("decimal(19,0)", "bigint", True),
        ("decimal(19,0)", "bigint unsigned", False),  # 18446744073709551615: 20 digits
        ("decimal(20,0) unsigned", "bigint unsigned", True),
        ("decimal(20,0) unsigned", "int", False),  # negative ints do not fit
    ],
)
def test_mysql_decimal_target_for_an_integer_source(target: str, source: str, holds: bool) -> None:
    """A DBA's DECIMAL column for an integer source holds it exactly when its whole digits
    suffice (the pipeline stopped on it; a PostgreSQL target took it)."""
    assert _holds(target, source) is holds
