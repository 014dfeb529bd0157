"""``cdc-sync offsets show``: checkpoint, source head and lag for one pipeline."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from cdc_sync.checkpoint.store import CheckpointStore
from cdc_sync.config.models import Config
from cdc_sync.errors import CdcSyncError
from cdc_sync.records import BinlogPosition, PgLsn, Position
from cdc_sync.runtime.classify import classify
from cdc_sync.runtime.wiring import build_source, target_engine


def _bytes_behind(head: Position, at: Position) -> int | None:
    """Source log bytes not yet applied; None where the position kinds cannot tell (binlog
    positions in different files: the sizes of the files between are not known here)."""
    if isinstance(head, PgLsn) and isinstance(at, PgLsn):
        return max(0, head.value - at.value)
    if isinstance(head, BinlogPosition) and isinstance(at, BinlogPosition):
        if head.file == at.file:
            return max(0, head.pos - at.pos)
        return 0 if head <= at else None
    return None


def describe(config: Config, name: str) -> dict[str, Any]:
    out: dict[str, Any] = {"pipeline": name}
    engine = target_engine(config, name)
    state_schema = config.targets[config.pipelines[name].target].state_schema
    try:
        with engine.connect() as conn:
            has_state = sa.inspect(conn).has_table("cdc_sync_checkpoints", schema=state_schema)
            cp = CheckpointStore(name, schema=state_schema).load(conn) if has_state else None
    except CdcSyncError:
        raise
    except Exception as e:
        raise classify(e, "target") from e
    finally:
        engine.dispose()
    source = build_source(config, name)
    try:
        head = source.head()
    except Exception as e:
        raise classify(e, "source") from e
    finally:
        source.close()
    out["source_head"] = head.to_text()
    if cp is None:
        out.update(
            position=None,
            lag_bytes=None,
            lag_seconds=None,
            last_applied_at=None,
            last_source_commit=None,
        )
        return out
    out["position"] = cp.position.to_text()
    out["last_applied_at"] = cp.updated_at.isoformat() if cp.updated_at else None
    out["last_source_commit"] = cp.committed_at.isoformat() if cp.committed_at else None
    behind = _bytes_behind(head, cp.position)
    out["lag_bytes"] = behind
    # Nothing pending means no lag, however long ago the last change was.
    if behind == 0 or cp.committed_at is None:
        out["lag_seconds"] = 0.0
    else:
        out["lag_seconds"] = round((datetime.now(UTC) - cp.committed_at).total_seconds(), 3)
    return out
