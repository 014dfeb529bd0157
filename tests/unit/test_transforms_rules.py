"""Column rules one by one: values, output types, NULL / UNCHANGED passthrough, error reasons."""

from __future__ import annotations

import hmac
import pickle
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from cdc_sync.config.rules import TableRules
from cdc_sync.errors import ConfigError, RowLevelError
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
)
from cdc_sync.transforms import RuleError, TableTransform, compile_table
from cdc_sync.transforms.text import normalise_phone

T = TableId("public", "t")
P = "pipelines.p.tables.public.t"
KEY = "0123456789abcdef-key"
INT, TEXT = ColumnType(Kind.INTEGER), ColumnType(Kind.TEXT)


def compiled(ctype: ColumnType, cfg: dict[str, Any], nullable: bool = True) -> TableTransform:
    schema = TableSchema(T, (Column("id", INT, False), Column("c", ctype, nullable)), ("id",))
    return compile_table(T, TableRules.model_validate({"columns": {"c": cfg}}), schema, P)


def run(ctype: ColumnType, cfg: dict[str, Any], value: object) -> object:
    tt = compiled(ctype, cfg)
    rec = ChangeRecord(
        Op.INSERT, T, tt.source, None, (1, value), PgLsn(1), "1", datetime(2026, 1, 1, tzinfo=UTC)
    )
    out = tt.apply(rec)
    assert out is not None and out.record.after is not None
    return out.record.after[1]


def fails(ctype: ColumnType, cfg: dict[str, Any], value: object) -> RuleError:
    with pytest.raises(RuleError) as ei:
        run(ctype, cfg, value)
    text = str(ei.value)
    assert str(value) not in text and repr(value) not in text, "the row value leaked"
    e = ei.value  # no chained exception (its text could quote the value)
    assert e.__cause__ is None and (e.__context__ is None or e.__suppress_context__)
    return ei.value


def out_column(ctype: ColumnType, cfg: dict[str, Any], nullable: bool = True) -> Column:
    return compiled(ctype, cfg, nullable).schema.columns[1]


def problems(ctype: ColumnType, cfg: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        compiled(ctype, cfg)
    return ei.value.problems


def tr(*items: object) -> dict[str, Any]:
    return {"transforms": list(items)}


# -- lower / upper / trim / regex -------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "value", "want"),
    [("lower", "AbC", "abc"), ("upper", "AbC", "ABC"), ("trim", "  a b \t", "a b")],
)
def test_case_and_trim(rule: str, value: str, want: str) -> None:
    assert run(TEXT, tr(rule), value) == want


@pytest.mark.parametrize("rule", ["lower", "upper", "trim", "regex", "mask", "hash", "phone"])
@pytest.mark.parametrize("value", [None, UNCHANGED])
def test_null_and_unchanged_pass_through(rule: str, value: object) -> None:
    specs: dict[str, object] = {
        "regex": {"regex": {"pattern": "a"}},
        "mask": {"mask": {"keep_last": 1}},
        "hash": {"hash": {"key": KEY}},
        "phone": {"phone": {"region": "CN"}},
    }
    assert run(TEXT, tr(specs.get(rule, rule)), value) is value


def test_text_rule_on_a_non_text_column_is_a_config_error() -> None:
    assert problems(INT, tr("trim", "lower")) == [
        f"{P}.columns.c.transforms[0]: trim applies to text columns, 'c' is integer",
        f"{P}.columns.c.transforms[1]: lower applies to text columns, 'c' is integer",
    ]
    assert "is jsonb" in problems(ColumnType(Kind.JSONB), tr("upper"))[0]


def test_trim_of_char_gives_varchar_and_enum_case_gives_text() -> None:
    assert out_column(ColumnType(Kind.CHAR, length=5), tr("trim")).type == ColumnType(
        Kind.VARCHAR, length=5
    )
    assert out_column(ColumnType(Kind.CHAR, length=5), tr("upper")).type.kind is Kind.CHAR
    enum = ColumnType(Kind.ENUM, enum_labels=("a", "b"))
    assert out_column(enum, tr("upper")).type == ColumnType(Kind.TEXT)


