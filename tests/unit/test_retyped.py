"""WARNING source_column_type_changed: both types readable, none for enum labels only added."""

from __future__ import annotations

from typing import Any

from cdc_sync.records import Column, ColumnType, Kind, TableId, TableSchema
from cdc_sync.runtime.retyped import warn_retyped

T = TableId("public", "t")


class Log:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def warning(self, event: str, **kw: Any) -> None:
        self.events.append({"event": event, **kw})


def _schema(t: ColumnType) -> TableSchema:
    return TableSchema(T, (Column("id", ColumnType(Kind.INTEGER)), Column("c", t)), ("id",))


def _warned(old: ColumnType, new: ColumnType) -> list[tuple[str, str]]:
    log = Log()
    warn_retyped(log, T, _schema(old), _schema(new))
    return [(e["from_type"], e["to_type"]) for e in log.events]


def test_the_parameters_are_named_when_the_spelling_alone_is_the_same() -> None:
    a = ColumnType(Kind.NUMERIC, precision=12, scale=4, source_name="numeric")
    b = ColumnType(Kind.NUMERIC, precision=12, scale=1, source_name="numeric")
    assert _warned(a, b) == [("numeric(12,4)", "numeric(12,1)")]
    i, big = ColumnType(Kind.INTEGER, source_name="integer"), ColumnType(Kind.BIGINT)
    assert _warned(i, big) == [("integer", "bigint")]


def test_enum_labels_only_added_are_no_type_change_renamed_ones_are() -> None:
    e = ColumnType(Kind.ENUM, enum_name="mood", enum_labels=("a", "b"), source_name="mood")
    added = ColumnType(Kind.ENUM, enum_name="mood", enum_labels=("a", "b", "c"), source_name="mood")
    renamed = ColumnType(Kind.ENUM, enum_name="mood", enum_labels=("x", "b"), source_name="mood")
    assert _warned(e, added) == []
    assert _warned(e, renamed) == [("mood (a, b)", "mood (x, b)")]


def test_a_column_gone_and_one_of_its_kind_come_is_flagged_as_a_rename() -> None:
    from cdc_sync.runtime.retyped import warn_renamed  # noqa: PLC0415

    def cols(*names: str) -> TableSchema:
        kinds = {"id": Kind.INTEGER, "v": Kind.TEXT, "w": Kind.TEXT, "n": Kind.INTEGER}
        return TableSchema(T, tuple(Column(x, ColumnType(kinds[x])) for x in names), ("id",))

    target = TableId("public", "t_copy")
    log = Log()
    warn_renamed(log, T, target, cols("id", "v"), cols("id", "w"))
    (e,) = log.events
    assert (e["event"], e["column"], e["new_column"]) == ("source_column_renamed", "v", "w")
    assert e["target_table"] == "public.t_copy" and "--repair" in e["fix"]
    for old, new in [(("id", "v"), ("id", "v", "w")), (("id", "v"), ("id", "n")),
                     (("id", "v", "n"), ("id", "w"))]:  # fmt: skip
        log = Log()
        warn_renamed(log, T, target, cols(*old), cols(*new))
        assert log.events == [], (old, new)  # an add, another kind, two gone
