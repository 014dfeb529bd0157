"""Conflict detection and resolution for two-way links (pure: no I/O)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cdc_sync.config.links import LinkTableRole
from cdc_sync.errors import PermanentError
from cdc_sync.records import UNCHANGED, ChangeRecord, Op, Row, TableSchema
from cdc_sync.verify.canonical import renderer

INSERT_INSERT, UPDATE_UPDATE = "insert_insert", "update_update"
UPDATE_DELETE, DELETE_UPDATE = "update_delete", "delete_update"


@dataclass(frozen=True)
class ConflictInput:
    """What a ``custom`` rule sees; values by target column name (the direction's target)."""

    table: str
    kind: str
    incoming_side: str
    current_side: str
    incoming: dict[str, object] | None  # the incoming new row (None: a delete)
    current: dict[str, object] | None  # the target's row now (None: missing)
    before: dict[str, object] | None  # the incoming change's old row
    incoming_commit_time: datetime
    current_commit_time: datetime | None


DELETE = "delete"
"""A custom rule returns this to delete the row; a mapping to keep it with those values (the
columns it leaves out keep the target's current value); None when it cannot decide (the
change becomes a dead letter, audited ``conflict_dead_letter``)."""

Custom = Callable[[ConflictInput], "Mapping[str, object] | str | None"]


@dataclass(frozen=True)
class Decision:
    """``record``: what the sink applies (None: nothing); ``kind`` None: no conflict."""

    record: ChangeRecord | None
    kind: str | None = None
    winner: str = "incoming"  # incoming | current | merged | none
    dead_letter: bool = False
    resolved: Row | None = None


def load_custom(ref: str) -> Custom:
    module, _, name = ref.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise PermanentError(f"conflict rule custom {ref!r} cannot be loaded: {e}") from None
    if not callable(fn):
        raise PermanentError(f"conflict rule custom {ref!r} is not callable")
    return fn  # type: ignore[no-any-return]


class Resolver:
    """Decides, per incoming change of one target table, whether it conflicts with the
    target's current row and what the row becomes. Both directions of a link decide the
    same way from the same two changes, so both sides converge."""

    def __init__(
        self,
        schema: TableSchema,
        role: LinkTableRole,
        *,
        incoming_side: str,
        current_side: str,
        first_side: str,
        custom: Custom | None = None,
    ) -> None:
        self.schema, self.role = schema, role
        self.first_side = first_side
        self.incoming_side, self.current_side = incoming_side, current_side
        self._render = [renderer(c.type) for c in schema.columns]
        self._keys = set(schema.key_indexes)
        self._custom = custom
        names = schema.names
        supp = role.suppression
        # A misspelt column would silently turn a rule off (an opt-out no longer protected).
        unknown = sorted({*role.owners, *([supp[0]] if supp else [])} - set(names))
        if unknown:
            raise PermanentError(
                f"link table {role.target_table}: conflict rules name {unknown}, which are not "
                f"columns of it (columns: {list(names)}); fix conflict.source_priority.columns "
                "/ conflict.suppression.column"
            )
        self._supp = (names.index(supp[0]), supp[1]) if supp else None
        prio = role.conflict.source_priority
        default = prio.default if prio else incoming_side
        self._incoming_owns = [
            i in self._keys or role.owners.get(n, default) == incoming_side
            for i, n in enumerate(names)
        ]

    def _text(self, i: int, v: object) -> str | None:
        return None if v is None else self._render[i](v)

    def same(self, a: Row, b: Row) -> bool:
        """Equal on every column both know (UNCHANGED: not sent, not compared)."""
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x is UNCHANGED or y is UNCHANGED:
                continue
            if self._text(i, x) != self._text(i, y):
                return False
        return True

    def decide(
        self, rec: ChangeRecord, current: Row | None, current_time: datetime | None = None
    ) -> Decision:
        """``current``: the target's row for the record's key (None: no such row)."""
        op, before, after = rec.op, rec.before, rec.after
        if op is Op.TRUNCATE:
            return Decision(rec)
        if op is Op.INSERT:
            assert after is not None
            if current is None or self.same(after, current):
                return Decision(rec)
            return self._both_exist(rec, INSERT_INSERT, current, current_time)
        if op is Op.UPDATE:
            assert after is not None
            if current is None:
                return self._update_missing(rec, current_time)
            if self.same(after, current) or (
                before is not None and not rec.before_is_key_only and self.same(before, current)
            ):
                return Decision(rec)
            if before is None or rec.before_is_key_only:
                return Decision(rec)  # no old image to compare: nothing can be detected
            return self._both_exist(rec, UPDATE_UPDATE, current, current_time)
        # DELETE
        if current is None or before is None or rec.before_is_key_only:
            return Decision(rec)
        if self.same(before, current):
            return Decision(rec)
        return self._delete_changed(rec, current, current_time)

    # -- the rules ---------------------------------------------------------------------------

    def _suppressed(self, row: Row | None) -> bool:
        if self._supp is None or row is None:
            return False
        i, wins = self._supp
        v = row[i]
        return v is not UNCHANGED and v is not None and v == wins

    def _custom_says(
        self, rec: ChangeRecord, kind: str, current: Row | None, t: datetime | None
    ) -> Mapping[str, object] | str | None:
        assert self._custom is not None
        names = self.schema.names

        def as_dict(row: Row | None) -> dict[str, object] | None:
            if row is None:
                return None
            return {n: v for n, v in zip(names, row, strict=True) if v is not UNCHANGED}

        return self._custom(
            ConflictInput(
                table=str(self.role.target_table),
                kind=kind,
                incoming_side=self.incoming_side,
                current_side=self.current_side,
                incoming=as_dict(rec.after),
                current=as_dict(current),
                before=as_dict(rec.before),
                incoming_commit_time=rec.commit_time,
                current_commit_time=t,
            )
        )

    def _incoming_wins_row(self, rec: ChangeRecord, current_time: datetime | None) -> bool:
        """Row-level winner for last_write_wins: the later source commit; equal times go
        to the link's first side (never the daemon's clock). A row whose time is unknown
        was there before the link saw any change of it: any change is later."""
        if current_time is None:
            return True
        if rec.commit_time != current_time:
            return rec.commit_time > current_time
        return self.incoming_side == self.first_side

    def _both_exist(
        self, rec: ChangeRecord, kind: str, current: Row, current_time: datetime | None
    ) -> Decision:
        after = rec.after
        assert after is not None
        rule = self.role.conflict.rule
        if rule == "custom":
            said = self._custom_says(rec, kind, current, current_time)
            if said is None:
                return Decision(None, kind, "none", dead_letter=True)
            if said == DELETE:
                return Decision(self._delete_of(rec, current), kind, "incoming")
            assert not isinstance(said, str)
            merged = tuple(
                said[n] if n in said else (current[i] if i in self._keys else UNCHANGED)
                for i, n in enumerate(self.schema.names)
            )
        elif rule == "last_write_wins":
            # The later commit wins the whole row (row times are all there is), except that
            # an update that changed nothing wins nothing: the other side applied our row
            # over it without conflict, as its old row was still the same.
            noop = rec.before is not None and self.same(rec.before, after)
            later = not noop and self._incoming_wins_row(rec, current_time)
            merged = after if later else _keep(current)
        else:
            merged = self._field_merge(rec, current, self._incoming_owns)
        if self._supp is not None:
            i, wins = self._supp
            if self._suppressed(current) and merged[i] is not UNCHANGED:
                merged = (*merged[:i], UNCHANGED, *merged[i + 1 :])
            elif self._suppressed(after) and merged[i] is UNCHANGED:
                merged = (*merged[:i], wins if after[i] is UNCHANGED else after[i],
                          *merged[i + 1 :])  # fmt: skip
        # Keys always carry their values (the sink finds the row by them).
        merged = tuple(after[i] if i in self._keys else v for i, v in enumerate(merged))
        resolved = tuple(current[i] if v is UNCHANGED else v for i, v in enumerate(merged))
        if self.same(resolved, current):
            return Decision(None, kind, "current", resolved=current)
        winner = "incoming" if self.same(resolved, after) else "merged"
        out = rec._replace(op=Op.UPDATE, before=current, after=merged, before_is_key_only=False)
        return Decision(out, kind, winner, resolved=resolved)

    def _field_merge(self, rec: ChangeRecord, current: Row, incoming_wins: list[bool]) -> Row:
        """A three-way merge against the change's old row. A column only one side changed
        takes that side's value; one both changed goes by the rule (``incoming_wins``: its
        owner, or the later commit). Both directions see the same three rows (old, theirs,
        ours) with the roles swapped, so they decide alike. Taking a winner's whole row
        instead would let a no-op update (values unchanged) undo an edit the other side had
        already applied there without conflict."""
        after = rec.after
        assert after is not None
        before = None if rec.before_is_key_only else rec.before
        out: list[object] = []
        for i, own in enumerate(incoming_wins):
            new = after[i]
            old = UNCHANGED if before is None else before[i]
            if new is UNCHANGED:
                out.append(UNCHANGED)
            elif old is UNCHANGED:  # no old value (an insert): both changed it
                out.append(new if own else UNCHANGED)
            elif self._eq(i, new, old):
                out.append(UNCHANGED)  # not changed by the incoming side
            elif own or self._eq(i, current[i], old):
                out.append(new)  # the winner's, or changed by the incoming side only
            else:
                out.append(UNCHANGED)
        return tuple(out)

    def _eq(self, i: int, a: object, b: object) -> bool:
        return a is UNCHANGED or b is UNCHANGED or self._text(i, a) == self._text(i, b)

    def _update_missing(self, rec: ChangeRecord, current_time: datetime | None) -> Decision:
        """The incoming update's row was deleted here: the update re-creates it or not."""
        rule = self.role.conflict.rule
        if rule == "custom":
            said = self._custom_says(rec, UPDATE_DELETE, None, current_time)
            if said is None:
                return Decision(None, UPDATE_DELETE, "none", dead_letter=True)
            revive = said != DELETE
        elif rule == "last_write_wins":
            revive = False  # a deleted row keeps no time: the delete wins, on both sides
        else:
            revive = self._row_owner_is_incoming()
        revive = revive or self._suppressed(rec.after)  # an opt-out is never lost
        if not revive or rec.after is None or UNCHANGED in rec.after:
            return Decision(None, UPDATE_DELETE, "current")
        out = rec._replace(op=Op.INSERT, before=None)
        return Decision(out, UPDATE_DELETE, "incoming", resolved=rec.after)

    def _delete_changed(
        self, rec: ChangeRecord, current: Row, current_time: datetime | None
    ) -> Decision:
        """The incoming delete's row was changed here since: delete it or keep it."""
        rule = self.role.conflict.rule
        if rule == "custom":
            said = self._custom_says(rec, DELETE_UPDATE, current, current_time)
            if said is None:
                return Decision(None, DELETE_UPDATE, "none", dead_letter=True)
            delete = said == DELETE
        elif rule == "last_write_wins":
            delete = True  # as the other side decides for the update (see _update_missing)
        else:
            delete = self._row_owner_is_incoming()
        if self._suppressed(current):
            delete = False
        if not delete:
            return Decision(None, DELETE_UPDATE, "current", resolved=current)
        return Decision(rec, DELETE_UPDATE, "incoming")

    def _row_owner_is_incoming(self) -> bool:
        prio = self.role.conflict.source_priority
        return prio is not None and prio.default == self.incoming_side

    def _delete_of(self, rec: ChangeRecord, current: Row) -> ChangeRecord:
        return rec._replace(op=Op.DELETE, before=current, after=None, before_is_key_only=False)


def _keep(current: Row) -> Row:
    return tuple(UNCHANGED for _ in current)


def as_dict(schema: TableSchema, row: Row | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {n: v for n, v in zip(schema.names, row, strict=True) if v is not UNCHANGED}