def test_regex_substitutes_with_groups() -> None:
    cfg = tr({"regex": {"pattern": r"(\d{3})-(\d{4})", "replace": r"\2-\1"}})
    assert run(TEXT, cfg, "call 555-1234 now") == "call 1234-555 now"
    assert run(TEXT, tr({"regex": {"pattern": r"\D"}}), "a1b2") == "12"
    assert out_column(ColumnType(Kind.VARCHAR, length=10), cfg).type == TEXT


# -- redact ------------------------------------------------------------------------------------


def test_redact_nulls_the_value_and_makes_the_column_nullable() -> None:
    assert run(TEXT, tr("redact"), "secret") is None
    col = out_column(TEXT, tr("redact"), nullable=False)
    assert col.nullable and col.type == TEXT


def test_redact_on_a_key_column_is_a_config_error() -> None:
    schema = TableSchema(T, (Column("id", INT, False),), ("id",))
    rules = TableRules.model_validate({"columns": {"id": tr("redact")}})
    with pytest.raises(ConfigError) as ei:
        compile_table(T, rules, schema, P)
    assert ei.value.problems == [
        f"{P}.columns.id.transforms[0]: key column 'id' cannot be redacted (use hash or mask)"
    ]


# -- phone -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "want"),
    [
        ("e164", "+8613812345678"),
        ("international", "+86 138 1234 5678"),
        ("national", "138 1234 5678"),
        ("digits", "8613812345678"),
    ],
)
def test_phone_formats(fmt: str, want: str) -> None:
    cfg = tr({"phone": {"region": "CN", "format": fmt}})
    for written in ("13812345678", "+86 138-1234-5678", "(+86) 138 1234 5678", 13812345678):
        assert run(TEXT, cfg, written) == want


def test_phone_invalid_number_reason_holds_no_value() -> None:
    cfg = tr({"phone": {"region": "CN"}})
    for bad in ("12345", "not a phone", "+1 555 0100"):
        e = fails(TEXT, cfg, bad)
        assert (e.rule, e.column, e.reason) == (
            "phone",
            "c",
            "not a valid phone number for region CN",
        )
        assert str(e) == "column 'c': phone: not a valid phone number for region CN"


@pytest.mark.parametrize("fmt", ["e164", "digits"])
def test_phone_extension_is_refused_where_the_format_cannot_hold_it(fmt: str) -> None:
    """E.164 has no extension: '650-253-0000 x99' became +16502530000, the x99 gone."""
    cfg = tr({"phone": {"region": "US", "format": fmt}})
    for written in ("650-253-0000 x99", "+1 650 253 0000 ext. 123"):
        e = fails(TEXT, cfg, written)
        assert e.reason.startswith("the number has an extension") and "99" not in str(e)
    dropped = tr({"phone": {"region": "US", "format": fmt, "extension": "drop"}})
    assert run(TEXT, dropped, "650-253-0000 x99") == ("+" if fmt == "e164" else "") + "16502530000"
    national = tr({"phone": {"region": "US", "format": "national"}})
    assert run(TEXT, national, "650-253-0000 x99") == "(650) 253-0000 ext. 99"


def test_phone_results_are_memoised() -> None:
    before = normalise_phone.cache_info().hits
    cfg = tr({"phone": {"region": "CN"}})
    for _ in range(3):
        run(TEXT, cfg, "13912345678")
    assert normalise_phone.cache_info().hits >= before + 2
    assert normalise_phone.cache_info().maxsize == 65536


