"""ENUM / SET labels a MySQL target needs, and the signal table's shape problems (pure)."""

from __future__ import annotations

from cdc_sync.records import TableId
from cdc_sync.runtime.signal_check import shape_problems
from cdc_sync.sinks.sql.mysql_labels import labels, merged_labels


def test_labels_as_information_schema_spells_them() -> None:
    assert labels("enum('a','it''s','b,c')") == ["a", "it's", "b,c"]


def test_a_target_with_every_source_label_needs_nothing() -> None:
    assert merged_labels(("a", "b"), ["a", "b", "c"]) is None  # a label added at the source
    assert merged_labels(("b", "a"), ["a", "b"]) is None  # values go as labels: order aside
    assert merged_labels(("a", "c"), ["a", "b", "c"]) is None


def test_missing_labels_are_added_never_dropped() -> None:
    assert merged_labels(("a", "x", "b"), ["a", "b"]) == ("a", "x", "b")  # the source's
    assert merged_labels(("a", "c"), ["a", "b"]) == ("a", "c", "b")  # after its predecessor
    assert merged_labels(("z", "a"), ["a", "b"]) == ("z", "a", "b")


def test_signal_table_shape() -> None:
    t = TableId("public", "cdc_sync_signal")
    good = [("pipeline", True), ("value", True), ("updated_at", False)]
    assert shape_problems(t, good, [["pipeline"]], mysql=False) == []
    (bad,) = shape_problems(t, [("id", True), ("kind", False)], [["id"]], mysql=False)
    assert "no column 'pipeline', 'value', 'updated_at'" in bad
    assert "'id' are NOT NULL without a default" in bad
    assert "CREATE TABLE IF NOT EXISTS" in bad
    (unkeyed,) = shape_problems(t, good, [["pipeline", "value"]], mysql=True)
    assert "no primary key or unique index on (pipeline) alone" in unkeyed
    assert "ENGINE=InnoDB" in unkeyed
