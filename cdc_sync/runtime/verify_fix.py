"""Re-checking suspect keys once the daemon has caught up, and repairing the ones that stay."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa

from cdc_sync.audit.dead_letters import DeadLetter
from cdc_sync.audit.writer import AuditWriter
from cdc_sync.checkpoint.store import CheckpointStore
from cdc_sync.errors import CdcSyncError, RowLevelError
from cdc_sync.records import ChangeRecord, Op, Position, Row
from cdc_sync.runtime.verify_refused import Refusals
from cdc_sync.runtime.verify_scan import Expected, Shaper, Suspect, Suspects
from cdc_sync.sinks.sql.read import Key, TargetReader
from cdc_sync.sinks.sql.sink import SqlSink
from cdc_sync.sources.base import Source
from cdc_sync.transforms import RuleError

ROUNDS = 3  # a key written again while being re-checked gets another look


@dataclass
class Settle:
    """Waits until the daemon's checkpoint has reached a source position.

    The checkpoint only moves when a transaction touching the pipeline's tables commits, so
    an idle daemon never reaches the source head: a checkpoint that stayed put for ``quiet``
    seconds counts as caught up too (nothing is left to apply, or no daemon is running)."""

    conn: sa.Connection
    store: CheckpointStore
    budget: float  # seconds to wait in all
    quiet: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], object] = time.sleep
    reached: bool = True  # every wait so far ended with the checkpoint past the position
    # With a signal table: a watermark written before the head is read gives the daemon a
    # transaction of its own to commit, so its checkpoint does pass that head (exact); the
    # quiet rule is then only for an absent daemon.
    watermark: Callable[[], None] | None = None

    def head(self, source: Source) -> Position:
        if self.watermark is not None:
            try:
                self.watermark()
            except CdcSyncError:
                self.watermark = None  # no signal table yet (daemon never ran): quiet rule
        return source.head()

    def wait(self, position: Position) -> None:
        deadline = self.clock() + self.budget
        last: Position | None = None
        since = self.clock()
        while True:
            cp = self.store.load(self.conn)
            self.conn.rollback()  # no snapshot kept: MySQL would show the same row forever
            now = self.clock()
            if cp is not None and cp.position >= position:
                return
            if cp is None or cp.position != last:
                last, since = (cp.position if cp else None), now
            if now - since >= self.quiet:
                return  # idle or absent daemon: nothing more will arrive
            if now >= deadline:
                self.reached = False
                return
            self.sleep(min(0.2, max(deadline - now, 0)))


@dataclass
class Verdict:
    """Where a suspect key stands after the re-check."""

    missing: list[Suspect] = field(default_factory=list)
    extra: list[Suspect] = field(default_factory=list)
    different: list[Suspect] = field(default_factory=list)
    refused: list[Suspect] = field(default_factory=list)  # a rule refuses the source row

    def suspects(self) -> Suspects:
        return Suspects(self.missing, self.extra, self.different)


def _source_side(
    source: Source, shaper: Shaper, suspects: list[Suspect]
) -> dict[Suspect, tuple[Row | None, Expected]]:
    """Each suspect's current source row and what it should be in the target."""
    known = [s for s in suspects if s.source_key is not None]
    rows = source.fetch_rows(
        shaper.source.table, shaper.source, [s.source_key for s in known if s.source_key]
    )
    out: dict[Suspect, tuple[Row | None, Expected]] = {}
    for s, row in zip(known, rows, strict=True):
        out[s] = (row, shaper.shape(row)[1] if row is not None else Expected(None, None))
    for s in suspects:
        # A hashed key's source row cannot be found again: absent unless a rescan finds it.
        out.setdefault(s, (None, Expected(None, None)))
    return out


def recheck(
    source: Source,
    reader: TargetReader,
    shaper: Shaper,
    suspects: Suspects,
    settle: Settle,
) -> Verdict:
    """Read the suspects' source rows, wait until the daemon has applied everything up to
    the source head read after them, then compare with the target again. Only keys that
    still differ are reported: a busy source gives no false alarms."""
    pending = suspects.all()
    verdict = Verdict()
    for _ in range(ROUNDS):
        if not pending:
            break
        expected = _source_side(source, shaper, pending)
        settle.wait(settle.head(source))  # the head after the reads: they are before it
        got = reader.lookup([s.target_key for s in pending])
        reader.conn.rollback()
        by_text = {shaper.key_text(k): r for k, r in got.items()}
        verdict = Verdict()
        for s in pending:
            _, exp = expected[s]
            row = by_text.get(shaper.key_text(s.target_key))
            if exp.refused:
                verdict.refused.append(s)
            elif exp.digest is None:
                if row is not None:
                    verdict.extra.append(s)
            elif row is None:
                verdict.missing.append(s)
            elif shaper.digest(row) != exp.digest:
                verdict.different.append(s)
        pending = [*verdict.missing, *verdict.extra, *verdict.different]
        if not settle.reached:
            break  # the daemon is not keeping up: another look would see the same
    return verdict