def test_phone_output_type_and_kinds() -> None:
    cfg = tr({"phone": {"region": "CN"}})
    assert out_column(TEXT, cfg).type == TEXT
    assert out_column(ColumnType(Kind.VARCHAR, length=20), cfg).type == ColumnType(
        Kind.VARCHAR, length=32
    )
    assert out_column(ColumnType(Kind.VARCHAR, length=50), cfg).type.length == 50
    assert out_column(ColumnType(Kind.BIGINT), cfg).type == ColumnType(Kind.VARCHAR, length=32)
    assert "phone applies to text or integer columns" in problems(ColumnType(Kind.DATE), cfg)[0]


# -- mask --------------------------------------------------------------------------------------


def test_mask_keeps_ends_and_length() -> None:
    cfg = tr({"mask": {"keep_first": 3, "keep_last": 2}})
    assert run(TEXT, cfg, "13812345678") == "138******78"
    assert run(TEXT, tr({"mask": {"keep_last": 4, "char": "#"}}), "4111111111111111") == (
        "############1111"
    )


def test_mask_never_reveals_a_short_value_whole() -> None:
    cfg = tr({"mask": {"keep_first": 2, "keep_last": 2}})
    assert run(TEXT, cfg, "abcd") == "****"
    assert run(TEXT, cfg, "abc") == "***"
    assert run(TEXT, cfg, "abcde") == "ab*de"
    assert run(TEXT, cfg, "") == ""


def test_mask_of_non_text_masks_its_text_and_yields_text() -> None:
    cfg = tr({"mask": {"keep_last": 2}})
    assert run(INT, cfg, 123456) == "****56"
    assert run(ColumnType(Kind.DATE), cfg, date(2024, 5, 17)) == "********17"
    assert out_column(INT, cfg).type == TEXT
    assert out_column(ColumnType(Kind.CHAR, length=8), cfg).type == ColumnType(Kind.CHAR, length=8)
    assert out_column(ColumnType(Kind.VARCHAR, length=8), cfg).type.length == 8


# -- hash --------------------------------------------------------------------------------------


def _hmac(text: str, key: str = KEY) -> str:
    return hmac.new(key.encode(), text.encode(), "sha256").hexdigest()


@pytest.mark.parametrize(
    ("ctype", "value", "text"),
    [
        (TEXT, "alice@example.com", "alice@example.com"),
        (INT, 42, "42"),
        (ColumnType(Kind.NUMERIC), Decimal("12.50"), "12.50"),
        (ColumnType(Kind.BOOLEAN), True, "true"),
        (ColumnType(Kind.DATE), date(2024, 1, 2), "2024-01-02"),
        (ColumnType(Kind.TIMESTAMP), datetime(2024, 1, 2, 3, 4, 5), "2024-01-02T03:04:05"),
        (ColumnType(Kind.TIME), time(3, 4), "03:04:00"),
        (ColumnType(Kind.UUID), UUID(int=5), "00000000-0000-0000-0000-000000000005"),
        (ColumnType(Kind.BYTES), b"\x00\xff", "00ff"),
    ],
)
def test_hash_is_hmac_sha256_of_the_canonical_text(
    ctype: ColumnType, value: object, text: str
) -> None:
    got = run(ctype, tr({"hash": {"key": KEY}}), value)
    assert got == _hmac(text)
    assert isinstance(got, str) and len(got) == 64 and got == got.lower()


def test_hash_joins_across_engines_and_types_it_as_varchar64() -> None:
    cfg = tr({"hash": {"key": KEY}})
    assert run(ColumnType(Kind.BIGINT), cfg, 42) == run(TEXT, cfg, "42")
    assert out_column(INT, cfg).type == ColumnType(Kind.VARCHAR, length=64)


def test_hash_long_key_matches_hmac() -> None:
    long_key = "k" * 100  # longer than the SHA-256 block: HMAC hashes the key first
    assert run(TEXT, tr({"hash": {"key": long_key}}), "v") == _hmac("v", long_key)


