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


# A change as its letter names it: re-reading it (``offsets reset``) meets the same tuple.
_Change = tuple[str, str | None, str, str, str]  # source table, key, op, point, stage
_CHUNK = 1000  # keys per query: bounded IN lists


def _point(position: str) -> str:
    """A position without its GTID state: file:pos already names one binlog event, and a
    re-read that resumed by file:pos (no GTID state yet) writes the same event's text
    without ``|gtid=`` (PostgreSQL LSNs have no such part)."""
    return position.split("|", 1)[0]


def _change(d: DeadLetter) -> _Change:
    return (d.source_table, d.pk, d.op, _point(d.position), d.stage)


class DeadLetterStore:
    """Reads and writes ``cdc_sync_dead_letters``; never commits (the caller owns the tx)."""

    def __init__(self, schema: str | None = None) -> None:
        self.table = state_tables(schema).dead_letters

    def write(self, conn: sa.Connection, pipeline: str, letters: Sequence[DeadLetter]) -> int:
        """Open a letter for each change that has no open letter yet; returns how many.

        A change is (source table, key, op, source position, stage): re-reading the same
        source changes (``offsets reset`` to an earlier position) meets a refused change
        again, and a second open letter would make ``dlq list`` show it twice and ``dlq
        retry`` apply it twice. The caller still audits each meeting (outcome
        ``dead_letter``). Only an *open* letter holds a change back: after ``dlq retry`` or
        ``discard`` closed it, a re-read is on purpose and the refusal is news, so a new
        letter opens and the closed one stays as history."""
        if not letters:
            return 0
        known = self._open_changes(conn, pipeline, letters)
        fresh: list[DeadLetter] = []
        for d in letters:
            change = _change(d)
            # Without a key, two changes of one binlog event look alike: always a letter.
            if d.pk is None or change not in known:
                known.add(change)  # and once within the batch too
                fresh.append(d)
        if not fresh:
            return 0
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
                for d in fresh
            ],
        )
        return len(fresh)

    def _open_changes(
        self, conn: sa.Connection, pipeline: str, letters: Sequence[DeadLetter]
    ) -> set[_Change]:
        """The changes of ``letters``' keys that have an open letter: one query per batch of
        up to ``_CHUNK`` keys. Filtered by key, not by position, so that a position written
        with or without its GTID state matches (compared by :func:`_point`)."""
        t = self.table
        tables = sorted({d.source_table for d in letters})
        keys = sorted({d.pk for d in letters if d.pk is not None})
        cols = (t.c.source_table, t.c.pk, t.c.op, t.c.source_position, t.c.stage)
        base = sa.select(*cols).where(
            t.c.pipeline == pipeline, t.c.status == OPEN, t.c.source_table.in_(tables)
        )
        queries = [
            base.where(t.c.pk.in_(keys[i : i + _CHUNK])) for i in range(0, len(keys), _CHUNK)
        ]
        out: set[_Change] = set()
        for q in queries:
            for table, pk, op, position, stage in conn.execute(q):
                point = _point(str(position)) if position is not None else ""
                out.add((str(table), None if pk is None else str(pk), str(op), point, str(stage)))
        return out

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
