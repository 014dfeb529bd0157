"""Which tables a streaming pipeline copies before going on (runtime.snapshot.late_tables)."""

from __future__ import annotations

from datetime import UTC, datetime

from cdc_sync.checkpoint.store import Checkpoint
from cdc_sync.records import PgLsn, TableId
from cdc_sync.runtime.snapshot import late_tables

A, B, C = TableId("public", "a"), TableId("public", "b"), TableId("public", "c")
CP = Checkpoint("p", PgLsn(1), None, None, datetime.now(UTC), 1)


def late(**kw: object) -> list[TableId]:
    args: dict[str, object] = {
        "mode": "initial", "action": "none", "cp": CP, "tables": [A, B, C],
        "unstreamed": set(), "copied": {A, B, C},
    }  # fmt: skip
    args.update(kw)
    return late_tables(**args)  # type: ignore[arg-type]


def test_nothing_new_nothing_to_copy() -> None:
    assert late() == []


def test_unstreamed_and_never_copied_tables_are_copied() -> None:
    assert late(unstreamed={C}, copied={A, C}) == [B, C]


def test_a_pipeline_that_never_copied_copies_only_unstreamed_tables() -> None:
    # copied None: its initial snapshot never ran (snapshot: never then, or an old version):
    # copying every table it has streamed for years would be a surprise.
    assert late(unstreamed={B}, copied=None) == [B]


def test_only_for_snapshot_initial_with_a_checkpoint_and_no_other_copy() -> None:
    assert late(mode="never", unstreamed={B}) == []
    assert late(mode="always", unstreamed={B}) == []
    assert late(action="resume", unstreamed={B}) == []
    assert late(cp=None, unstreamed={B}) == []
