"""Audit key rendering and buffering, without a database."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time
from decimal import Decimal
from uuid import UUID

from cdc_sync.audit.writer import AuditWriter, default_key_renderer, json_safe
from cdc_sync.records import (
    ChangeRecord,
    Column,
    ColumnType,
    Interval,
    Kind,
    Op,
    PgLsn,
    TableId,
    TableSchema,
)

T = TableId("s", "t")


def test_key_json_is_in_key_order_and_json_safe() -> None:
    schema = TableSchema(
        T,
        tuple(Column(n, ColumnType(Kind.TEXT)) for n in ("z", "a", "m", "b", "u", "t", "i")),
        ("z", "a", "m", "b", "u", "t", "i"),
    )
    key = (
        Decimal("1.50"),
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        Decimal("NaN"),
        b"\x00\xff",
        UUID(int=1),
        "☎",
        7,
    )
    text = default_key_renderer(schema, key)
    assert text == (
        '{"z":"1.50","a":"2026-01-02T03:04:05+00:00","m":"NaN","b":"\\\\x00ff",'
        '"u":"00000000-0000-0000-0000-000000000001","t":"☎","i":7}'
    )
    assert list(json.loads(text)) == list(schema.key)
    plain = {n: json_safe(v) for n, v in zip(schema.key, key, strict=True)}
    assert text == json.dumps(plain, ensure_ascii=False, separators=(",", ":"))


def test_json_safe_other_values() -> None:
    assert json_safe(date(2026, 1, 1)) == "2026-01-01"
    assert json_safe(time(1, 2)) == "01:02:00"
    assert json_safe(float("inf")) == "inf"
    assert json_safe(Interval(1, 2, 3)) == Interval(1, 2, 3).to_iso()
    assert json_safe([1, Decimal("2")]) == [1, "2"]


def test_only_key_values_reach_the_audit_and_renderer_is_a_hook() -> None:
    schema = TableSchema(
        T, (Column("id", ColumnType(Kind.INTEGER)), Column("email", ColumnType(Kind.TEXT))), ("id",)
    )
    rec = ChangeRecord(
        Op.UPDATE,
        T,
        schema,
        None,
        (5, "jane@example.com"),
        PgLsn(1),
        "9",
        datetime(2026, 1, 1, tzinfo=UTC),
        changed=("email",),
    )
    w = AuditWriter("p", "row", key_renderer=lambda s, k: json.dumps({"id": "***"}))
    w.add(rec, T)
    assert w.pending == 1
    (row,) = w.as_dicts(w._rows)
    assert "jane" not in repr(row) and row["pk"] == '{"id": "***"}'
    assert row["detail"] == {"changed": ["email"]} and row["op"] == "update"
    w.discard()
    assert w.pending == 0
