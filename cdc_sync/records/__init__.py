"""Canonical, engine-neutral change records and positions (pure, no I/O)."""

from __future__ import annotations

from cdc_sync.records.change import (
    ChangeRecord,
    Heartbeat,
    Idle,
    Op,
    Row,
    RowProblem,
    SourceEvent,
    TxBegin,
    TxCommit,
    UnreadableRow,
)
from cdc_sync.records.copytext import CopyText
from cdc_sync.records.positions import BinlogPosition, PgLsn, Position
from cdc_sync.records.schema import (
    Backfill,
    Column,
    ColumnType,
    Kind,
    PgTypeName,
    TableId,
    TableSchema,
)
from cdc_sync.records.values import UNCHANGED, Interval, JsonText, float32

__all__ = [
    "UNCHANGED",
    "Backfill",
    "BinlogPosition",
    "ChangeRecord",
    "Column",
    "ColumnType",
    "CopyText",
    "Heartbeat",
    "Idle",
    "Interval",
    "JsonText",
    "Kind",
    "Op",
    "PgLsn",
    "PgTypeName",
    "Position",
    "Row",
    "RowProblem",
    "SourceEvent",
    "TableId",
    "TableSchema",
    "TxBegin",
    "TxCommit",
    "UnreadableRow",
    "float32",
]
