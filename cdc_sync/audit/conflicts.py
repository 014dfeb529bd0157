"""Conflict log of two-way links: one row per conflict, written in the batch's own transaction."""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from cdc_sync.audit.keys import json_safe
from cdc_sync.state.tables import state_tables


@dataclass(frozen=True, slots=True)
class Conflict:
    """One detected conflict. Rows are dicts by the target's column names; the values are
    kept as they are in the two tables (a link has no masking rules, docs/two-way.md)."""

    pipeline: str
    link: str
    source_table: str
    target_table: str
    pk: str  # JSON text of the key, built by the caller
    op: str  # incoming op: insert | update | delete
    kind: str  # insert_insert | update_update | update_delete | delete_update
    rule: str  # last_write_wins | source_priority | custom
    winner: str  # incoming | current | merged | none
    outcome: str  # conflict_resolved | conflict_dead_letter
    incoming: dict[str, object] | None
    current: dict[str, object] | None
    before: dict[str, object] | None
    resolved: dict[str, object] | None
    incoming_commit_time: datetime
    current_commit_time: datetime | None
    incoming_position: str
    current_position: str | None


@dataclass(frozen=True, slots=True)
class ConflictSummary:
    """One line of ``cdc-sync conflicts list``."""

    id: int
    detected_at: datetime
    pipeline: str
    target_table: str | None
    pk: str | None
    kind: str | None
    rule: str | None
    winner: str | None
    outcome: str | None


def _safe_row(row: Mapping[str, object] | None) -> dict[str, object] | None:
    if row is None:
        return None
    return {str(k): _safe(v) for k, v in row.items()}


def _safe(value: object) -> object:
    if isinstance(value, Mapping):  # a custom rule may hand back nested values
        return {str(k): _safe(v) for k, v in value.items()}
    return json_safe(value)


class ConflictStore:
    """Reads and writes ``cdc_sync_conflicts``; never commits (the caller owns the tx)."""

    def __init__(self, schema: str | None = None) -> None:
        self.table = state_tables(schema).conflicts

    def write(self, conn: sa.Connection, rows: Sequence[Conflict]) -> None:
        """Insert in the caller's open transaction, with JSON-safe row values."""
        if not rows:
            return
        now = datetime.now(UTC)
        conn.execute(
            sa.insert(self.table),
            [
                {
                    "pipeline": c.pipeline,
                    "link": c.link,
                    "source_table": c.source_table,
                    "target_table": c.target_table,
                    "pk": c.pk,
                    "op": c.op,
                    "kind": c.kind,
                    "rule": c.rule,
                    "winner": c.winner,
                    "outcome": c.outcome,
                    "incoming": _safe_row(c.incoming),
                    "current": _safe_row(c.current),
                    "before": _safe_row(c.before),
                    "resolved": _safe_row(c.resolved),
                    "incoming_commit_time": c.incoming_commit_time,
                    "current_commit_time": c.current_commit_time,
                    "incoming_position": c.incoming_position,
                    "current_position": c.current_position,
                    "detected_at": now,
                }
                for c in rows
            ],
        )

    def list(
        self,
        conn: sa.Connection,
        *,
        pipeline: str | None = None,
        table: str | None = None,
        limit: int = 50,
    ) -> builtins.list[ConflictSummary]:
        """Newest first; ``table`` matches the source or the target table."""
        t = self.table
        q = sa.select(
            t.c.id,
            t.c.detected_at,
            t.c.pipeline,
            t.c.target_table,
            t.c.pk,
            t.c.kind,
            t.c.rule,
            t.c.winner,
            t.c.outcome,
        ).order_by(t.c.id.desc())
        if pipeline:
            q = q.where(t.c.pipeline == pipeline)
        if table:
            q = q.where(sa.or_(t.c.source_table == table, t.c.target_table == table))
        if limit > 0:
            q = q.limit(limit)
        return [ConflictSummary(**r._mapping) for r in conn.execute(q)]

    def get(self, conn: sa.Connection, conflict_id: int) -> dict[str, object] | None:
        """Every column of one conflict; None when there is no such id."""
        row = conn.execute(sa.select(self.table).where(self.table.c.id == conflict_id)).first()
        return None if row is None else dict(row._mapping)

    def count(self, conn: sa.Connection, pipeline: str) -> int:
        t = self.table
        q = sa.select(sa.func.count()).select_from(t).where(t.c.pipeline == pipeline)
        return int(conn.execute(q).scalar_one())