# -- validate ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "good",
    [
        "a@b",
        "first.last+tag@example.co.uk",
        "x_y-z@sub-domain.example",
        "A@EXAMPLE.COM",
        "zoë.5@example.com",  # RFC 6531: internationalised local part
        "用户@例子.中国",  # and IDNA domain labels
    ],
)
def test_valid_emails_pass_unchanged(good: str) -> None:
    assert run(TEXT, tr({"validate": "email"}), good) == good


@pytest.mark.parametrize(
    "bad",
    [
        "plainaddress",
        "@example.com",
        "a@",
        "a@-example.com",
        "a@example-.com",
        "a b@example.com",
        "a@example..com",
        "a@exa_mple.com",
        "a@example.com\n",
        "a\u00a0b@example.com",  # no-break space is not a letter
        "x" * 65 + "@example.com",
        "a@" + ".".join(["b" * 60] * 5),  # 2 + 304 characters: more than 254
    ],
)
def test_invalid_emails_fail_without_leaking(bad: str) -> None:
    e = fails(TEXT, tr({"validate": "email"}), bad)
    assert (e.rule, e.reason) == ("validate", "not a valid e-mail address")


def test_email_length_limits() -> None:
    cfg = tr({"validate": "email"})
    assert run(TEXT, cfg, "x" * 64 + "@example.com")
    domain = ".".join(["d" * 61] * 4)  # 247 characters
    assert run(TEXT, cfg, "abcdef@" + domain) == "abcdef@" + domain  # 254 in all
    fails(TEXT, cfg, "abcdefg@" + domain)  # 255


# -- map ---------------------------------------------------------------------------------------


def test_map_matches_by_value_then_by_text() -> None:
    cfg = {"map": {1: "one", "2": "two", "x": "ex"}}
    assert run(INT, cfg, 1) == "one"
    assert run(ColumnType(Kind.NUMERIC), cfg, Decimal(1)) == "one"
    assert run(TEXT, cfg, "1") == "one"
    assert run(INT, cfg, 2) == "two"
    # YAML may give bool keys (`true: yes`): they match booleans and the text 'true'.
    bools = {"map": {True: "yes", False: "no"}}
    assert run(TEXT, bools, "true") == "yes"
    assert run(ColumnType(Kind.BOOLEAN), bools, False) == "no"


def test_map_bool_key_does_not_match_the_integer_one() -> None:
    assert run(INT, {"map": {True: "yes"}, "on_unmapped": "keep"}, 1) == "1"
    assert run(ColumnType(Kind.BOOLEAN), {"map": {1: "one"}, "default": "d"}, True) == "d"


def test_map_unmapped_policies() -> None:
    vals = {"A": "active"}
    assert run(TEXT, {"map": vals, "default": "other"}, "Z") == "other"
    assert run(TEXT, {"map": vals, "on_unmapped": "keep"}, "Z") == "Z"
    e = fails(TEXT, {"map": vals}, "Zq")
    assert (e.rule, e.column, e.reason) == (
        "map",
        "c",
        "value not in the map (on_unmapped: dead_letter)",
    )


def test_map_null_passes_unless_mapped() -> None:
    assert run(TEXT, {"map": {"A": "a"}, "default": "x"}, None) is None
    assert run(TEXT, {"map": {None: "none", "A": "a"}}, None) == "none"
    assert run(TEXT, {"map": {"A": "a"}}, UNCHANGED) is UNCHANGED


