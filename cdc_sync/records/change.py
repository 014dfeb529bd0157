"""Change events a source emits: transaction boundaries, row changes, heartbeats."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from cdc_sync.records.positions import Position
from cdc_sync.records.schema import TableId, TableSchema


class Op(enum.Enum):
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"
    TRUNCATE = "truncate"


Row = tuple[object, ...]
"""Values aligned with ``TableSchema.columns``; an element may be ``values.UNCHANGED``."""


@dataclass(frozen=True, slots=True)
class TxBegin:
    """Start of a source transaction; commit facts are known up front for PG and MySQL."""

    xid: str
    commit_time: datetime  # aware, UTC
    final_position: Position  # position of the commit record (not its end)


class RowProblem(NamedTuple):
    """Why a source row could not be decoded exactly (a MySQL zero date, a PostgreSQL
    timestamp 'infinity'): names the column and says why, never shows the value."""

    column: str
    reason: str


class UnreadableRow(tuple[object, ...]):
    """A row read by a query (snapshot chunk, re-read for a retry or a verify) holding a value
    that cannot be decoded exactly: that value is None here and ``problem`` names the column.
    Never applied as it is: it travels on as ``ChangeRecord.problem`` (dead letter or stop,
    as when the stream meets it); anything else that reads rows treats it as refused."""

    problem: RowProblem

    def __new__(cls, values: Iterable[object], problem: RowProblem) -> UnreadableRow:
        row = super().__new__(cls, values)
        row.problem = problem
        return row


class ChangeRecord(NamedTuple):
    """One row change, engine-neutral; immutable.

    A NamedTuple rather than a frozen dataclass: one is built per row change and a frozen
    dataclass's ``__init__`` (a guarded setattr per field) measured 4x slower here.

    ``before`` is the old row where the source sent one (REPLICA IDENTITY FULL / MySQL full
    image) or the old key only (PG default identity, key change or delete: non-key
    positions are None and ``before_is_key_only`` is True). ``after`` is None for DELETE.
    TRUNCATE has neither. ``changed`` names columns known to differ (empty when unknown).
    ``problem``: a value of the new row could not be decoded (it is None in ``after``); the
    record must not be applied: it is dead-lettered or stops the pipeline (``on_error``).
    """

    op: Op
    table: TableId
    schema: TableSchema
    before: Row | None
    after: Row | None
    position: Position  # position of the change itself inside the stream
    xid: str
    commit_time: datetime
    before_is_key_only: bool = False
    changed: tuple[str, ...] = ()
    problem: RowProblem | None = None

    def key(self) -> tuple[object, ...]:
        """The row's identity: from ``before`` for deletes and key changes, else ``after``."""
        row = self.before if self.op is Op.DELETE else self.after
        if row is None:
            raise ValueError(f"{self.op.value} on {self.table} has no row to take a key from")
        return tuple(row[i] for i in self.schema.key_indexes)

    def old_key(self) -> tuple[object, ...] | None:
        """The key before the change, when the source sent an old image; else None."""
        if self.before is None:
            return None
        return tuple(self.before[i] for i in self.schema.key_indexes)

    def key_changed(self) -> bool:
        old = self.old_key()
        return self.op is Op.UPDATE and old is not None and old != self.key()

    def old_row_gone(self) -> ChangeRecord:
        """The delete of the old key that a key change implies (applied on its own when the
        new row is refused: the old key is gone at the source either way)."""
        return ChangeRecord(
            Op.DELETE, self.table, self.schema, self.before, None, self.position, self.xid,
            self.commit_time, self.before_is_key_only,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class TxCommit:
    """End of a source transaction. ``end_position`` is what checkpoints and acks use."""

    xid: str
    commit_time: datetime
    end_position: Position
    row_count: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The source has sent everything up to ``position`` and is between transactions."""

    position: Position


@dataclass(frozen=True, slots=True)
class Idle:
    """Nothing arrived within the poll interval; lets the loop flush time-bound batches.

    ``drained``: sent at once, between source transactions, when the source has nothing more
    buffered; the loop may commit what it holds without waiting for the batch to fill (low
    lag when the source is quiet; under a backlog the buffer never runs dry, so batches stay
    big)."""

    drained: bool = False


SourceEvent = TxBegin | ChangeRecord | TxCommit | Heartbeat | Idle
