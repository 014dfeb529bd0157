"""Two-way links at apply time: each change checked against the target's row, conflicts
resolved by the link's rules and logged in the same target transaction."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from cdc_sync.audit.conflicts import Conflict, ConflictStore
from cdc_sync.audit.dead_letters import DeadLetter
from cdc_sync.audit.keys import json_safe
from cdc_sync.config.links import LinkRole
from cdc_sync.conflicts.resolve import Custom, Decision, Resolver, as_dict, load_custom
from cdc_sync.errors import PermanentError
from cdc_sync.records import UNCHANGED, ChangeRecord, Op, Row, TableId, TableSchema
from cdc_sync.runtime.events import EVENTS
from cdc_sync.runtime.link_clock import CurrentTimes, key_hash, row_digest
from cdc_sync.sinks.sql.read import TargetReader
from cdc_sync.verify.canonical import renderer

Item = tuple[ChangeRecord, TableId]
NO_CHECK = -2
"""Audit index of an item applied without a conflict check (a link's seed copy)."""


@dataclass
class Resolved:
    """What one flush becomes: the items to apply (by their index in the flush), their
    records (replaced where a conflict was resolved), audit outcomes, conflicts, letters."""

    keep: list[int]
    items: list[Item]
    marks: list[tuple[int, str, dict[str, object]]]  # (flush index, outcome, audit detail)
    conflicts: list[Conflict]
    letters: list[DeadLetter]


class LinkApplier:
    """One link pipeline's conflict check; runs on the writer thread, inside the open target
    transaction (the target rows are read FOR UPDATE, so a local writer cannot slip a change
    in between the check and the write)."""

    def __init__(
        self,
        pipeline: str,
        role: LinkRole,
        store: ConflictStore,
        log: Any,
        times: CurrentTimes | None = None,
    ) -> None:
        self.pipeline, self.role, self.store, self.log = pipeline, role, store, log
        # last_write_wins: where the target's current rows' commit times come from
        self.times = times
        self._lww = {s for s, t in role.tables.items() if t.conflict.rule == "last_write_wins"}
        self._custom: dict[str, Custom] = {
            src: load_custom(t.conflict.custom)
            for src, t in role.tables.items()
            if t.conflict.rule == "custom" and t.conflict.custom
        }
        self._resolvers: dict[tuple[TableId, int], Resolver] = {}
        self._readers: dict[tuple[TableId, int], TargetReader] = {}
        self._conn_id = 0

    def _resolver(self, rec: ChangeRecord) -> Resolver | None:
        key = (rec.table, id(rec.schema))
        r = self._resolvers.get(key)
        if r is None:
            role = self.role.tables.get(str(rec.table))
            if role is None:
                return None
            r = Resolver(
                rec.schema,
                role,
                incoming_side=self.role.from_side,
                current_side=self.role.to_side,
                first_side=self.role.first,
                custom=self._custom.get(str(rec.table)),
            )
            self._resolvers[key] = r
        return r

    def _reader(self, conn: sa.Connection, target: TableId, schema: TableSchema) -> TargetReader:
        if id(conn) != self._conn_id:
            self._readers.clear()  # a new connection after a retry
            self._conn_id = id(conn)
        key = (target, id(schema))
        reader = self._readers.get(key)
        if reader is None:
            reader = self._readers[key] = TargetReader(conn, target, schema)
        return reader

    def resolve(
        self, conn: sa.Connection, items: Sequence[Item], audit_index: Sequence[int]
    ) -> Resolved:
        current = self._current_rows(conn, items)
        times = self._times(conn, items, audit_index, current) if self._lww else {}
        written: dict[tuple[TableId, tuple[str | None, ...]], tuple[ChangeRecord, datetime]] = {}
        out = Resolved([], [], [], [], [])
        for n, (rec, target) in enumerate(items):
            resolver = self._resolver(rec)
            unchecked = audit_index[n] == NO_CHECK or rec.op is Op.TRUNCATE
            if resolver is None or unchecked or rec.key_changed():
                out.keep.append(n)
                out.items.append((rec, target))
                continue
            key = _key_text(rec.schema, rec.key())
            row = current.get((target, key))
            t_current = times.get((target, key))
            decision = resolver.decide(rec, row, t_current)
            version = rec.commit_time
            if decision.kind is None:
                out.keep.append(n)
                out.items.append((rec, target))
                current[(target, key)] = _after_state(rec, row)
            else:
                self._conflict(out, n, rec, target, row, decision, audit_index[n], t_current)
                if decision.record is None:
                    continue
                out.keep.append(n)
                out.items.append((decision.record, target))
                current[(target, key)] = (
                    None if decision.record.op is Op.DELETE else decision.resolved
                )
                if t_current is not None:
                    version = max(version, t_current)  # the resolved row's version
            times[(target, key)] = version
            written[(target, key)] = (rec, version)
        if self._lww and self.times is not None:
            self._write_clock(conn, written, current)
        return out

    def _times(
        self,
        conn: sa.Connection,
        items: Sequence[Item],
        audit_index: Sequence[int],
        current: dict[tuple[TableId, tuple[str | None, ...]], Row | None],
    ) -> dict[tuple[TableId, tuple[str | None, ...]], datetime | None]:
        """Commit times of the current rows that the flush's first change of a key
        conflicts with (later changes of that key meet our own write, whose time we know)."""
        assert self.times is not None
        seen: set[tuple[TableId, tuple[str | None, ...]]] = set()
        need: dict[tuple[TableId, int], tuple[TableSchema, dict[str, tuple[object, ...]]]] = {}
        for n, (rec, target) in enumerate(items):
            if str(rec.table) not in self._lww or audit_index[n] == NO_CHECK:
                continue
            if rec.op in (Op.TRUNCATE, Op.DELETE) or rec.key_changed():
                continue  # a delete wins its conflicts without a time
            key = _key_text(rec.schema, rec.key())
            if (target, key) in seen:
                continue
            seen.add((target, key))
            row = current.get((target, key))
            resolver = self._resolver(rec)
            if row is None or resolver is None or resolver.decide(rec, row).kind is None:
                continue
            slot = need.setdefault((target, id(rec.schema)), (rec.schema, {}))
            slot[1][key_hash(rec.key())] = rec.key()
        out: dict[tuple[TableId, tuple[str | None, ...]], datetime | None] = {}
        for (target, _), (schema, keys) in need.items():
            rows = {
                h: r
                for h, k in keys.items()
                if (r := current.get((target, _key_text(schema, k)))) is not None
            }
            found = self.times.of(conn, target, schema, rows)
            for h, k in keys.items():
                out[(target, _key_text(schema, k))] = found.get(h)
        return out

    def _write_clock(
        self,
        conn: sa.Connection,
        written: dict[tuple[TableId, tuple[str | None, ...]], tuple[ChangeRecord, datetime]],
        current: dict[tuple[TableId, tuple[str | None, ...]], Row | None],
    ) -> None:
        """The version time of every row written, in this transaction (MySQL targets also
        keep its digest, to tell our version from a later local one)."""
        assert self.times is not None
        digest = conn.dialect.name != "postgresql"
        per_table: dict[TableId, list[tuple[str, datetime, str]]] = {}
        for (target, key), (rec, version) in written.items():
            if str(rec.table) not in self._lww:
                continue
            row = current.get((target, key))
            if row is None or UNCHANGED in row:
                continue  # deleted: a delete wins update/delete conflicts, no time needed
            d = row_digest(rec.schema, row) if digest else ""
            per_table.setdefault(target, []).append((key_hash(rec.key()), version, d))
        for target, entries in per_table.items():
            self.times.clock.write_remote(conn, target, entries)

    def _current_rows(
        self, conn: sa.Connection, items: Sequence[Item]
    ) -> dict[tuple[TableId, tuple[str | None, ...]], Row | None]:
        wanted: dict[tuple[TableId, int], tuple[TableSchema, dict[tuple[object, ...], None]]] = {}
        for rec, target in items:
            if rec.op is Op.TRUNCATE or str(rec.table) not in self.role.tables:
                continue
            slot = wanted.setdefault((target, id(rec.schema)), (rec.schema, {}))
            slot[1][rec.key()] = None
        found: dict[tuple[TableId, tuple[str | None, ...]], Row | None] = {}
        for (target, _), (schema, keys) in wanted.items():
            reader = self._reader(conn, target, schema)
            rows = reader.lookup(list(keys), lock=True)
            for k in keys:
                found[(target, _key_text(schema, k))] = None
            for row in rows.values():
                found[(target, _key_text(schema, reader.key_of(row)))] = row
        return found

    def _conflict(  # noqa: PLR0917  (one conflict's facts)
        self,
        out: Resolved,
        n: int,
        rec: ChangeRecord,
        target: TableId,
        current: Row | None,
        d: Decision,
        audit_index: int,
        current_time: datetime | None = None,
    ) -> None:
        role = self.role.tables[str(rec.table)]
        schema = rec.schema
        pk = json.dumps(
            {c: json_safe(v) for c, v in zip(schema.key, rec.key(), strict=True)},
            ensure_ascii=False,
            default=str,
        )
        outcome = "conflict_dead_letter" if d.dead_letter else "conflict_resolved"
        rule = role.conflict.rule
        out.conflicts.append(
            Conflict(
                pipeline=self.pipeline,
                link=self.role.link,
                source_table=str(rec.table),
                target_table=str(target),
                pk=pk,
                op=rec.op.value,
                kind=d.kind or "",
                rule=rule,
                winner=d.winner,
                outcome=outcome,
                incoming=as_dict(schema, rec.after),
                current=as_dict(schema, current),
                before=as_dict(schema, rec.before),
                resolved=as_dict(schema, d.resolved),
                incoming_commit_time=rec.commit_time,
                current_commit_time=current_time,
                incoming_position=rec.position.to_text(),
                current_position=None,
            )
        )
        out.marks.append((audit_index, outcome, {"conflict": {"kind": d.kind, "winner": d.winner,
                                                              "rule": rule}}))  # fmt: skip
        EVENTS.conflict(self.pipeline, str(target), d.kind or "", d.winner)
        self.log.info(
            "conflict_resolved" if not d.dead_letter else "conflict_dead_lettered",
            table=str(target),
            kind=d.kind,
            rule=rule,
            winner=d.winner,
            position=rec.position.to_text(),
        )
        if d.dead_letter:
            out.letters.append(
                DeadLetter(
                    source_table=str(rec.table),
                    target_table=str(target),
                    op=rec.op.value,
                    pk=pk,
                    source_pk=pk,
                    position=rec.position.to_text(),
                    xid=rec.xid,
                    commit_time=rec.commit_time,
                    stage="conflict",
                    reason=f"conflict rule custom {role.conflict.custom} gave no resolution",
                    rule="custom",
                    row=as_dict(schema, rec.after if rec.after is not None else rec.before),
                )
            )


def _key_text(schema: TableSchema, key: tuple[object, ...]) -> tuple[str | None, ...]:
    """The key in canonical text: the same for a source value and the target's read."""
    cols = [schema.columns[i] for i in schema.key_indexes]
    return tuple(None if v is None else renderer(c.type)(v) for c, v in zip(cols, key, strict=True))


def _after_state(rec: ChangeRecord, current: Row | None) -> Row | None:
    """The target row once ``rec`` is applied (for the next change of the same key)."""
    if rec.op is Op.DELETE or rec.after is None:
        return None
    if current is None or UNCHANGED not in rec.after:
        return rec.after
    return tuple(c if v is UNCHANGED else v for v, c in zip(rec.after, current, strict=True))


def require_full_images(dsn: str, tables: Sequence[TableId]) -> None:
    """PostgreSQL sends old rows only with REPLICA IDENTITY FULL; without them no conflict
    can be seen, so a link refuses to start (naming the fix) rather than miss them."""
    import psycopg  # noqa: PLC0415

    with psycopg.connect(dsn, connect_timeout=10) as c:
        bad = [
            str(t)
            for t in tables
            if (
                row := c.execute(
                    "SELECT relreplident FROM pg_class WHERE oid = %s::regclass", (str(t),)
                ).fetchone()
            )
            is not None
            and row[0] != "f"
        ]
    if bad:
        fixes = "; ".join(f"ALTER TABLE {t} REPLICA IDENTITY FULL" for t in bad)
        raise PermanentError(
            f"two-way link tables {bad} do not log old rows, so conflicts cannot be detected; "
            f"fix: {fixes}"
        )
