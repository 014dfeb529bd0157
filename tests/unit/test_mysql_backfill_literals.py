"""MariaDB COLUMN_DEFAULT spellings → the value an added column's existing rows hold, and the
foreign-key actions the binlog misses (sources.mysql.backfill, sources.mysql.cascades)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest

from cdc_sync.records import Backfill, Column, ColumnType, Kind, TableId
from cdc_sync.sources.mysql.backfill import _literal
from cdc_sync.sources.mysql.cascades import Cascade


@pytest.mark.parametrize(
    ("spelled", "kind", "value"),
    [
        ("1", Kind.TINYINT, Backfill(1)),
        ("-42", Kind.BIGINT, Backfill(-42)),
        ("12.50", Kind.NUMERIC, Backfill(Decimal("12.50"))),
        ("2.5", Kind.DOUBLE, Backfill(2.5)),
        ("'it''s 5%'", Kind.VARCHAR, Backfill("it's 5%")),
        ("''", Kind.CHAR, Backfill("")),
        ("'active'", Kind.ENUM, Backfill("active")),
        ("'2026-01-31'", Kind.DATE, Backfill(date(2026, 1, 31))),
        ("'2026-01-31 10:00:00'", Kind.TIMESTAMP, Backfill(datetime(2026, 1, 31, 10))),
        # Unknown: what the rows hold cannot be told from the spelling.
        ("current_timestamp()", Kind.TIMESTAMPTZ, None),
        ("uuid()", Kind.VARCHAR, None),
        ("'2026-01-31 10:00:00'", Kind.TIMESTAMPTZ, None),  # TIMESTAMP: the session's zone
        ("'0000-00-00'", Kind.DATE, None),
        ("'a\\nb'", Kind.VARCHAR, None),  # an escape
        ("b'101'", Kind.BIT, None),
        ("1.5", Kind.INTEGER, None),
        ("1", Kind.REAL, None),  # FLOAT: the canonical value is float32
    ],
)
def test_literal(spelled: str, kind: Kind, value: Backfill | None) -> None:
    assert _literal(spelled, Column("c", ColumnType(kind))) == value


def test_cascade_problem_names_key_actions_and_fixes() -> None:
    c = Cascade(
        TableId("dialer", "calls"), "fk_calls", ("customer_id",),
        TableId("dialer", "customers"), ("id",), "CASCADE", "RESTRICT",
    )  # fmt: skip
    text = c.problem()
    assert text.startswith(
        "table dialer.calls: foreign key fk_calls (customer_id) -> dialer.customers (id) is "
        "ON DELETE CASCADE;"
    )
    assert "`fk_cascades: accept` on the table entry of dialer.calls" in text
    assert c.actions == "ON DELETE CASCADE"
    both = Cascade(c.table, c.name, c.columns, c.parent, c.parent_columns, "SET NULL", "CASCADE")
    assert both.actions == "ON DELETE SET NULL ON UPDATE CASCADE"
