"""merged_number: the MySQL / MariaDB type a target column is widened to when neither its
type nor the source's new one holds the other (as a PostgreSQL target merges them)."""

from __future__ import annotations

import re

import pytest

from cdc_sync.sinks.sql.mysql_merge import TooWide, merged_number


@pytest.mark.parametrize(
    ("have", "want", "merged"),
    [
        # DECIMALs: the most integer digits and the largest scale of the two
        ("decimal(12,4)", "decimal(12,1)", "decimal(15,4)"),  # scale kept, digits widened
        ("decimal(10,2)", "decimal(10,4)", "decimal(12,4)"),
        ("decimal(12,1)", "decimal(12,4)", "decimal(15,4)"),
        ("decimal(5,5)", "decimal(3,0)", "decimal(8,5)"),
        ("decimal(10,2) unsigned", "decimal(10,2)", "decimal(10,2)"),  # the source's holds
        ("decimal(10,2) unsigned", "decimal(8,3)", "decimal(11,3)"),  # signed: negatives
        ("decimal", "decimal(10,2)", "decimal(12,2)"),  # DECIMAL is DECIMAL(10,0)
        # integer signedness: the smallest signed integer holding both, else a DECIMAL
        ("int", "bigint unsigned", "decimal(20,0)"),
        ("bigint unsigned", "int", "decimal(20,0)"),
        ("bigint", "bigint unsigned", "decimal(20,0)"),
        ("tinyint", "tinyint unsigned", "smallint"),
        ("mediumint unsigned", "smallint", "int"),
        ("int unsigned", "int", "bigint"),
        ("int", "smallint unsigned", "int"),  # holds it: nothing to change
        ("tinyint unsigned", "bigint", "bigint"),  # the source's holds the target's
        # an integer with a DECIMAL: its digits as DECIMAL(n,0)
        ("decimal(12,4)", "int", "decimal(14,4)"),
        ("int", "decimal(12,4)", "decimal(14,4)"),
        ("bigint unsigned", "decimal(5,2)", "decimal(22,2)"),
        ("decimal(20,0) unsigned", "int", "decimal(20,0)"),  # negative ints
        ("decimal(25,0)", "bigint unsigned", "decimal(25,0)"),  # holds both already
        ("bigint", "decimal(5,0)", "bigint"),
        ("decimal(5,0)", "int", "int"),
    ],
)
def test_merged_type_holds_both(have: str, want: str, merged: str) -> None:
    assert merged_number(have, want) == merged


@pytest.mark.parametrize(
    ("have", "want"),
    [
        ("decimal(12,4)", "double"),  # not exact: no merge (refused as before)
        ("float", "decimal(12,4)"),
        ("varchar(10)", "int"),
        ("int", "year"),
        ("int unsigned zerofill", "int"),
    ],
)
def test_not_exact_numbers_are_not_merged(have: str, want: str) -> None:
    assert merged_number(have, want) is None


@pytest.mark.parametrize(
    ("have", "want", "needs"),
    [
        ("decimal(65,30)", "decimal(40,0)", "decimal(70,30)"),  # 40 integer digits + 30
        ("decimal(65,0)", "decimal(30,30)", "decimal(95,30)"),
        ("decimal(36,0)", "decimal(31,31)", "decimal(67,31)"),
    ],
)
def test_beyond_decimal_65_30_is_refused(have: str, want: str, needs: str) -> None:
    with pytest.raises(TooWide, match=f"^{re.escape(needs)}$"):
        merged_number(have, want)


def test_merged_decimal_65_30_is_allowed() -> None:
    assert merged_number("decimal(35,0)", "decimal(30,30)") == "decimal(65,30)"
    assert merged_number("decimal(65,30)", "bigint unsigned") == "decimal(65,30)"
