"""Figures from the daemon's own JSON log: batches, lag it saw, time spent streaming."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path


@dataclass
class LogStats:
    batches: int = 0
    rows: int = 0
    max_lag_s: float = 0.0
    last_lag_s: float = 0.0
    stream_s: float | None = None  # pipeline_started -> last batch_applied
    errors: int = 0
    first_error: str = ""


def _ts(ev: dict[str, object]) -> datetime | None:
    v = ev.get("timestamp")
    if not isinstance(v, str):
        return None
    try:
        return datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None


def read(log: Path) -> LogStats:
    out = LogStats()
    started: datetime | None = None
    last: datetime | None = None
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        name = ev.get("event")
        if name == "pipeline_started":
            started = _ts(ev)
        elif name == "batch_applied":
            out.batches += int(ev.get("batches", 1))  # one line sums up to a second of them
            out.rows += int(ev.get("rows", 0))
            lag = float(ev.get("lag_seconds", 0.0))
            out.max_lag_s = max(out.max_lag_s, lag)
            out.last_lag_s = lag
            last = _ts(ev)
        elif ev.get("level") in ("error", "critical") or name == "transient_error_retrying":
            out.errors += 1
            out.first_error = out.first_error or f"{name}: {ev.get('error', '')}"
    if started and last:
        out.stream_s = (last - started).total_seconds()
    return out
