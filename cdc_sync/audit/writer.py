"""Audit writer: one row per applied change (or per source transaction) in the batch's tx."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from json.encoder import encode_basestring as _encode_str  # C, non-ASCII kept
from typing import Literal
from uuid import UUID

import sqlalchemy as sa

from cdc_sync.records import ChangeRecord, Interval, Op, Position, TableId, TableSchema
from cdc_sync.state.driver import psycopg_connection
from cdc_sync.state.tables import state_tables

AuditLevel = Literal["row", "transaction", "off"]

KeyRenderer = Callable[[TableSchema, tuple[object, ...]], str]
"""Renders a row key as the audit ``pk`` text. The masking hook: a PII-masking renderer
(later issue) replaces this, so key values never reach the audit table unmasked."""


def json_safe(value: object) -> object:
    """A JSON-representable form of a canonical value, exact and unambiguous as text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal | UUID):
        return str(value)  # Decimal keeps its scale and NaN / Infinity
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return "\\x" + value.hex()  # as PostgreSQL prints bytea
    if isinstance(value, Interval):
        return value.to_iso()
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return str(value)


_PREFIXES: dict[tuple[str, ...], tuple[str, ...]] = {}


def default_key_renderer(schema: TableSchema, key: tuple[object, ...]) -> str:
    """``{"col":value,...}`` in key order, compact, non-ASCII kept as is.

    Hand-assembled (same text as ``json.dumps(..., separators=(",", ":"),
    ensure_ascii=False)``) because this runs once per audited row on the hot path.
    """
    names = schema.key
    prefixes = _PREFIXES.get(names)
    if prefixes is None:
        prefixes = _PREFIXES[names] = tuple(
            ("{" if i == 0 else ",") + _encode_str(n) + ":" for i, n in enumerate(names)
        )
    parts = []
    for prefix, v in zip(prefixes, key, strict=True):
        parts.append(prefix)
        if type(v) is int:
            parts.append(str(v))
        elif type(v) is str:
            parts.append(_encode_str(v))
        else:
            parts.append(json.dumps(json_safe(v), ensure_ascii=False, separators=(",", ":")))
    parts.append("}")
    return "".join(parts)


# Column order of buffered rows (tuples: cheaper to build than dicts at 50k rows/s).
_COLUMNS = (
    "pipeline",
    "source_table",
    "target_table",
    "op",
    "pk",
    "source_position",
    "source_tx",
    "committed_at",
    "outcome",
    "detail",
)
_Row = tuple[object, ...]


