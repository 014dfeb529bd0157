"""Compiling and applying a table's rules: schema, ops, keys, provenance, custom, dead letters."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from cdc_sync.config.rules import TableRules
from cdc_sync.errors import ConfigError, PermanentError
from cdc_sync.records import (
    UNCHANGED,
    ChangeRecord,
    Column,
    ColumnType,
    Kind,
    Op,
    PgLsn,
    Row,
    TableId,
    TableSchema,
)
from cdc_sync.transforms import Applied, Change, RuleError, TableTransform, compile_table
from tests.unit import custom_rules_example

T = TableId("public", "customers")
P = "pipelines.crm_to_hub.tables.public.customers"
KEY = "0123456789abcdef-key"
S = TableSchema(
    T,
    (
        Column("id", ColumnType(Kind.INTEGER), False),
        Column("name", ColumnType(Kind.VARCHAR, length=50)),
        Column("phone", ColumnType(Kind.VARCHAR, length=20)),
        Column("status", ColumnType(Kind.SMALLINT)),
        Column("notes", ColumnType(Kind.TEXT)),
    ),
    ("id",),
)
ROW = (1, "Ann", "13812345678", 1, "hello")
WHEN = datetime(2026, 1, 1, tzinfo=UTC)


def tt_(rules: dict[str, Any], schema: TableSchema = S) -> TableTransform:
    return compile_table(T, TableRules.model_validate(rules), schema, P)


def rec(
    op: Op,
    after: Row | None = ROW,
    before: Row | None = None,
    changed: tuple[str, ...] = (),
    schema: TableSchema = S,
) -> ChangeRecord:
    return ChangeRecord(
        op, T, schema, before, after, PgLsn(7), "tx", WHEN, before is not None, changed
    )


def problems(rules: dict[str, Any], schema: TableSchema = S) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        tt_(rules, schema)
    return ei.value.problems


def applied(tt: TableTransform, r: ChangeRecord) -> Applied:
    out = tt.apply(r)
    assert out is not None
    return out


# -- compiling ---------------------------------------------------------------------------------


def test_no_rules_is_identity_and_returns_the_record_itself() -> None:
    tt = tt_({})
    assert tt.identity and tt.schema is S and tt.source is S
    r = rec(Op.INSERT)
    out = applied(tt, r)
    assert out.record is r and out.rules == ()
    assert not tt.sensitive_key and tt.sensitive == frozenset()


def test_output_schema_renames_drops_and_appends_target_only_columns() -> None:
    tt = tt_(
        {
            "columns": {
                "site": {"value": "crm"},
                "id": "customer_id",
                "notes": {"drop": True},
                "loaded": {"default": 0},
                "phone": {"target": "mobile"},
            }
        }
    )
    assert tt.schema.names == ("customer_id", "name", "mobile", "status", "site", "loaded")
    assert tt.schema.key == ("customer_id",) and tt.schema.table == T
    assert not tt.identity
    out = applied(tt, rec(Op.INSERT, changed=("phone", "notes", "name")))
    assert out.record.after == (1, "Ann", "13812345678", 1, "crm", 0)
    assert out.record.changed == ("mobile", "name")
    assert out.record.schema is tt.schema


def test_include_keeps_listed_columns_and_constants() -> None:
    tt = tt_({"include": ["id", "phone"], "columns": {"site": {"value": "crm"}}})
    assert tt.schema.names == ("id", "phone", "site")
    assert applied(tt, rec(Op.INSERT)).record.after == (1, "13812345678", "crm")


def test_every_problem_is_listed_with_its_key_path() -> None:
    got = problems(
        {
            "filter": "x = 1 and status = 'abc'",
            "custom": ["pkg.mod:fn", "tests.unit.custom_rules_example:NOT_A_FUNCTION"],
            "columns": {
                "state": {"map": {"a": "b"}},
                "id": {"drop": True},
                "name": {"transforms": ["trim", "lower"]},
                "status": {"transforms": ["lower"]},
                "phone": {"target": "name"},
                "ghost": {},
            },
        }
    )
    assert got == [
        f"{P}.custom[0]: cannot import 'pkg.mod:fn': ModuleNotFoundError",
        f"{P}.custom[1]: 'tests.unit.custom_rules_example:NOT_A_FUNCTION' is not callable",
        f"{P}.columns.id.drop: key column 'id' cannot be dropped",
        f"{P}.columns.status.transforms[0]: lower applies to text columns, 'status' is smallint",
        f"{P}.columns.state.map: column 'state' does not exist in source table public.customers",
        f"{P}.columns.ghost: column 'ghost' does not exist in source table public.customers",
        f"{P}.columns.phone.target: target column 'name' is also the target of column 'name'",
        f"{P}.filter: unknown column 'x'",
        f"{P}.filter: cannot compare smallint column 'status' with 'abc'",
    ]


def test_missing_custom_function_and_include_problems() -> None:
    got = problems(
        {
            "custom": "tests.unit.custom_rules_example:nope",
            "include": ["name", "nope"],
            "columns": {"phone": {"transforms": ["trim"]}},
        }
    )
    assert got == [
        f"{P}.custom[0]: cannot import 'tests.unit.custom_rules_example:nope': AttributeError",
        f"{P}.include[1]: unknown column 'nope'",
        f"{P}.include: key column 'id' must be included",
        f"{P}.columns.phone: column 'phone' is not in include",
    ]


def test_target_only_column_may_not_clash_with_a_source_column() -> None:
    got = problems({"columns": {"phone": "mobile", "x": {"value": 1, "target": "mobile"}}})
    assert got == [
        f"{P}.columns.x.target: target column 'mobile' is also the target of column 'phone'"
    ]


def test_key_column_cannot_be_a_constant() -> None:
    assert problems({"columns": {"id": {"value": 5}}}) == [
        f"{P}.columns.id.value: key column 'id' cannot be a constant"
    ]


def test_sensitive_columns() -> None:
    tt = tt_(
        {
            "columns": {
                "phone": {"target": "mobile", "transforms": [{"mask": {"keep_last": 2}}]},
                "notes": {"transforms": ["redact"]},
                "name": {"transforms": ["lower"]},
            }
        }
    )
    assert tt.sensitive == frozenset({"mobile", "notes"}) and not tt.sensitive_key
    assert tt_({"columns": {"id": {"transforms": [{"hash": {"key": KEY}}]}}}).sensitive_key


def test_schema_change_without_recompiling_is_refused() -> None:
    tt = tt_({"columns": {"name": {"transforms": ["lower"]}}})
    other = TableSchema(T, (*S.columns, Column("extra", ColumnType(Kind.TEXT))), ("id",))
    with pytest.raises(PermanentError, match="recompiled"):
        tt.apply(rec(Op.INSERT, (*ROW, "e"), schema=other))
    same = TableSchema(T, S.columns, S.key)  # equal but another object: fine
    assert applied(tt, rec(Op.INSERT, schema=same)).record.after == (1, "ann", *ROW[2:])


# -- ops and keys ------------------------------------------------------------------------------

FILTERED = {"filter": "status = 1", "columns": {"name": {"transforms": ["upper"]}}}


def test_insert_not_matching_the_filter_is_skipped() -> None:
    tt = tt_(FILTERED)
    assert tt.apply(rec(Op.INSERT, (2, "b", None, 2, None))) is None
    assert applied(tt, rec(Op.INSERT)).record.after == (1, "ANN", *ROW[2:])


def test_update_leaving_the_filter_becomes_a_delete_of_the_old_key() -> None:
    tt = tt_(
        {**FILTERED, "columns": {"id": {"target": "cid", "transforms": [{"hash": {"key": KEY}}]}}}
    )
    new, old = (2, "b", None, 2, None), (1, None, None, None, None)
    out = applied(tt, rec(Op.UPDATE, new, before=old))
    assert out.rules == (("", "filter"),)
    r = out.record
    assert r.op is Op.DELETE and r.after is None and r.before_is_key_only
    assert r.schema is tt.schema and r.changed == ()
    assert (r.position, r.xid, r.commit_time) == (PgLsn(7), "tx", WHEN)
    hashed_old = applied(tt, rec(Op.INSERT)).record.after
    assert hashed_old is not None
    assert r.before == (hashed_old[0], None, None, None, None)
    # Without an old image: the new row's key.
    r2 = applied(tt, rec(Op.UPDATE, new)).record
    assert r2.op is Op.DELETE and r2.before is not None and r2.before[0] != hashed_old[0]
    assert r2.key() == r2.before[:1]


def test_delete_and_truncate_always_pass() -> None:
    tt = tt_(FILTERED)
    out = applied(tt, rec(Op.DELETE, None, before=(5, "zed", None, 2, None)))
    assert out.record.op is Op.DELETE
    assert out.record.before == (5, None, None, None, None)  # key-only, other values dropped
    assert out.record.before_is_key_only and out.rules == ()
    t = applied(tt, rec(Op.TRUNCATE, None))
    assert t.record.op is Op.TRUNCATE and t.record.schema is tt.schema and t.rules == ()


def test_before_image_keeps_only_the_transformed_key() -> None:
    # An old invalid phone in a full before image must not dead-letter the update.
    tt = tt_({"columns": {"phone": {"transforms": [{"phone": {"region": "CN"}}]}}})
    old = (1, "Ann", "bad old number", 1, "x")
    r = applied(tt, rec(Op.UPDATE, before=old)).record
    assert r.before == (1, None, None, None, None) and r.before_is_key_only
    assert r.after == (1, "Ann", "+8613812345678", 1, "hello")


def test_hashed_key_is_the_target_key_and_key_changes_are_still_seen() -> None:
    tt = tt_({"columns": {"id": {"transforms": [{"hash": {"key": KEY}}]}}})
    assert tt.sensitive_key and tt.schema.columns[0].type == ColumnType(Kind.VARCHAR, length=64)
    moved = applied(tt, rec(Op.UPDATE, (2, *ROW[1:]), before=(1, None, None, None, None)))
    assert moved.record.key_changed()
    key = moved.record.key()[0]
    assert isinstance(key, str) and len(key) == 64
    assert moved.rules == (("id", "hash"),)
    same = applied(tt, rec(Op.UPDATE, ROW, before=(1, None, None, None, None))).record
    assert not same.key_changed()
    deleted = applied(tt, rec(Op.DELETE, None, before=(2, None, None, None, None))).record
    assert deleted.key() == (key,)


def test_masked_key() -> None:
    tt = tt_(
        {"columns": {"phone": {"drop": True}, "id": {"transforms": [{"mask": {"keep_last": 1}}]}}}
    )
    r = applied(tt, rec(Op.INSERT, (12345, *ROW[1:]))).record
    assert r.key() == ("****5",) and tt.schema.columns[0].type.kind is Kind.TEXT


def test_unchanged_values_pass_through_every_rule() -> None:
    tt = tt_({"columns": {"notes": {"transforms": ["trim", {"mask": {"keep_first": 1}}]}}})
    out = applied(tt, rec(Op.UPDATE, (1, "Ann", None, 1, UNCHANGED)))
    assert out.record.after == (1, "Ann", None, 1, UNCHANGED) and out.rules == ()


def test_filter_on_an_unchanged_value_is_a_rule_error() -> None:
    tt = tt_({"filter": "notes is not null"})
    with pytest.raises(RuleError) as ei:
        tt.apply(rec(Op.UPDATE, (1, "Ann", None, 1, UNCHANGED)))
    assert (ei.value.rule, ei.value.column) == ("filter", "notes")
    assert "REPLICA IDENTITY FULL" in ei.value.reason


# -- provenance --------------------------------------------------------------------------------


def test_rules_name_what_changed_in_column_then_rule_order_and_are_interned() -> None:
    tt = tt_(
        {
            "columns": {
                "site": {"value": "crm"},
                "status": {"map": {1: "active", 2: "gone"}},
                "name": {"target": "nm", "transforms": ["trim", "lower", "upper"]},
            }
        }
    )
    a = applied(tt, rec(Op.INSERT, (1, " Ann ", None, 1, None)))
    assert a.rules == (("nm", "trim"), ("nm", "lower"), ("nm", "upper"), ("status", "map"))
    b = applied(tt, rec(Op.INSERT, (2, " Bob ", None, 2, None)))
    assert b.rules is a.rules
    c = applied(tt, rec(Op.INSERT, (3, "ann", None, None, None)))  # trim / lower: no-ops
    assert c.rules == (("nm", "upper"),)
    assert applied(tt, rec(Op.INSERT, (3, "ANN", None, None, None))).rules == (
        ("nm", "lower"),
        ("nm", "upper"),
    )
    # A constant written over a source column counts as a change when it differs.
    tt2 = tt_({"columns": {"notes": {"value": "n/a"}}})
    assert applied(tt2, rec(Op.INSERT)).rules == (("notes", "value"),)
    assert applied(tt2, rec(Op.INSERT, (*ROW[:4], "n/a"))).rules == ()


# -- custom functions --------------------------------------------------------------------------


def test_custom_runs_first_and_its_output_is_still_masked() -> None:
    custom_rules_example.CALLS.clear()
    tt = tt_(
        {
            "custom": ["tests.unit.custom_rules_example:fn"],
            "columns": {"name": {"transforms": [{"mask": {"keep_first": 2}}]}},
        }
    )
    out = applied(tt, rec(Op.UPDATE, before=(1, None, None, None, None)))
    assert out.record.after == (1, "x-***", *ROW[2:])
    assert out.rules == (("name", "custom"), ("name", "mask"))
    (change,) = custom_rules_example.CALLS
    assert change == Change("update", "public.customers", dict(zip(S.names, ROW, strict=True)))
    assert tt.apply(rec(Op.INSERT, (1, "skip", None, None, None))) is None
    applied(tt, rec(Op.DELETE, None, before=(1, None, None, None, None)))
    applied(tt, rec(Op.TRUNCATE, None))
    assert len(custom_rules_example.CALLS) == 2  # neither delete nor truncate


def test_custom_output_goes_through_filter_and_rules() -> None:
    tt = tt_(
        {
            "custom": ["tests.unit.custom_rules_example:set_status"],
            "filter": "status = 9",
            "columns": {"status": {"map": {9: "nine"}}},
        }
    )
    assert applied(tt, rec(Op.INSERT)).record.after == (1, "Ann", "13812345678", "nine", "hello")


@pytest.mark.parametrize(
    ("fn", "column", "reason"),
    [
        ("unknown_column", "no_such_column", "returned an unknown column"),
        ("explode", None, "tests.unit.custom_rules_example:explode raised ValueError"),
        (
            "wrong_type",
            None,
            "tests.unit.custom_rules_example:wrong_type returned dict, not a Change or None",
        ),
    ],
)
def test_custom_failures_are_rule_errors_without_values(
    fn: str, column: str | None, reason: str
) -> None:
    tt = tt_({"custom": f"tests.unit.custom_rules_example:{fn}"})
    with pytest.raises(RuleError) as ei:
        tt.apply(rec(Op.INSERT))
    e = ei.value
    assert (e.rule, e.column, e.reason) == ("custom", column, reason)
    assert "Ann" not in str(e) and e.__cause__ is None
    assert e.__context__ is None or e.__suppress_context__


def test_change_replace_returns_a_copy() -> None:
    c = Change("insert", "public.t", {"a": 1, "b": 2})
    d = c.replace(b=3)
    assert d.values == {"a": 1, "b": 3} and c.values == {"a": 1, "b": 2} and d.op == "insert"


# -- dead letters and re-reads -----------------------------------------------------------------

PRIVATE = {
    "columns": {
        "phone": {
            "target": "mobile",
            "transforms": [{"phone": {"region": "CN"}}, {"mask": {"keep_last": 2}}],
        },
        "notes": {"transforms": [{"hash": {"key": KEY}}]},
        "status": {"cast": "int"},
        "site": {"value": "crm"},
    }
}


def test_masked_row_reveals_only_keys_and_masked_values() -> None:
    tt = tt_(PRIVATE)
    m = tt.masked_row(rec(Op.INSERT, (1, "Ann Lee", "13812345678", 3, None)))
    assert m == {
        "id": 1,
        "name": "<varchar len=7>",
        "mobile": "************78",
        "status": "<smallint>",
        "notes": None,
        "site": "<text len=3>",
    }
    json.dumps(m)


def test_masked_row_falls_back_to_the_privacy_steps_then_to_a_placeholder() -> None:
    tt = tt_(PRIVATE)
    m = tt.masked_row(rec(Op.UPDATE, (1, UNCHANGED, "bad number", 3, b"\x00")))
    assert m["mobile"] == "********er"  # phone failed: the mask alone on the raw value
    assert m["name"] == "<unchanged>"
    assert isinstance(m["notes"], str) and len(m["notes"]) == 64
    tt2 = tt_({"columns": {"phone": {"transforms": [{"phone": {"region": "CN"}}, "redact"]}}})
    assert tt2.masked_row(rec(Op.INSERT, (1, "a", "bad", 1, None)))["phone"] is None


def test_masked_row_of_a_delete_uses_the_before_image_and_never_raises() -> None:
    tt = tt_(PRIVATE)
    m = tt.masked_row(rec(Op.DELETE, None, before=(4, None, None, None, None)))
    assert m["id"] == 4 and m["mobile"] is None
    assert tt.masked_row(rec(Op.TRUNCATE, None)) == {}
    assert tt.masked_row(rec(Op.INSERT, (1,))) == {}  # malformed row: empty, no exception


def test_masked_row_with_a_sensitive_key() -> None:
    tt = tt_({"columns": {"id": {"transforms": [{"cast": "int"}, {"mask": {"keep_last": 1}}]}}})
    m = tt.masked_row(rec(Op.INSERT, (12345, *ROW[1:])))
    assert m["id"] == "****5" and m["phone"] == "<varchar len=11>"
    # Key rules failing: a placeholder, never the clear key.
    tt2 = tt_({"columns": {"id": {"transforms": [{"cast": "smallint"}, {"hash": {"key": KEY}}]}}})
    assert tt2.masked_row(rec(Op.INSERT, (99999, *ROW[1:])))["id"] == "<masked>"


def test_identity_masked_row() -> None:
    m = tt_({}).masked_row(rec(Op.INSERT, (1, "Ann", None, 2, "note")))
    assert m == {
        "id": 1,
        "name": "<varchar len=3>",
        "phone": None,
        "status": "<smallint>",
        "notes": "<text len=4>",
    }


def test_source_key_and_target_key_text() -> None:
    tt = tt_({"columns": {"id": "cid", "name": {"transforms": ["lower"]}}})
    assert tt.source_key(rec(Op.INSERT)) == {"id": 1}
    assert tt.source_key(rec(Op.DELETE, None, before=(Decimal("2"), None, None, None, None))) == {
        "id": "2"
    }
    assert tt.target_key_text(rec(Op.INSERT)) == '{"cid":1}'
    assert tt.source_key(rec(Op.TRUNCATE, None)) is None
    hashed = tt_({"columns": {"id": {"transforms": [{"hash": {"key": KEY}}]}}})
    assert hashed.source_key(rec(Op.INSERT)) is None
    text = hashed.target_key_text(rec(Op.INSERT))
    assert text is not None and len(json.loads(text)["id"]) == 64
