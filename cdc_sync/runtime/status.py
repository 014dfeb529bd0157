"""``cdc-sync status``: one pipeline's state from the target's tables and the source, read-only."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from cdc_sync.audit.dead_letters import DeadLetterStore
from cdc_sync.checkpoint.snapshots import ACTIVE, SnapshotStore
from cdc_sync.checkpoint.store import CheckpointStore
from cdc_sync.config.models import Config
from cdc_sync.errors import CdcSyncError
from cdc_sync.runtime.classify import classify
from cdc_sync.runtime.offsets import describe
from cdc_sync.runtime.snapshot_admin import describe as describe_task
from cdc_sync.runtime.wiring import target_engine
from cdc_sync.state.tables import CHECKPOINTS, DEAD_LETTERS, SNAPSHOTS, VERIFY_RUNS, state_tables


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _lease(conn: sa.Connection, name: str, schema: str | None) -> dict[str, Any]:
    cp = CheckpointStore(name, schema=schema).load(conn)
    expires = cp.lease_expires_at if cp else None
    return {
        "lease_owner": cp.owner if cp else None,
        "lease_expires_at": _iso(expires),
        # The lease's own clock is the target's; ours is close enough to say held / lapsed.
        "lease_held": expires is not None and expires > datetime.now(UTC),
    }


def _snapshots(conn: sa.Connection, name: str, schema: str | None) -> dict[str, Any]:
    tasks = SnapshotStore(name, schema=schema).tasks(conn)
    by_status: dict[str, int] = {}
    for t in tasks:
        by_status[t.status] = by_status.get(t.status, 0) + 1
    active = [
        {
            "id": t.id,
            "table": str(t.table),
            "kind": t.kind,
            "status": t.status,
            "rows_done": t.rows_done,
            "rows_estimate": t.rows_estimate,
            "updated_at": _iso(t.updated_at),
            "summary": describe_task(t),
        }
        for t in tasks
        if t.status in ACTIVE
    ]
    return {"snapshot_tasks": by_status, "snapshots_active": active}


def _verify(conn: sa.Connection, name: str, schema: str | None) -> dict[str, Any] | None:
    t = state_tables(schema).verify_runs
    row = conn.execute(
        sa.select(t).where(t.c.pipeline == name).order_by(t.c.started_at.desc()).limit(1)
    ).first()
    if row is None:
        return None
    m = row._mapping
    return {
        "status": m["status"],
        "started_at": _iso(m["started_at"]),
        "finished_at": _iso(m["finished_at"]),
        "position": m["position"],
        **{k: int(m[k]) for k in ("rows_checked", "missing", "extra", "different", "repaired")},
    }


def _target_state(config: Config, name: str) -> dict[str, Any]:
    schema = config.targets[config.pipelines[name].target].state_schema
    out: dict[str, Any] = {
        "lease_owner": None,
        "lease_expires_at": None,
        "lease_held": False,
        "dead_letters_open": 0,
        "dead_letters": {},
        "snapshot_tasks": {},
        "snapshots_active": [],
        "last_verify": None,
    }
    engine = target_engine(config, name)
    try:
        with engine.connect() as conn:
            have = set(sa.inspect(conn).get_table_names(schema=schema))
            if CHECKPOINTS in have:
                out.update(_lease(conn, name, schema))
            if DEAD_LETTERS in have:
                counts = DeadLetterStore(schema).counts(conn, name)
                out.update(dead_letters=counts, dead_letters_open=counts.get("open", 0))
            if SNAPSHOTS in have:
                out.update(_snapshots(conn, name, schema))
            if VERIFY_RUNS in have:
                out["last_verify"] = _verify(conn, name, schema)
    except CdcSyncError:
        raise
    except Exception as e:
        raise classify(e, "target") from e
    finally:
        engine.dispose()
    return out


def pipeline_status(config: Config, name: str) -> dict[str, Any]:
    """Checkpoint, source head and lag (``offsets.describe``), lease, dead letters, snapshot
    tasks and the last verify run. A server that cannot be reached is reported in
    ``errors`` and the rest is still filled in: status is what one runs when things break."""
    out: dict[str, Any] = {"pipeline": name, "errors": []}
    try:
        out.update(describe(config, name))
    except CdcSyncError as e:
        out["errors"].append(str(e))
    try:
        out.update(_target_state(config, name))
    except CdcSyncError as e:
        if str(e) not in out["errors"]:  # an unreachable target fails both reads alike
            out["errors"].append(str(e))
    return out
