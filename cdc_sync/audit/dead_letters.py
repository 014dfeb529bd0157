"""Dead letters: rows a rule or the target refused, written in the batch's own transaction."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from cdc_sync.audit.keys import json_safe
from cdc_sync.state.tables import state_tables

OPEN, RETRIED, DISCARDED = "open", "retried", "discarded"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One refused row. Nothing here may hold a raw value of a column: ``row`` is the masked
    form (transforms' ``masked_row``), ``reason`` is built from rule names, SQLSTATEs and
    constraint names only, never from a driver's message text (its DETAIL holds values)."""

    source_table: str
    target_table: str
    op: str
    pk: str | None
    source_pk: str | None
    position: str
    xid: str | None
    commit_time: datetime | None
    stage: str  # rule | target
    reason: str
    rule: str | None = None
    column: str | None = None
    error_code: str | None = None
    constraint: str | None = None
    row: dict[str, object] | None = None


def key_json(key: dict[str, object] | None) -> str | None:
    """A key as the audit writes it: compact JSON in key order, non-ASCII kept."""
    if key is None:
        return None
    safe = {k: json_safe(v) for k, v in key.items()}
    return json.dumps(safe, ensure_ascii=False, separators=(",", ":"))


class DeadLetterStore:
    """Reads and writes ``cdc_sync_dead_letters``; never commits (the caller owns the tx)."""

    def __init__(self, schema: str | None = None) -> None:
        self.table = state_tables(schema).dead_letters

    def write(self, conn: sa.Connection, pipeline: str, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        conn.execute(
            sa.insert(self.table),
            [
                {
                    "pipeline": pipeline,
                    "source_table": d.source_table,
                    "target_table": d.target_table,
                    "op": d.op,
                    "pk": d.pk,
                    "source_pk": d.source_pk,
                    "source_position": d.position,
                    "source_tx": d.xid,
                    "committed_at": d.commit_time,
                    "stage": d.stage,
                    "rule": d.rule,
                    "column_name": d.column,
                    "error_code": d.error_code,
                    "constraint_name": d.constraint,
                    "reason": d.reason,
                    "row_masked": d.row,
                    "status": OPEN,
                }
                for d in letters
            ],
        )

    def select(
        self,
        conn: sa.Connection,
        *,
        pipeline: str | None = None,
        tables: Collection[str] = (),
        ids: Sequence[int] = (),
        status: str | None = OPEN,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Oldest first; ``tables`` matches a letter's source or target table name."""
        t = self.table
        q = self._where(sa.select(t), pipeline, tables, ids, status).order_by(t.c.id)
        if limit:
            q = q.limit(limit)
        return [dict(r._mapping) for r in conn.execute(q)]

    def count(
        self,
        conn: sa.Connection,
        *,
        pipeline: str | None = None,
        tables: Collection[str] = (),
        status: str | None = OPEN,
    ) -> int:
        """How many letters ``select`` would return without a limit."""
        q = self._where(
            sa.select(sa.func.count()).select_from(self.table), pipeline, tables, (), status
        )
        return int(conn.execute(q).scalar_one())

    def _where(
        self,
        q: sa.Select[Any],
        pipeline: str | None,
        tables: Collection[str],
        ids: Sequence[int],
        status: str | None,
    ) -> sa.Select[Any]:
        t = self.table
        if pipeline:
            q = q.where(t.c.pipeline == pipeline)
        if tables:
            names = sorted(tables)
            q = q.where(sa.or_(t.c.source_table.in_(names), t.c.target_table.in_(names)))
        if ids:
            q = q.where(t.c.id.in_(list(ids)))
        if status:
            q = q.where(t.c.status == status)
        return q

    def resolve(self, conn: sa.Connection, dl_id: int, status: str, by: str) -> bool:
        """Close an open dead letter (retried / discarded); False when it was not open."""
        t = self.table
        done = conn.execute(
            sa.update(t)
            .where(t.c.id == dl_id, t.c.status == OPEN)
            .values(
                status=status,
                resolved_at=datetime.now(UTC),
                resolved_by=by,
                attempts=t.c.attempts + (1 if status == RETRIED else 0),
            )
        )
        return bool(done.rowcount)

    def failed_again(
        self, conn: sa.Connection, dl_id: int, reason: str, rule: str | None, column: str | None
    ) -> None:
        """A retry met a (new) refusal: the letter stays open with today's reason."""
        t = self.table
        conn.execute(
            sa.update(t)
            .where(t.c.id == dl_id)
            .values(attempts=t.c.attempts + 1, reason=reason, rule=rule, column_name=column)
        )

    def counts(self, conn: sa.Connection, pipeline: str | None = None) -> dict[str, int]:
        t = self.table
        q = sa.select(t.c.status, sa.func.count()).group_by(t.c.status)
        if pipeline:
            q = q.where(t.c.pipeline == pipeline)
        return {str(s): int(n) for s, n in conn.execute(q)}
