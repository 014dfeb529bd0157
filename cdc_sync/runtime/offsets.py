"""``cdc-sync offsets show`` / ``reset``: checkpoint, source head and lag; an audited reset."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from cdc_sync.audit.writer import AuditWriter
from cdc_sync.checkpoint.store import Checkpoint, CheckpointStore
from cdc_sync.config.models import Config, PostgresSource
from cdc_sync.errors import CdcSyncError, PermanentError
from cdc_sync.records import BinlogPosition, PgLsn, Position
from cdc_sync.runtime.classify import classify
from cdc_sync.runtime.offset_targets import resolve
from cdc_sync.runtime.wiring import build_source, target_engine
from cdc_sync.sources.base import SourceHealth
from cdc_sync.sources.health import retention_warnings
from cdc_sync.sources.postgres import peek
from cdc_sync.state.migrate import upgrade


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


# How long ``describe`` watches a live daemon's checkpoint: an idle daemon moves it to the
# source's heartbeat position every 5 s (loop_commit._IDLE_SECONDS), a busy one commits batches.
SETTLE_SECONDS = 8.0


def _head(config: Config, name: str) -> tuple[Position, SourceHealth]:
    source = build_source(config, name)
    try:
        return source.head(), source.health()
    except CdcSyncError:
        raise
    except Exception as e:
        raise classify(e, "source") from e
    finally:
        source.close()


def _past(position: Position, head: Position) -> bool:
    try:
        return position >= head
    except TypeError:  # a checkpoint of another kind of source: only a reset changes it
        return False


def _settle(
    conn: sa.Connection, store: CheckpointStore, cp: Checkpoint, head: Position, budget: float
) -> tuple[Checkpoint, bool]:
    """Whether nothing is pending for the pipeline at ``head``: a live daemon's checkpoint
    reaches it within ``budget`` seconds (only WAL / binlog of other tables or databases lay
    between; the daemon skips it and moves its checkpoint past it while idle). A batch
    committed meanwhile ends the wait: the daemon is applying changes, and the source
    commit time of what it applied measures the lag. Returns the newest checkpoint."""
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = store.load(conn)
        conn.rollback()  # no snapshot kept: MySQL would show the same row forever
        if now is None:
            return cp, False
        if _past(now.position, head):
            return now, True
        if now.committed_at != cp.committed_at:
            return now, False
    return cp, False


def describe(config: Config, name: str, settle: float = SETTLE_SECONDS) -> dict[str, Any]:
    """Checkpoint, source head and lag for one pipeline.

    ``lag_seconds`` is how long the oldest change not yet applied has waited: 0 when the
    checkpoint is at or past the source head, or when a daemon holds the lease and its
    checkpoint reaches the head read here within ``settle`` seconds (the log between held
    nothing for the pipeline: other tables, other databases, the server's own records).
    Otherwise the time since the source commit of the last applied transaction, an upper
    bound: every change not applied committed after it. Without a running daemon nothing
    tells whether the log after the checkpoint holds changes of the pipeline's tables."""
    out: dict[str, Any] = {"pipeline": name}
    engine = target_engine(config, name)
    state_schema = config.targets[config.pipelines[name].target].state_schema
    store = CheckpointStore(name, schema=state_schema)
    try:
        with engine.connect() as conn:
            has_state = sa.inspect(conn).has_table("cdc_sync_checkpoints", schema=state_schema)
            conn.rollback()
            # The head first: a checkpoint read after it that has reached it is caught up.
            head, health = _head(config, name)
            cp = store.load(conn) if has_state else None
            live = cp is not None and store.lease_holder(conn) is not None
            conn.rollback()
            reached = cp is not None and _past(cp.position, head)
            if cp is not None and live and not reached and settle > 0:
                cp, reached = _settle(conn, store, cp, head, settle)
    except CdcSyncError:
        raise
    except Exception as e:
        raise classify(e, "target") from e
    finally:
        engine.dispose()
    out["source_head"] = head.to_text()
    # Retention (slot wal_status / retained WAL, binlog files): how close to losing changes.
    out["source_health"] = {
        f.name: getattr(health, f.name) for f in fields(health) if f.name != "warnings"
    }
    if cp is None:
        out.update(
            position=None,
            lag_bytes=None,
            lag_seconds=None,
            last_applied_at=None,
            last_source_commit=None,
            warnings=retention_warnings(health, None),
        )
        return out
    out["position"] = cp.position.to_text()
    out["last_applied_at"] = cp.updated_at.isoformat() if cp.updated_at else None
    out["last_source_commit"] = cp.committed_at.isoformat() if cp.committed_at else None
    behind = _bytes_behind(head, cp.position)
    out["lag_bytes"] = behind
    # Nothing pending means no lag, however long ago the last change was.
    if reached or behind == 0 or cp.committed_at is None:
        out["lag_seconds"] = 0.0
    else:
        out["lag_seconds"] = round((datetime.now(UTC) - cp.committed_at).total_seconds(), 3)
    out["warnings"] = retention_warnings(health, out["lag_seconds"])
    return out


# -- offsets reset ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResetPlan:
    """What ``offsets reset`` will do: the checkpoint before and after, and for PostgreSQL
    whether the slot moves forward too (so the server can release the WAL before it)."""

    pipeline: str
    before: Position | None
    after: Position
    slot: str | None = None
    slot_confirmed: PgLsn | None = None

    @property
    def advances_slot(self) -> bool:
        return self.slot_confirmed is not None and self.after > self.slot_confirmed

    def describe(self) -> str:
        before = self.before.to_text() if self.before is not None else "none"
        text = f"pipeline {self.pipeline}: checkpoint {before} -> {self.after.to_text()}"
        if self.advances_slot:
            text += f" (replication slot {self.slot} advanced from {self.slot_confirmed})"
        return text


@contextmanager
def target_connection(config: Config, name: str) -> Iterator[tuple[sa.Connection, str | None]]:
    schema = config.targets[config.pipelines[name].target].state_schema
    engine = target_engine(config, name)
    try:
        with engine.connect() as conn:
            yield conn, schema
    except CdcSyncError:
        raise
    except Exception as e:  # classified here: the CLI shows one clear line
        raise classify(e, f"pipeline {name}: target") from e
    finally:
        engine.dispose()


_RESET_RISK = "a reset under a running daemon would be overwritten or fence it mid-batch"


def refuse_if_held(
    store: CheckpointStore, conn: sa.Connection, lock: bool, risk: str = _RESET_RISK
) -> None:
    """Refuse while a daemon holds the lease; ``risk`` says why, for the command refused."""
    owner = store.lease_holder(conn, lock=lock)
    if owner is not None:
        raise PermanentError(
            f"pipeline {store.pipeline} is running (lease held by {owner}); stop the daemon "
            f"first: {risk}"
        )


def plan_reset(config: Config, name: str, to: str) -> ResetPlan:
    """Where ``--to`` points and what the checkpoint is now; changes nothing."""
    with target_connection(config, name) as (conn, schema):
        upgrade(conn, schema=schema)  # a pipeline that never ran has no table yet
        conn.commit()
        store = CheckpointStore(name, schema=schema)
        refuse_if_held(store, conn, lock=False)
        current = store.load(conn)
        conn.rollback()
    resolved = resolve(config, name, to)
    before = current.position if current is not None else None
    if before is not None and type(before) is not type(resolved.position):
        # Switching a pipeline to another kind of source is a fresh start, not a reset.
        raise PermanentError(
            f"checkpoint {before} and --to {resolved.position} are of different kinds"
        )
    slot = config.slot_for(name) if resolved.slot_confirmed is not None else None
    return ResetPlan(name, before, resolved.position, slot, resolved.slot_confirmed)


def apply_reset(config: Config, plan: ResetPlan, by: str) -> None:
    """Write the new checkpoint and its audit row in one target transaction, then (PG,
    moving forward) advance the slot. In that order: a slot ahead of the checkpoint is a
    refused start, a checkpoint ahead of the slot is fine (the daemon skips what it has)."""
    name = plan.pipeline
    with target_connection(config, name) as (conn, schema):
        store = CheckpointStore(name, schema=schema)
        # Row lock first: no daemon can take the lease or commit until we are done.
        refuse_if_held(store, conn, lock=True)
        current = store.load(conn)
        now = current.position if current is not None else None
        if now != plan.before:
            raise PermanentError(
                f"pipeline {name}: the checkpoint moved since the plan ({plan.before} -> {now}); "
                "run the reset again"
            )
        store.reset(conn, plan.after)
        detail: dict[str, object] = {
            "from": plan.before.to_text() if plan.before is not None else None,
            "to": plan.after.to_text(),
            "by": by,
        }
        if plan.advances_slot:
            detail["slot_advanced_from"] = str(plan.slot_confirmed)
        # An operator action is always audited, whatever the pipeline's audit level.
        conn.execute(
            sa.insert(AuditWriter(name, "off", schema=schema).table),
            {
                "pipeline": name,
                "op": "offsets_reset",
                "outcome": "reset",
                "source_position": plan.after.to_text(),
                "detail": detail,
            },
        )
        conn.commit()
    if plan.advances_slot:
        assert isinstance(plan.after, PgLsn) and plan.slot is not None
        sc = config.sources[config.pipelines[name].source]
        assert isinstance(sc, PostgresSource)
        src = peek.connect(sc.dsn.get_secret_value())
        try:
            peek.advance(src, plan.slot, plan.after)
        finally:
            src.close()
