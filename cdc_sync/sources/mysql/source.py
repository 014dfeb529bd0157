"""MysqlCapture: the Source protocol over a MySQL / MariaDB binlog stream."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from cdc_sync.config.dsn import MysqlDsn
from cdc_sync.errors import PermanentError
from cdc_sync.records import Position, SourceEvent, TableId, TableSchema


class MysqlCapture:
    """Skeleton: filled in by the binlog capture work of issue #3."""

    def __init__(
        self,
        dsn: MysqlDsn,
        server_id: int,
        tables: Sequence[TableId],
        *,
        position_mode: str = "auto",
        heartbeat_seconds: float = 1.0,
    ) -> None:
        self._dsn, self._server_id, self._tables = dsn, server_id, list(tables)
        self._mode, self._heartbeat = position_mode, heartbeat_seconds

    def problems(self) -> list[str]:
        return ["MySQL capture is not implemented yet"]

    def prepare(self, create: bool) -> Mapping[TableId, TableSchema]:
        raise PermanentError("MySQL capture is not implemented yet")

    def stream(self, resume_after: Position | None) -> Iterator[SourceEvent]:
        raise PermanentError("MySQL capture is not implemented yet")

    def ack(self, position: Position) -> None:
        """Nothing to tell a MySQL server: the checkpoint in the target is the truth."""

    def head(self) -> Position:
        raise PermanentError("MySQL capture is not implemented yet")

    def close(self) -> None:
        pass
