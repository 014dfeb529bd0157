"""A parse cache for TABLE_MAP events: python-mysql-replication re-parses one per row event.

Why: MySQL writes a TABLE_MAP event before every rows event, so a single-row statement costs a
full table-map parse (optional metadata, charsets, column names), measured at ~75 % of the
decode time. The bytes of a table map fully determine its parse (table id, names, types,
metadata), so identical bytes reuse the parsed state; any change (ALTER, new table id) is a
miss and is parsed afresh, which is also what invalidates our schema cache downstream.

How, in the style of a small upstream patch: the library picks event classes from a private
per-class map; readers that list :class:`CachedTableMapEvent` in ``only_events`` get a map with
it on their packet wrappers. Every other reader in the process keeps the stock behaviour.
"""

from __future__ import annotations

from typing import Any

from pymysqlreplication import binlogstream
from pymysqlreplication.constants.BINLOG import TABLE_MAP_EVENT
from pymysqlreplication.event import BinLogEvent
from pymysqlreplication.packet import BinLogPacketWrapper
from pymysqlreplication.row_event import TableMapEvent

from cdc_sync.sources.mysql import events

_HEADER = 20  # OK byte + 19-byte event header, read by the packet wrapper
_MAX_ENTRIES = 4096  # table ids change on every ALTER / reopen; keep the cache bounded
# Set by BinLogEvent.__init__ for each event: never taken from a cached parse.
_PER_EVENT = frozenset(
    {
        "packet", "table_map", "event_type", "timestamp", "event_size", "_ctl_connection",
        "_processed", "complete", "_is_event_valid", "_post_header_lengths", "mysql_version",
        "_ignore_decode_errors", "_verify_checksum", "dbms",
    }
)  # fmt: skip

_cache: dict[bytes, dict[str, Any]] = {}
stats = {"hits": 0, "misses": 0}
enabled = {"cache": True}  # the benchmark switches it off to measure the uncached path


def _wanted(state: dict[str, Any], kw: dict[str, Any]) -> bool:
    table, schema = state["table"], state["schema"]
    if kw["only_tables"] is not None and table not in kw["only_tables"]:
        return False
    if kw["ignored_tables"] is not None and table in kw["ignored_tables"]:
        return False
    if kw["only_schemas"] is not None and schema not in kw["only_schemas"]:
        return False
    return not (kw["ignored_schemas"] is not None and schema in kw["ignored_schemas"])


class CachedTableMapEvent(TableMapEvent):  # type: ignore[misc]
    """A TableMapEvent whose parse is shared by every event with the same bytes."""

    def __init__(
        self, from_packet: Any, event_size: int, table_map: Any, ctl_connection: Any, **kw: Any
    ) -> None:
        raw = bytes(from_packet.packet.get_all_data()[_HEADER : _HEADER + event_size])
        # The library's parse also depends on whether it strips a checksum: part of the key.
        raw += b"\x01" if kw.get("use_checksum") else b"\x00"
        state = _cache.get(raw) if enabled["cache"] else None
        if state is None:
            stats["misses"] += 1
            super().__init__(from_packet, event_size, table_map, ctl_connection, **kw)
            if self.__dict__["_processed"]:
                if len(_cache) >= _MAX_ENTRIES:
                    _cache.clear()
                _cache[raw] = {k: v for k, v in self.__dict__.items() if k not in _PER_EVENT}
            return
        stats["hits"] += 1
        BinLogEvent.__init__(self, from_packet, event_size, table_map, ctl_connection, **kw)
        self.__dict__.update(state)
        if not _wanted(state, kw) or (kw["freeze_schema"] and self.table_id in table_map):
            self._processed = False
            return
        table_map[self.table_id] = self.table_obj


_CACHED_MAP = dict(BinLogPacketWrapper._BinLogPacketWrapper__event_map)
_CACHED_MAP[TABLE_MAP_EVENT] = CachedTableMapEvent
_CACHED_MAP.update(events.BY_TYPE)


class _PacketWrapper(BinLogPacketWrapper):  # type: ignore[misc]
    """Uses the cached table map and the lean events (:mod:`events`) only for readers that
    asked for them in only_events."""

    def __init__(self, from_packet: Any, table_map: Any, ctl: Any, *args: Any, **kw: Any) -> None:
        allowed = args[2] if len(args) > 2 else kw.get("allowed_events", ())
        if CachedTableMapEvent in allowed:
            self._BinLogPacketWrapper__event_map = _CACHED_MAP
        super().__init__(from_packet, table_map, ctl, *args, **kw)


def install() -> None:
    """Idempotent: route the library's packet parsing through :class:`_PacketWrapper`."""
    if binlogstream.BinLogPacketWrapper is not _PacketWrapper:
        binlogstream.BinLogPacketWrapper = _PacketWrapper


def clear() -> None:
    """Forget every cached parse (tests and benchmarks measure the uncached path with it)."""
    _cache.clear()
