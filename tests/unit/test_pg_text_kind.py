"""PostgreSQL types carried as their text (Kind.PG_TEXT): resolution and per-target mapping."""

from __future__ import annotations

import pytest
from sqlalchemy.dialects import mysql, postgresql

from cdc_sync.config.rules import Cast, Mask
from cdc_sync.errors import UnsupportedTypeError
from cdc_sync.records import ColumnType, Kind, PgTypeName, TableId
from cdc_sync.sinks.sql.ddl_notes import missing_pg_type
from cdc_sync.sinks.sql.mysql_types import MySqlTypes
from cdc_sync.sinks.sql.mysql_values import literal_for
from cdc_sync.sinks.sql.types import PostgresTypes
from cdc_sync.sources.postgres.types import PgType, TypeResolver
from cdc_sync.sources.postgres.values import converter_for
from cdc_sync.transforms.cast import compile_cast
from cdc_sync.transforms.errors import Problem
from cdc_sync.transforms.privacy import mask_fn
from cdc_sync.transforms.text import require_text
from cdc_sync.verify.canonical import renderer

_CATALOG = {
    16400: PgType(16400, "public", "citext", "b", extension="citext"),
    16401: PgType(16401, "public", "_citext", "b", elem=16400),
    16402: PgType(16402, "public", "addr", "c", create="CREATE TYPE public.addr AS (a text);"),
    16403: PgType(16403, "public", "email", "d", base=16400),
    869: PgType(869, "pg_catalog", "inet", "b"),
    1041: PgType(1041, "pg_catalog", "_inet", "b", elem=869),
    603: PgType(603, "pg_catalog", "box", "b", delim=";"),
    1020: PgType(1020, "pg_catalog", "_box", "b", elem=603),
    3910: PgType(3910, "pg_catalog", "tstzrange", "r"),
    4535: PgType(4535, "pg_catalog", "tstzmultirange", "m"),
    1562: PgType(1562, "pg_catalog", "varbit", "b"),
    790: PgType(790, "pg_catalog", "money", "b"),
}
T = TableId("public", "crm")
CITEXT = ColumnType(
    Kind.PG_TEXT, pg_type=PgTypeName("public", "citext", "citext"), source_name="public.citext"
)
INET = ColumnType(Kind.PG_TEXT, pg_type=PgTypeName("pg_catalog", "inet"), source_name="inet")


def resolve(oid: int, typmod: int = -1) -> ColumnType:
    return TypeResolver(_CATALOG.get).resolve(oid, typmod, "public.crm", "c")[0]


def test_extension_builtin_range_composite_types_are_text() -> None:
    assert resolve(16400) == CITEXT
    assert resolve(16400).pg_type == PgTypeName("public", "citext", "citext")
    assert resolve(16403) == CITEXT  # a domain: its base type
    assert resolve(16401) == ColumnType(
        Kind.PG_TEXT, array_dims=1, pg_type=PgTypeName("public", "citext")
    )
    assert resolve(869) == INET and resolve(1041).array_dims == 1
    for oid in (3910, 4535, 1562):
        assert resolve(oid).kind is Kind.PG_TEXT
    addr = resolve(16402).pg_type
    assert addr is not None and addr.composite and addr.create
    assert converter_for(CITEXT) is None  # the text is the value
    assert converter_for(resolve(1041))("{1.2.3.4,NULL}") == ["1.2.3.4", None]  # type: ignore[misc]
    assert resolve(1560, 5) == ColumnType(Kind.BIT, length=5)  # bit(n): canonical BIT


def test_refused_with_reasons() -> None:
    with pytest.raises(UnsupportedTypeError) as ei:
        resolve(790)
    assert "lc_monetary" in str(ei.value)
    assert "ALTER TABLE public.crm ALTER COLUMN c TYPE numeric(…);" in str(ei.value)
    with pytest.raises(UnsupportedTypeError, match="_box"):
        resolve(1020)  # ';'-delimited array literals


def test_postgres_target_keeps_the_type() -> None:
    pg, d = PostgresTypes(), postgresql.dialect()
    assert str(pg.column_type(CITEXT, T, "email").compile(dialect=d)) == '"public"."citext"'
    arr = ColumnType(Kind.PG_TEXT, array_dims=1, pg_type=PgTypeName("pg_catalog", "inet"))
    assert str(pg.column_type(arr, T, "ips").compile(dialect=d)) == '"pg_catalog"."inet"[]'
    assert pg.cast_name(CITEXT, T) == '"public"."citext"'
    assert pg.cast_name(arr, T) == '"pg_catalog"."inet"[]'
    # A row type goes in as text: unnest would expand its fields into columns
    row = ColumnType(Kind.PG_TEXT, pg_type=PgTypeName("public", "addr", composite=True))
    assert str(pg.column_type(row, T, "home").compile(dialect=d)) == "TEXT"
    assert pg.cast_name(row, T) == "text"


def test_missing_type_messages_name_the_fix() -> None:
    t = PgTypeName("public", "citext", "citext")
    text = missing_pg_type(T, "email", t, None)
    assert "column 'email'" in text and "CREATE EXTENSION citext SCHEMA public;" in text
    assert "ALTER EXTENSION citext SET SCHEMA public;" in missing_pg_type(T, "e", t, "ext")
    r = PgTypeName("public", "fr", create="CREATE TYPE public.fr AS RANGE (SUBTYPE = float8);")
    assert "CREATE TYPE public.fr AS RANGE (SUBTYPE = float8);" in missing_pg_type(T, "f", r, None)


def test_mysql_target_text_columns() -> None:
    my, d = MySqlTypes(), mysql.dialect()

    def spec(ct: ColumnType, key: int | None = None) -> str:
        return str(my.column_type(ct, T, "c", key=key).compile(dialect=d))

    assert spec(INET) == "VARCHAR(43)" and spec(INET, key=3072) == "VARCHAR(43)"
    mac = ColumnType(Kind.PG_TEXT, pg_type=PgTypeName("pg_catalog", "macaddr"))
    assert spec(mac) == "VARCHAR(17)"
    assert spec(CITEXT) == "LONGTEXT" and spec(CITEXT, key=3072) == "VARCHAR(768)"
    assert literal_for(CITEXT)("O'Brien@x.com") == "'O\\'Brien@x.com'"


def test_verify_renders_the_text() -> None:
    assert renderer(CITEXT)("Émile@Example.com") == "Émile@Example.com"
    arr = ColumnType(Kind.PG_TEXT, array_dims=1, pg_type=PgTypeName("pg_catalog", "inet"))
    assert renderer(arr)(["1.2.3.4", None]) == renderer(arr)(("1.2.3.4", None))


def test_rules_on_text_form_columns() -> None:
    with pytest.raises(Problem, match=r"cannot cast 'ip' from inet to int"):
        compile_cast(Cast(kind="cast", to="int"), "ip", INET)
    fn, out = compile_cast(Cast(kind="cast", to="text"), "email", CITEXT)
    assert fn("A@b.c") == "A@b.c" and out.kind is Kind.TEXT
    with pytest.raises(Problem, match="cast: text"):
        require_text("lower", "email", CITEXT)
    fn, out = mask_fn(Mask(kind="mask", keep_first=1, keep_last=4), "email", CITEXT)
    assert fn("ann@x.com") == "a****.com" and out.kind is Kind.TEXT
