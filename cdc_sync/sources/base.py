"""The Source protocol every capture implementation follows."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

from cdc_sync.records import Position, SourceEvent, TableId, TableSchema


class Source(Protocol):
    """A change stream. Lifecycle: ``prepare`` → ``stream`` (iterate) / ``ack`` → ``close``.

    Invariant: ``ack`` is called only with the ``end_position`` of a transaction whose target
    commit is durable; a source must never tell its server more than that.
    """

    def problems(self) -> list[str]:
        """Prerequisites that are not met, each with the exact fix; empty when ready."""
        ...

    def prepare(self, create: bool) -> Mapping[TableId, TableSchema]:
        """Create what is missing (when ``create``), validate, and return the table schemas."""
        ...

    def stream(self, resume_after: Position | None) -> Iterator[SourceEvent]:
        """Events of transactions ending after ``resume_after``; never returns on its own."""
        ...

    def ack(self, position: Position) -> None: ...

    def head(self) -> Position:
        """The source's current end of log, for lag and ``--until-caught-up``."""
        ...

    def close(self) -> None: ...
