"""Turn a SourceHealth and the current lag into operator warnings (pure, no I/O)."""

from __future__ import annotations

from cdc_sync.sources.base import SourceHealth

WARN_FRACTION = 0.5
"""Warn once the lag or the retained WAL reaches this share of what the server keeps: the
remaining margin must cover the time an operator needs to react (and a catch-up)."""

_MB = 1024 * 1024


def _mb(n: int) -> str:
    return f"{n / _MB:.0f} MB"


def _slot_warnings(h: SourceHealth) -> list[str]:
    if h.limit_bytes is None or h.retained_bytes is None:
        return []  # unlimited: the slot never loses WAL (the disk fills up instead)
    if h.slot_wal_status == "lost":
        return []  # reported by health() itself
    if h.retained_bytes >= WARN_FRACTION * h.limit_bytes:
        safe = "" if h.safe_wal_size is None else f"; {_mb(max(h.safe_wal_size, 0))} to go"
        return [
            f"replication slot retains {_mb(h.retained_bytes)} of WAL, the limit "
            f"(max_slot_wal_keep_size) is {_mb(h.limit_bytes)}{safe}: past it the slot is "
            "invalidated and the pipeline needs a new snapshot; let it catch up or raise "
            "max_slot_wal_keep_size"
        ]
    return []


def _binlog_warnings(h: SourceHealth, lag_seconds: float | None) -> list[str]:
    keep = h.binlog_retention_seconds
    if keep is None or keep <= 0:
        return []  # binlogs are never expired by time
    out: list[str] = []
    if lag_seconds is not None and lag_seconds >= WARN_FRACTION * keep:
        out.append(
            f"the pipeline lags {lag_seconds:.0f} s and binlogs expire after {keep:.0f} s "
            "(binlog_expire_logs_seconds / expire_logs_days): once the checkpointed binlog "
            "is purged the pipeline needs a new snapshot; let it catch up or keep binlogs "
            "longer"
        )
    age = h.oldest_binlog_age_seconds
    if age is not None and lag_seconds is not None and age - lag_seconds < 0:
        out.append(
            f"the pipeline lags {lag_seconds:.0f} s but the oldest binlog "
            f"{h.binlog_oldest_file} is only {age:.0f} s old: the checkpoint may already be "
            "purged"
        )
    return out


def retention_warnings(health: SourceHealth, lag_seconds: float | None) -> list[str]:
    """Every warning for ``health`` at this lag (None: unknown), most urgent first: the
    source's own (an invalidated or endangered slot), then those relative to its limit."""
    out = list(health.warnings)
    if health.kind == "postgres":
        out += _slot_warnings(health)
    else:
        out += _binlog_warnings(health, lag_seconds)
    return out
