"""verify --repair: rows the target refuses are skipped, reported and dead-lettered."""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from cdc_sync import logs
from cdc_sync.audit.dead_letters import OPEN, DeadLetter, DeadLetterStore, key_json
from cdc_sync.errors import RowLevelError
from cdc_sync.records import ChangeRecord, TableId
from cdc_sync.runtime.events import EVENTS
from cdc_sync.runtime.rules import target_letter
from cdc_sync.runtime.verify_scan import Shaper, Suspect
from cdc_sync.sinks.sql.errors import TargetRowError

SHOWN = 100
"""Refused keys kept per table for the report; more are counted only."""


@dataclass(frozen=True)
class Refusal:
    """One key the target refused to take from the source. Identifiers and codes only: the
    key is rendered as dead letters and the audit render it (masked where a rule masks it),
    never a row value."""

    key: str | None
    op: str
    code: str | None
    constraint: str | None
    column: str | None
    reason: str
    dead_letter: str  # new | open (one was already open for the key) | none (on_error: stop)


@dataclass
class Refusals:
    """The refusals of one table's repair; their dead letters go into the repair's own
    transaction, so a letter exists exactly when the repair that met the refusal committed."""

    pipeline: str
    shaper: Shaper
    target: TableId
    store: DeadLetterStore | None  # None: on_error is stop, the pipeline keeps no letters
    count: int = 0
    shown: list[Refusal] = field(default_factory=list)
    _letters: list[DeadLetter] = field(default_factory=list)

    def add(
        self,
        suspect: Suspect,
        source_rec: ChangeRecord | None,
        item: ChangeRecord,
        err: RowLevelError,
    ) -> DeadLetter:
        """Note a refusal of ``item``: ``source_rec`` is the source record it was shaped
        from (None for a delete of a key the source no longer has)."""
        tt = self.shaper.tt
        if source_rec is not None:
            letter = target_letter(tt, source_rec, self.target, err)
        else:
            letter = self._delete_letter(suspect, item, err)
        self.count += 1
        self._letters.append(letter)
        logs.get().warning(
            "verify_repair_refused",  # no key: the report and the dead letter name it
            pipeline=self.pipeline,
            table=letter.source_table,
            stage="target",
            code=letter.error_code,
            constraint=letter.constraint,
            column=letter.column,
        )
        return letter

    def _delete_letter(
        self, suspect: Suspect, item: ChangeRecord, err: RowLevelError
    ) -> DeadLetter:
        """A target-shaped delete has no source row to mask: the target key as the target
        holds it (already masked), the source key only when it is not sensitive."""
        tt, schema = self.shaper.tt, self.shaper.target
        before = item.before or ()
        pk = key_json({c: before[i] for c, i in zip(schema.key, schema.key_indexes, strict=True)})
        source_pk = None
        if suspect.source_key is not None and not tt.sensitive_key and self.shaper.passthrough:
            source_pk = key_json(dict(zip(tt.source.key, suspect.source_key, strict=True)))
        row_err = err if isinstance(err, TargetRowError) else None
        return DeadLetter(
            source_table=str(tt.source.table),
            target_table=str(self.target),
            op=item.op.value,
            pk=pk,
            source_pk=source_pk,
            position=item.position.to_text(),
            xid=item.xid,
            commit_time=item.commit_time,
            stage="target",
            reason=row_err.reason if row_err else str(err),
            column=row_err.column if row_err else None,
            error_code=row_err.code if row_err else None,
            constraint=row_err.constraint if row_err else None,
        )

    def write(self, conn: sa.Connection) -> dict[int, str]:
        """Write the dead letters of the keys without an open one (no duplicate of the
        stream's letter for the same row), in the caller's transaction; returns, by index
        of :meth:`add`, ``new``, ``open`` or ``none``."""
        letters, self._letters = self._letters, []
        if self.store is None:
            states = dict.fromkeys(range(len(letters)), "none")
        else:
            already = _open_keys(conn, self.store, self.pipeline, letters)
            states = {
                i: "open" if (d.source_table, d.pk) in already else "new"
                for i, d in enumerate(letters)
            }
            fresh = [d for i, d in enumerate(letters) if states[i] == "new"]
            self.store.write(conn, self.pipeline, fresh)
            for d in fresh:
                EVENTS.dead_lettered(self.pipeline, d.source_table, "target")
        room = max(SHOWN - len(self.shown), 0)
        for i, d in enumerate(letters[:room]):
            self.shown.append(
                Refusal(d.pk, d.op, d.error_code, d.constraint, d.column, d.reason, states[i])
            )
        return states


def _open_keys(
    conn: sa.Connection, store: DeadLetterStore, pipeline: str, letters: list[DeadLetter]
) -> set[tuple[str, str | None]]:
    """(source table, key) of the open letters among ``letters``' keys, whatever their stage:
    any open letter for the row is retried from the source row as it is then."""
    t = store.table
    out: set[tuple[str, str | None]] = set()
    keys = sorted({d.pk for d in letters if d.pk is not None})
    tables = sorted({d.source_table for d in letters})
    for start in range(0, len(keys), 1000):  # bounded IN lists
        q = sa.select(t.c.source_table, t.c.pk).where(
            t.c.pipeline == pipeline,
            t.c.status == OPEN,
            t.c.source_table.in_(tables),
            t.c.pk.in_(keys[start : start + 1000]),
        )
        out.update((str(s), None if k is None else str(k)) for s, k in conn.execute(q))
    return out
