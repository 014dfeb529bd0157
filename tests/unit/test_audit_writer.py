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


def _rec(key: int = 5) -> ChangeRecord:
    schema = TableSchema(
        T, (Column("id", ColumnType(Kind.INTEGER)), Column("phone", ColumnType(Kind.TEXT))), ("id",)
    )
    return ChangeRecord(
        Op.INSERT, T, schema, None, (key, "+86***"), PgLsn(1), "9", datetime(2026, 1, 1, tzinfo=UTC)
    )


def test_rule_provenance_goes_into_detail_and_a_row_can_be_marked_dead_lettered() -> None:
    w = AuditWriter("p", "row")
    rules = (("phone", "phone"), ("phone", "mask"), ("", "filter"))
    i = w.add(_rec(), T, rules=rules)
    j = w.add(
        _rec(6), T, outcome="dead_letter", pk='{"id":6}', extra={"dead_letter": {"rule": "x"}}
    )
    assert (i, j) == (0, 1)
    rows = w.take()
    w.mark(rows, 0, "dead_letter", {"dead_letter": {"code": "23505"}})
    first, second = w.as_dicts(rows)
    assert first["outcome"] == "dead_letter"
    assert first["detail"] == {
        "rules": {"phone": ["phone", "mask"], "*": ["filter"]},
        "dead_letter": {"code": "23505"},
    }
    assert second["pk"] == '{"id":6}' and second["detail"] == {"dead_letter": {"rule": "x"}}
    assert AuditWriter("p", "transaction").add(_rec(), T) == -1


def test_stored_keys_read_back_to_canonical_values() -> None:
    from cdc_sync.audit.dead_letters import key_json  # noqa: PLC0415
    from cdc_sync.audit.keys import from_json  # noqa: PLC0415

    values = [
        (ColumnType(Kind.BIGINT), 2**40),
        (ColumnType(Kind.NUMERIC), Decimal("1.50")),
        (ColumnType(Kind.UUID), UUID(int=7)),
        (ColumnType(Kind.DATE), date(2026, 1, 2)),
        (ColumnType(Kind.TIMESTAMPTZ), datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)),
        (ColumnType(Kind.TIME), time(1, 2, 3, 4)),
        (ColumnType(Kind.BYTES), b"\x00\xff"),
        (ColumnType(Kind.TEXT), "Zoë"),
        (ColumnType(Kind.BOOLEAN), True),
    ]
    for ctype, v in values:
        text = key_json({"k": v})
        assert text is not None
        assert from_json(ctype, json.loads(text)["k"]) == v, (ctype, v)


def test_transaction_summary_is_corrected_for_rows_the_target_refused() -> None:
    w = AuditWriter("p", "transaction")
    for k in (1, 2, 3):
        w.add(_rec(k), T)
    w.end_transaction("9", datetime(2026, 1, 1, tzinfo=UTC), PgLsn(5))
    rows = w.take()
    w.refused("9", T, Op.INSERT)  # found by the writer thread after the summary was built
    w._correct(rows)
    (summary,) = w.as_dicts(rows)
    assert summary["detail"] == {
        "counts": {"s.t": {"insert": 2}},
        "rows": 2,
        "outcomes": {"dead_letter": 1},
    }
    assert not w._corrections


def test_copied_rows_by_key_are_audited_as_their_insert_records() -> None:
    """A chunk loaded as COPY text is audited from its keys: the same rows (or counts)
    as its rows fed one by one as INSERT records with op 'snapshot', in pk text order."""
    schema = TableSchema(
        T, (Column("id", ColumnType(Kind.INTEGER)), Column("v", ColumnType(Kind.TEXT))), ("id",)
    )
    at, when = PgLsn(0x10), datetime(2026, 1, 2, tzinfo=UTC)
    target = TableId("public", "copy")
    for level in ("row", "transaction"):
        by_record, by_key = AuditWriter("p", level), AuditWriter("p", level)
        for i in (3, 1, 2):
            rec = ChangeRecord(Op.INSERT, T, schema, None, (i, "x"), at, "snapshot:1", when)
            by_record.add(rec, target, op="snapshot")
        by_key.add_copied(T, target, schema, [(3,), (1,), (2,)], at, "snapshot:1", when)
        for w in (by_record, by_key):
            w.end_transaction("snapshot:1", when, at)
        # The same rows; copied ones in pk text order (see add_copied).
        key = lambda d: str(d["pk"])  # noqa: E731
        expected = sorted(by_record.as_dicts(by_record.take()), key=key)
        assert by_key.as_dicts(by_key.take()) == expected