@pytest.mark.parametrize(
    ("values", "extra", "kind", "sample"),
    [
        ({"a": "x", "b": "y"}, {}, Kind.TEXT, "x"),
        ({"a": 1, "b": 2}, {}, Kind.BIGINT, 1),
        ({"a": True, "b": False}, {}, Kind.BOOLEAN, True),
        ({"a": 1.5}, {}, Kind.DOUBLE, 1.5),
        ({"a": date(2024, 1, 1)}, {}, Kind.DATE, date(2024, 1, 1)),
        ({"a": 1, "b": "y"}, {}, Kind.TEXT, "1"),
        ({"a": 1}, {"default": "none"}, Kind.TEXT, "1"),
    ],
)
def test_map_output_type_is_inferred(
    values: dict[object, object], extra: dict[str, object], kind: Kind, sample: object
) -> None:
    cfg = {"map": values, **extra}
    assert out_column(TEXT, cfg).type.kind is kind
    got = run(TEXT, cfg, "a")
    assert got == sample and type(got) is type(sample)


def test_map_keep_uses_the_source_type_when_the_outputs_fit() -> None:
    cfg = {"map": {0: 100}, "on_unmapped": "keep"}
    assert out_column(INT, cfg).type == INT
    assert run(INT, cfg, 0) == 100 and run(INT, cfg, 7) == 7
    # 'none' does not fit an integer column: all becomes text, kept values too.
    cfg2 = {"map": {0: "none"}, "on_unmapped": "keep"}
    assert out_column(INT, cfg2).type == TEXT
    assert run(INT, cfg2, 7) == "7" and run(INT, cfg2, 0) == "none"


def test_map_nullability() -> None:
    assert out_column(TEXT, {"map": {"a": "x"}}, nullable=False).nullable is False
    assert out_column(TEXT, {"map": {"a": None}}, nullable=False).nullable is True
    assert out_column(TEXT, {"map": {None: "n"}}, nullable=True).nullable is False


# -- cast --------------------------------------------------------------------------------------


def test_cast_to_int() -> None:
    assert run(TEXT, {"cast": "int"}, "  12 ") == 12
    assert run(TEXT, {"cast": "integer"}, "-7") == -7
    assert run(ColumnType(Kind.NUMERIC), {"cast": "bigint"}, Decimal("3.000")) == 3
    assert run(ColumnType(Kind.DOUBLE), {"cast": "smallint"}, 4.0) == 4
    assert out_column(TEXT, {"cast": "int"}).type == INT
    assert out_column(TEXT, {"cast": "smallint"}).type.kind is Kind.SMALLINT


@pytest.mark.parametrize(
    ("ctype", "to", "value", "reason"),
    [
        (TEXT, "int", "12a", "not an integer"),
        (TEXT, "int", "1_000", "not an integer"),
        (TEXT, "int", "1.5", "not an integer"),
        (TEXT, "int", "2147483648", "out of range for int"),
        (TEXT, "smallint", "40000", "out of range for smallint"),
        (ColumnType(Kind.DOUBLE), "int", 2.5, "has a fractional part"),
        (ColumnType(Kind.NUMERIC), "bigint", Decimal("NaN"), "not a finite number"),
        (TEXT, "decimal(5,2)", "1.555", "would lose digits (more than 2 decimal places)"),
        (TEXT, "decimal(5,2)", "1234.5", "out of range for decimal(5,2)"),
        (TEXT, "decimal(5,2)", "abc", "not a number"),
        (TEXT, "decimal(5,2)", "NaN", "not a number"),
        (TEXT, "double", "1e", "not a number"),
        (TEXT, "varchar(3)", "abcd", "longer than 3 characters"),
        (TEXT, "date", "2024-13-01", "not a date / timestamp"),
        (TEXT, "timestamp", "yesterday", "not a date / timestamp"),
        (TEXT, "boolean", "maybe", "not a boolean"),
        (INT, "boolean", 2, "not a boolean (integers: 0 or 1)"),
    ],
)
def test_cast_failures(ctype: ColumnType, to: str, value: object, reason: str) -> None:
    e = fails(ctype, {"cast": to}, value)
    assert (e.rule, e.column, e.reason) == ("cast", "c", reason)