def rescan_hashed_extras(source: Source, shaper: Shaper, extras: list[Suspect], chunk: int) -> None:
    """Extras of a table whose key a rule transforms have no source key: one more pass over
    the source finds the rows that now produce such a key (inserted during the scan)."""
    wanted = {shaper.key_text(s.target_key): i for i, s in enumerate(extras)}
    after: Key | None = None
    while wanted:
        rows = source.read_chunk(shaper.source.table, shaper.source, after, chunk)
        for row in rows:
            _, exp = shaper.shape(row)
            i = None if exp.key is None else wanted.pop(shaper.key_text(exp.key), None)
            if i is not None:
                extras[i] = Suspect(extras[i].target_key, shaper.source_key(row))
        if len(rows) < chunk:
            return
        after = shaper.source_key(rows[-1])


def repair(
    conn: sa.Connection,
    source: Source,
    reader: TargetReader,
    shaper: Shaper,
    verdict: Verdict,
    *,
    sink: SqlSink,
    audit: AuditWriter,
    store: CheckpointStore,
    position: Position,
    refusals: Refusals,
) -> int:
    """Write the differing keys through the sink, audited with outcome 'repair'; returns
    how many were written.

    The pipeline's checkpoint row is locked first (FOR UPDATE): the daemon cannot commit
    while the source rows are read and written, so everything it applied is older than
    what is written here, and everything newer reaches the target after this commit (the
    stream is past the checkpoint). Keys a rule refuses are left alone (dead letters).

    A row the target refuses (a constraint, a NOT NULL, a too long value) is handled as the
    stream handles it: rolled back to its own savepoint, dead-lettered (unless a letter is
    open for the key already) and noted in ``refusals``; the other keys and the letters
    commit together, in this one transaction."""
    todo = [*verdict.missing, *verdict.extra, *verdict.different]
    if not todo:
        return 0
    t = store.table
    conn.execute(sa.select(t.c.pipeline).where(t.c.pipeline == store.pipeline).with_for_update())
    expected = _source_side(source, shaper, todo)
    present = reader.lookup([s.target_key for s in todo])
    present_text = {shaper.key_text(k) for k in present}
    now = datetime.now(UTC)
    items: list[ChangeRecord] = []
    # Per item: its suspect, the source record it was shaped from (None: a delete) and its
    # audit row, for a refusal to be dead-lettered and its audit row corrected.
    origin: list[tuple[Suspect, ChangeRecord | None, int]] = []
    for s in todo:
        row, exp = expected[s]
        if exp.refused:
            continue
        applied = None
        rec = None
        if row is not None:
            rec = shaper.record(row, Op.UPDATE)
            try:  # an UPDATE without an old image: an upsert, or a delete if filtered out
                applied = shaper.tt.apply(rec)
            except RuleError:
                continue  # refused since the re-check: the stream dead-letters it
        if applied is not None:
            out = applied.record
        elif shaper.key_text(s.target_key) in present_text:
            out, rec = _delete(shaper, s.target_key, position, now), None
        else:
            continue
        items.append(out)
        rules = applied.rules if applied is not None else ()
        index = audit.add(out, reader.table, outcome="repair", rules=rules, extra={"by": "verify"})
        origin.append((s, rec, index))
    refused: list[tuple[int, DeadLetter]] = []

    def reject(i: int, err: RowLevelError) -> None:
        s, rec, _ = origin[i]
        refused.append((i, refusals.add(s, rec, items[i], err)))

    sink.apply_or_reject(conn, [(r, reader.table) for r in items], reject)
    states = refusals.write(conn)
    rows = audit.take()
    for n, (i, letter) in enumerate(refused):
        # Outcome as the stream writes it for a refused row; 'refused' without a letter.
        outcome = "refused" if states[n] == "none" else "dead_letter"
        why = {"code": letter.error_code, "constraint": letter.constraint}
        audit.mark(rows, origin[i][2], outcome, {"dead_letter": why})
    audit.write(conn, rows)
    conn.commit()
    return len(items) - len(refused)


def _delete(shaper: Shaper, key: Key, position: Position, now: datetime) -> ChangeRecord:
    """A target-shaped DELETE of a target key (the source row is gone or filtered out)."""
    schema = shaper.target
    before: list[object] = [None] * len(schema.columns)
    for i, v in zip(schema.key_indexes, key, strict=True):
        before[i] = v
    return ChangeRecord(
        Op.DELETE, schema.table, schema, tuple(before), None, position, "verify", now, True
    )
