"""Reader side of a link: stamp the commit times of local changes into the side's clock."""

from __future__ import annotations

import time

import sqlalchemy as sa

from cdc_sync.errors import CdcSyncError
from cdc_sync.records import ChangeRecord, Position, TableId
from cdc_sync.runtime.classify import classify
from cdc_sync.runtime.link_clock import Clock, key_hash

_SEEN_EVERY = 0.2  # seconds between "read up to" marks while only heartbeats arrive


class Stamper:
    """For a MySQL / MariaDB side, which keeps no commit time per row: every local change
    the capture reads is stamped (key, commit time, position) in the side's own
    ``cdc_sync_row_clock``, then how far the capture has read. The link's other direction
    waits for that mark before it takes a last_write_wins decision on this side's rows.
    Autocommit, on a connection of its own: the stamps must not wait for the apply side."""

    def __init__(self, engine: sa.Engine, clock: Clock, side: str, tables: set[TableId]) -> None:
        self.engine, self.clock, self.side, self.tables = engine, clock, side, tables
        self._buf: dict[TableId, list[tuple[str, object, str]]] = {}
        self._next_seen = 0.0

    def saw(self, rec: ChangeRecord) -> None:
        if rec.table in self.tables and rec.after is not None:
            entry = (key_hash(rec.key()), rec.commit_time, rec.position.to_text())
            self._buf.setdefault(rec.table, []).append(entry)

    def commit(self, position: Position) -> None:
        buf, self._buf = self._buf, {}
        self._write(buf, position)

    def heartbeat(self, position: Position) -> None:
        now = time.monotonic()
        if now >= self._next_seen and not self._buf:
            self._write({}, position)

    def _write(self, buf: dict[TableId, list[tuple[str, object, str]]], position: Position) -> None:
        self._next_seen = time.monotonic() + _SEEN_EVERY
        try:
            with self.engine.begin() as conn:
                for table, entries in buf.items():
                    self.clock.stamp_local(conn, table, entries)  # type: ignore[arg-type]
                self.clock.mark_seen(conn, self.side, position)
        except CdcSyncError:
            raise
        except Exception as e:  # classified here: a lost side connection is transient
            raise classify(e, f"cannot stamp commit times into {self.side}") from e

    def close(self) -> None:
        self.engine.dispose()