def test_cast_to_decimal_is_exact() -> None:
    cfg = {"cast": "decimal(12,2)"}
    got = run(TEXT, cfg, "1.5")
    assert got == Decimal("1.50") and str(got) == "1.50"
    assert str(run(TEXT, cfg, " -1.500 ")) == "-1.50"
    assert str(run(ColumnType(Kind.DOUBLE), cfg, 0.1)) == "0.10"  # repr, not binary expansion
    assert str(run(INT, cfg, 42)) == "42.00"
    assert str(run(TEXT, cfg, "1e3")) == "1000.00"
    assert str(run(TEXT, {"cast": "numeric(38,0)"}, "9" * 38)) == "9" * 38
    assert out_column(TEXT, cfg).type == ColumnType(Kind.NUMERIC, precision=12, scale=2)


def test_cast_to_text_and_varchar() -> None:
    assert run(ColumnType(Kind.NUMERIC), {"cast": "text"}, Decimal("1.50")) == "1.50"
    assert run(ColumnType(Kind.DATE), {"cast": "varchar(10)"}, date(2024, 1, 2)) == "2024-01-02"
    assert run(ColumnType(Kind.BOOLEAN), {"cast": "text"}, False) == "false"
    fmt = {"cast": {"to": "text", "format": "%d/%m/%Y"}}
    assert run(ColumnType(Kind.DATE), fmt, date(2024, 1, 2)) == "02/01/2024"
    assert out_column(INT, {"cast": "varchar(20)"}).type == ColumnType(Kind.VARCHAR, length=20)


def test_cast_to_dates_and_times() -> None:
    assert run(TEXT, {"cast": "date"}, "2024-01-02") == date(2024, 1, 2)
    assert run(TEXT, {"cast": {"to": "date", "format": "%d/%m/%Y"}}, "02/01/2024") == date(
        2024, 1, 2
    )
    aware = datetime(2024, 1, 2, 23, 30, tzinfo=UTC)
    assert run(ColumnType(Kind.TIMESTAMPTZ), {"cast": "date"}, aware) == date(2024, 1, 2)
    assert run(TEXT, {"cast": "timestamp"}, "2024-01-02 03:04:05") == datetime(2024, 1, 2, 3, 4, 5)
    assert run(TEXT, {"cast": "timestamp"}, "2024-01-02T03:04:05+02:00") == datetime(
        2024, 1, 2, 1, 4, 5
    )
    assert run(ColumnType(Kind.DATE), {"cast": "timestamp"}, date(2024, 1, 2)) == datetime(
        2024, 1, 2
    )
    fails(TEXT, {"cast": {"to": "date", "format": "%d/%m/%Y"}}, "2024-01-02")


@pytest.mark.parametrize(
    ("value", "want"),
    [("true", True), ("T", True), ("yes", True), ("1", True), ("No", False), ("f", False)],
)
def test_cast_to_boolean(value: str, want: bool) -> None:
    assert run(TEXT, {"cast": "boolean"}, value) is want
    assert run(INT, {"cast": "boolean"}, int(want)) is want


@pytest.mark.parametrize(
    ("ctype", "to"),
    [
        (ColumnType(Kind.BYTES), "int"),
        (ColumnType(Kind.DATE), "decimal(5,2)"),
        (ColumnType(Kind.UUID), "boolean"),
        (INT, "date"),
        (ColumnType(Kind.TEXT, array_dims=1), "text"),
    ],
)
def test_senseless_casts_are_config_errors(ctype: ColumnType, to: str) -> None:
    (line,) = problems(ctype, {"cast": to})
    assert line.startswith(f"{P}.columns.c.cast: ")


def test_cast_format_only_between_text_and_time() -> None:
    (line,) = problems(TEXT, {"cast": {"to": "int", "format": "%Y"}})
    assert line == (
        f"{P}.columns.c.cast: format applies to casts between text and date / timestamp only"
    )


def test_cast_decimal_scale_above_precision_is_a_config_error() -> None:
    (line,) = problems(TEXT, {"cast": "decimal(2,5)"})
    assert "scale at most precision" in line


