"""A snapshot chunk as PostgreSQL COPY text: rows passed through, keys decoded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cdc_sync.records.schema import TableSchema


@dataclass(frozen=True, slots=True)
class CopyText:
    """Rows of one snapshot chunk in COPY's text format, exactly as the source printed them
    (one line per row, columns in ``schema.names`` order, the session settings of the
    stream). A target that reads COPY text loads them without decoding each value: only
    the keys are decoded, for the chunk's resume point and its audit rows.

    ``keys`` holds each row's key values, in row order, typed as the stream types them.
    """

    schema: TableSchema
    data: bytes
    keys: Sequence[tuple[object, ...]]
    encoding: str  # Python codec name of ``data`` (the source session's client encoding)

    @property
    def rows(self) -> int:
        return len(self.keys)

    @property
    def last_key(self) -> tuple[object, ...] | None:
        return self.keys[-1] if self.keys else None
