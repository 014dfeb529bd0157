"""Keys read from COPY text lines, exactly as the stream types them."""

from __future__ import annotations

from datetime import UTC, datetime

from cdc_sync.records import Column, ColumnType, Kind, TableId, TableSchema
from cdc_sync.sources.postgres.copytext import read_keys

T = TableId("public", "t")


def _schema(*cols: tuple[str, Kind], key: tuple[str, ...]) -> TableSchema:
    return TableSchema(T, tuple(Column(n, ColumnType(k)) for n, k in cols), key)


def test_a_single_integer_key_first() -> None:
    schema = _schema(("id", Kind.BIGINT), ("v", Kind.TEXT), key=("id",))
    data = b"1\ta\n-42\t\\N\n9223372036854775807\tx\\ty\n"
    assert read_keys(data, schema, "utf-8") == [(1,), (-42,), (9223372036854775807,)]
    assert read_keys(b"", schema, "utf-8") == []
    only = _schema(("id", Kind.INTEGER), key=("id",))
    assert read_keys(b"7\n8\n", only, "utf-8") == [(7,), (8,)]


def test_text_and_composite_keys_are_unescaped_and_typed() -> None:
    schema = _schema(("v", Kind.TEXT), ("k", Kind.TEXT), ("at", Kind.TIMESTAMPTZ), key=("k", "at"))
    data = (
        "x\ttab\\there\t2026-01-02 03:04:05+00\n"
        "y\tnew\\nline \\\\ back\t2026-01-02 03:04:05.5+00\n"
        "z\tzürich\t2026-01-02 03:04:05+00\n"
    ).encode()
    assert read_keys(data, schema, "utf-8") == [
        ("tab\there", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("new\nline \\ back", datetime(2026, 1, 2, 3, 4, 5, 500000, tzinfo=UTC)),
        ("zürich", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ]


def test_an_integer_key_not_first_takes_the_general_path() -> None:
    schema = _schema(("v", Kind.TEXT), ("id", Kind.INTEGER), key=("id",))
    assert read_keys(b"12\t3\n\\N\t4\n", schema, "utf-8") == [(3,), (4,)]