# -- value / default ---------------------------------------------------------------------------


def test_value_sets_a_constant_even_over_null_and_unchanged() -> None:
    for v in ("x", None, UNCHANGED, 5):
        assert run(INT, {"value": "crm"}, v) == "crm"


@pytest.mark.parametrize(
    ("const", "ctype"),
    [
        ("s", ColumnType(Kind.TEXT)),
        (True, ColumnType(Kind.BOOLEAN)),
        (7, ColumnType(Kind.BIGINT)),
        (1.5, ColumnType(Kind.DOUBLE)),
        (date(2024, 1, 1), ColumnType(Kind.DATE)),
        (datetime(2024, 1, 1), ColumnType(Kind.TIMESTAMP)),
        (datetime(2024, 1, 1, tzinfo=UTC), ColumnType(Kind.TIMESTAMPTZ)),
    ],
)
def test_value_type_is_inferred_from_the_constant(const: object, ctype: ColumnType) -> None:
    col = out_column(INT, {"value": const})
    assert col.type == ctype and col.nullable is False


def test_null_value_is_nullable_text() -> None:
    col = out_column(INT, {"value": None})
    assert col.type == TEXT and col.nullable


def test_value_then_transforms_apply_to_the_constant() -> None:
    assert run(INT, {"value": " CRM ", "transforms": ["trim", "lower"]}, 1) == "crm"
    (line,) = problems(INT, {"value": "abc", "cast": "int"})
    assert line == f"{P}.columns.c.cast: the constant fails the rule: not an integer"


def test_default_fills_null_only() -> None:
    assert run(TEXT, {"default": "n/a"}, None) == "n/a"
    assert run(TEXT, {"default": "n/a"}, "x") == "x"
    assert run(TEXT, {"default": "n/a"}, UNCHANGED) is UNCHANGED
    assert run(ColumnType(Kind.NUMERIC), {"default": 0}, None) == Decimal(0)
    assert out_column(TEXT, {"default": "n/a"}).nullable is False


def test_default_then_rules() -> None:
    assert run(TEXT, {"default": " X ", "transforms": ["trim"]}, None) == "X"


def test_default_that_does_not_fit_the_column_is_a_config_error() -> None:
    (line,) = problems(INT, {"default": "none"})
    assert line.startswith(f"{P}.columns.c.default: 'none' does not fit integer column 'c'")


def test_unexpected_value_type_is_a_rule_error_naming_the_step() -> None:
    # A custom function could hand an int to a text rule: dead-letter, not a crash.
    e = fails(TEXT, tr("trim"), 12345)
    assert (e.rule, e.column) == ("trim", "c")
    assert e.reason == "cannot apply to a int value"


def test_rule_error_text_and_pickling() -> None:
    e = RuleError("map", "status", "value not in the map (on_unmapped: dead_letter)")
    assert isinstance(e, RowLevelError)
    assert str(e) == "column 'status': map: value not in the map (on_unmapped: dead_letter)"
    assert str(RuleError("custom", None, "m:f raised KeyError")) == "custom: m:f raised KeyError"
    back = pickle.loads(pickle.dumps(e))
    assert (back.rule, back.column, back.reason, str(back)) == (e.rule, e.column, e.reason, str(e))


def test_decimal_cast_from_the_same_scale_keeps_values_and_still_refuses() -> None:
    src = ColumnType(Kind.NUMERIC, precision=12, scale=2)
    cfg = tr({"cast": "decimal(14,2)"})
    v = Decimal("-1234567890.50")
    assert run(src, cfg, v) is v  # fast path: already at the target's scale
    assert run(src, cfg, Decimal("7")) == Decimal("7.00")
    assert fails(src, cfg, Decimal("1.234")).rule == "cast"  # e.g. from a custom function
    assert fails(src, cfg, Decimal("NaN")).rule == "cast"