class AuditWriter:
    """Buffers audit rows and writes them with one bulk statement per flush.

    ``flush`` runs in the runtime's target transaction, never commits: the audit commits
    with the rows it describes and with the checkpoint (invariant 1), so a change is audited
    exactly once even though delivery is at-least-once. Only key values are written (via
    ``key_renderer``), never other column values; changed column *names* go into detail.
    """

    def __init__(
        self,
        pipeline: str,
        level: AuditLevel = "row",
        *,
        key_renderer: KeyRenderer = default_key_renderer,
        schema: str | None = None,
    ) -> None:
        if level not in ("row", "transaction", "off"):
            raise ValueError(f"audit level must be row, transaction or off, not {level!r}")
        self.pipeline = pipeline
        self.level = level
        self.key_renderer = key_renderer
        self.table = state_tables(schema).audit
        self._copy_sql = (
            f"COPY {_qualified(self.table)} ({', '.join(_COLUMNS)}) FROM STDIN"
        ).encode()
        self._rows: list[_Row] = []
        self._details: dict[tuple[str, ...], str] = {}
        # transaction level: per target table, per op (applied) / per outcome (the rest)
        self._counts: dict[str, dict[str, int]] = {}
        self._outcomes: dict[str, int] = {}

    def add(self, record: ChangeRecord, target_table: TableId, outcome: str = "applied") -> None:
        if self.level == "row":
            self._rows.append(self._row(record, target_table, outcome))
        elif self.level == "transaction":
            if outcome == "applied":
                per_table = self._counts.setdefault(str(target_table), {})
                per_table[record.op.value] = per_table.get(record.op.value, 0) + 1
            else:
                self._outcomes[outcome] = self._outcomes.get(outcome, 0) + 1

    def _row(self, rec: ChangeRecord, target: TableId, outcome: str) -> _Row:
        idx = rec.schema.key_indexes
        row = rec.before if rec.op is Op.DELETE else rec.after
        pk = None if row is None else self.key_renderer(rec.schema, tuple([row[i] for i in idx]))
        before = rec.before
        old = None if before is None or rec.op is not Op.UPDATE else tuple([before[i] for i in idx])
        if old is not None and row is not None and old != tuple([row[i] for i in idx]):
            detail: dict[str, object] = {"old_pk": json.loads(self.key_renderer(rec.schema, old))}
            if rec.changed:
                detail["changed"] = list(rec.changed)
            detail_text: str | None = json.dumps(detail)
        else:
            detail_text = self._changed_detail(rec.changed)
        return (
            self.pipeline,
            str(rec.table),
            str(target),
            rec.op.value,
            pk,
            rec.position.to_text(),
            rec.xid,
            rec.commit_time,
            outcome,
            detail_text,
        )

    def _changed_detail(self, changed: tuple[str, ...]) -> str | None:
        # The same few column sets repeat for every row of a table: serialise each once.
        if not changed:
            return None
        text = self._details.get(changed)
        if text is None:
            if len(self._details) > 10_000:
                self._details.clear()
            text = self._details[changed] = json.dumps({"changed": list(changed)})
        return text

    def end_transaction(self, xid: str, commit_time: datetime, position: Position) -> None:
        """A source transaction is complete: at transaction level, its one summary row."""
        if self.level != "transaction" or not (self._counts or self._outcomes):
            return
        total = sum(n for per in self._counts.values() for n in per.values())
        detail: dict[str, object] = {"counts": self._counts, "rows": total}
        if self._outcomes:
            detail["outcomes"] = self._outcomes
        outcome = "applied" if total else "skipped"
        row = (self.pipeline, None, None, "transaction", None, position.to_text(), xid,
               commit_time, outcome, json.dumps(detail))  # fmt: skip
        self._rows.append(row)
        self._counts, self._outcomes = {}, {}

    def flush(self, conn: sa.Connection) -> None:
        """Write what is buffered in the caller's transaction, as one bulk statement."""
        self.write(conn, self.take())

    def take(self) -> list[_Row]:
        """Hand the buffered rows over (to a writer thread); the buffer starts empty again."""
        rows, self._rows = self._rows, []
        return rows

    def write(self, conn: sa.Connection, rows: list[_Row]) -> None:
        """Write rows from :meth:`take` in the caller's transaction, as one bulk statement."""
        if not rows:
            return
        raw = psycopg_connection(conn) if conn.dialect.name == "postgresql" else None
        if raw is not None:
            # COPY: measured several times faster than a multi-row INSERT here.
            with raw.cursor() as cur, cur.copy(self._copy_sql) as copy:
                for r in rows:
                    copy.write_row(r)
            return
        # Other dialects: one executemany; the JSON column type wants objects, not text.
        params = [dict(zip(_COLUMNS, r, strict=True)) for r in rows]
        for p in params:
            if p["detail"] is not None:
                p["detail"] = json.loads(str(p["detail"]))
        conn.execute(sa.insert(self.table), params)

    def discard(self) -> None:
        """Drop everything buffered (the runtime rolled the target transaction back)."""
        self._rows = []
        self._counts, self._outcomes = {}, {}

    @property
    def pending(self) -> int:
        return len(self._rows)


def _qualified(table: sa.Table) -> str:
    def q(name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    return f"{q(table.schema)}.{q(table.name)}" if table.schema else q(table.name)
