"""Two-way links: config expansion, refusals, and the conflict rules decided the same on both
sides (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdc_sync.config.links import link_roles
from cdc_sync.config.loader import ConfigError, load_config
from cdc_sync.conflicts.resolve import DELETE, ConflictInput, Resolver
from cdc_sync.records import UNCHANGED, ChangeRecord, Op, PgLsn, TableId
from cdc_sync.records.schema import Column, ColumnType, Kind, TableSchema

BASE = """
sources:
  crm: {type: postgres, dsn: "postgresql://u@h/crm"}
  dialer: {type: mysql, dsn: "mysql://u@h:3306/dialer", server_id: 77}
links:
  cd:
    between: [crm, dialer]
    tables:
      public.customers <-> dialer.contacts:
"""


def _load(tmp_path: Path, table: str, sources: str | None = None) -> object:
    text = BASE + table
    if sources:
        text = text.replace('dialer: {type: mysql, dsn: "mysql://u@h:3306/dialer", '
                            "server_id: 77}", sources)  # fmt: skip
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return load_config(p)


def test_a_link_expands_to_one_pipeline_per_direction(tmp_path: Path) -> None:
    c = _load(tmp_path, "        columns: {name: contact_name, status: {map: {1: a, 2: b}}}\n")
    assert sorted(c.pipelines) == ["cd__crm_to_dialer", "cd__dialer_to_crm"]  # type: ignore[attr-defined]
    there = c.pipelines["cd__crm_to_dialer"]  # type: ignore[attr-defined]
    back = c.pipelines["cd__dialer_to_crm"]  # type: ignore[attr-defined]
    assert (there.source, there.target, back.source, back.target) == (
        "crm", "dialer", "dialer", "crm")  # fmt: skip
    assert there.tables["public.customers"].target == "dialer.contacts"
    assert back.tables["dialer.contacts"].target == "public.customers"
    cols = back.tables["dialer.contacts"].columns
    assert cols["contact_name"].target == "name"
    assert cols["status"].map == {"a": 1, "b": 2}
    assert there.snapshot == back.snapshot == "never"
    assert sorted(c.targets) == ["crm", "dialer"]  # type: ignore[attr-defined]


def test_one_way_rules_and_bad_references_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        _load(
            tmp_path,
            "        columns: {phone: {transforms: [{mask: {keep_last: 4}}]}, "
            "s: {map: {1: a, 2: a}}}\n",
        )
    text = "\n".join(e.value.problems)
    assert "phone: transforms cannot be reversed" in text
    assert "s: map is not one-to-one" in text
    with pytest.raises(ConfigError) as e:
        _load(
            tmp_path, "        conflict: {rule: source_priority, source_priority: {default: x}}\n"
        )
    assert any("'x' is not one of" in p for p in e.value.problems)


def test_last_write_wins_between_two_mysql_sides_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        _load(
            tmp_path,
            "        columns: {}\n",
            sources='crm: {type: mysql, dsn: "mysql://u@h:3306/crm", server_id: 1}\n'
            '  dialer: {type: mysql, dsn: "mysql://u@h:3306/dialer", server_id: 77}',
        )
    assert any("last_write_wins needs a PostgreSQL side" in p for p in e.value.problems)


# -- resolution: both directions reach the same row -----------------------------------------

SCHEMA = TableSchema(
    TableId("public", "t"),
    (
        Column("id", ColumnType(Kind.INTEGER)),
        Column("name", ColumnType(Kind.TEXT)),
        Column("phone", ColumnType(Kind.TEXT)),
        Column("dnc", ColumnType(Kind.SMALLINT)),
    ),
    ("id",),
)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _resolvers(conflict: str) -> tuple[Resolver, Resolver]:
    """(applying crm's changes on the dialer side, applying the dialer's on the crm side);
    both sides use the same column names here, so one schema serves both."""
    import yaml  # noqa: PLC0415

    from cdc_sync.config.links import LinkConfig  # noqa: PLC0415

    link = LinkConfig.model_validate(
        {"between": ["crm", "dialer"],
         "tables": {"public.t <-> public.t": {"conflict": yaml.safe_load(conflict)}}}
    )  # fmt: skip
    roles = link_roles({"l": link})
    there = roles["l__crm_to_dialer"].tables["public.t"]
    back = roles["l__dialer_to_crm"].tables["public.t"]
    kw = {"first_side": "crm"}
    return (
        Resolver(SCHEMA, there, incoming_side="crm", current_side="dialer", **kw),
        Resolver(SCHEMA, back, incoming_side="dialer", current_side="crm", **kw),
    )


def _upd(before: tuple[object, ...], after: tuple[object, ...], t: datetime) -> ChangeRecord:
    return ChangeRecord(Op.UPDATE, SCHEMA.table, SCHEMA, before, after, PgLsn(1), "1", t)


def _result(d: object, current: tuple[object, ...]) -> tuple[object, ...]:
    rec = getattr(d, "record", None)
    if rec is None:
        return current
    return tuple(c if v is UNCHANGED else v for v, c in zip(rec.after, current, strict=True))


V0 = (1, "ann", "+1", 0)


@pytest.mark.parametrize(
    ("conflict", "a", "b", "ta", "tb", "want"),
    [
        # the CRM owns the row
        ("{rule: source_priority, source_priority: {default: crm}}",
         (1, "crm", "+2", 0), (1, "dia", "+3", 0), T0, T0, (1, "crm", "+2", 0)),
        # last write wins by commit time, whichever arrives first
        ("{rule: last_write_wins}", (1, "crm", "+2", 0), (1, "dia", "+3", 0),
         T0, T0 + timedelta(seconds=1), (1, "dia", "+3", 0)),
        ("{rule: last_write_wins}", (1, "crm", "+2", 0), (1, "dia", "+3", 0),
         T0 + timedelta(seconds=1), T0, (1, "crm", "+2", 0)),
        # equal times: the link's first side
        ("{rule: last_write_wins}", (1, "crm", "+2", 0), (1, "dia", "+3", 0), T0, T0,
         (1, "crm", "+2", 0)),
        # an opt-out survives losing
        ("{rule: last_write_wins, suppression: {column: dnc, wins_when: 1}}",
         (1, "crm", "+2", 1), (1, "dia", "+3", 0), T0, T0 + timedelta(seconds=1),
         (1, "dia", "+3", 1)),
    ],
)  # fmt: skip
def test_both_sides_resolve_a_conflict_to_the_same_row(
    conflict: str,
    a: tuple[object, ...],
    b: tuple[object, ...],
    ta: datetime,
    tb: datetime,
    want: tuple[object, ...],
) -> None:
    on_dialer, on_crm = _resolvers(conflict)
    # The dialer side holds b (time tb) when a arrives; the CRM holds a when b arrives.
    d1 = on_dialer.decide(_upd(V0, a, ta), b, tb)
    d2 = on_crm.decide(_upd(V0, b, tb), a, ta)
    assert d1.kind == d2.kind == "update_update"
    assert _result(d1, b) == _result(d2, a) == want


def test_update_against_a_deleted_row_and_delete_against_a_changed_one_agree() -> None:
    on_dialer, on_crm = _resolvers("{rule: last_write_wins}")
    changed = (1, "crm", "+2", 0)
    # crm updated the row, the dialer deleted it: the delete wins on both sides
    d1 = on_dialer.decide(_upd(V0, changed, T0 + timedelta(hours=1)), None, None)
    delete = ChangeRecord(Op.DELETE, SCHEMA.table, SCHEMA, V0, None, PgLsn(1), "1", T0)
    d2 = on_crm.decide(delete, changed, T0 + timedelta(hours=1))
    assert (d1.kind, d1.record) == ("update_delete", None)
    assert d2.kind == "delete_update" and d2.record is not None and d2.record.op is Op.DELETE


def test_custom_rule_decides_and_none_is_a_dead_letter() -> None:
    import sys  # noqa: PLC0415
    import types  # noqa: PLC0415

    seen: list[ConflictInput] = []

    def resolve(c: ConflictInput) -> object:
        seen.append(c)
        assert c.current is not None and c.incoming is not None
        if c.current["name"] == "give-up":
            return None
        if c.current["name"] == "drop":
            return DELETE
        return {"name": f"{c.incoming['name']}+{c.current['name']}"}

    mod = types.ModuleType("cdc_test_custom_conflict")
    mod.resolve = resolve  # type: ignore[attr-defined]
    sys.modules[mod.__name__] = mod
    on_dialer, _ = _resolvers("{rule: custom, custom: 'cdc_test_custom_conflict:resolve'}")
    from cdc_sync.conflicts.resolve import load_custom  # noqa: PLC0415

    on_dialer._custom = load_custom("cdc_test_custom_conflict:resolve")
    d = on_dialer.decide(_upd(V0, (1, "x", "+1", 0), T0), (1, "y", "+1", 0), None)
    assert d.winner == "merged" and _result(d, (1, "y", "+1", 0)) == (1, "x+y", "+1", 0)
    d = on_dialer.decide(_upd(V0, (1, "x", "+1", 0), T0), (1, "give-up", "+1", 0), None)
    assert d.dead_letter and d.record is None
    d = on_dialer.decide(_upd(V0, (1, "x", "+1", 0), T0), (1, "drop", "+1", 0), None)
    assert d.record is not None and d.record.op is Op.DELETE
    assert seen[0].kind == "update_update" and seen[0].incoming_side == "crm"


def test_no_conflict_when_the_target_still_holds_the_old_row_or_already_the_new() -> None:
    on_dialer, _ = _resolvers("{rule: last_write_wins}")
    new = (1, "crm", "+2", 0)
    assert on_dialer.decide(_upd(V0, new, T0), V0, None).kind is None
    assert on_dialer.decide(_upd(V0, new, T0), new, None).kind is None


PER_COLUMN = "{rule: source_priority, source_priority: {default: crm, columns: {phone: dialer}}}"


@pytest.mark.parametrize(
    ("a", "b", "want"),
    [
        # both changed both columns: each column goes to its owner
        ((1, "crm", "+2", 0), (1, "dia", "+3", 0), (1, "crm", "+3", 0)),
        # each changed only the column the other owns: both edits are kept
        ((1, "ann", "+2", 0), (1, "dia", "+1", 0), (1, "dia", "+2", 0)),
        # an opt-out from either side survives
        ((1, "crm", "+1", 0), (1, "dia", "+1", 1), (1, "crm", "+1", 1)),
    ],
)
def test_per_column_owners_merge_the_row_the_same_on_both_sides(
    a: tuple[object, ...], b: tuple[object, ...], want: tuple[object, ...]
) -> None:
    on_dialer, on_crm = _resolvers(PER_COLUMN[:-1] + ", suppression: {column: dnc, wins_when: 1}}")
    d1 = on_dialer.decide(_upd(V0, a, T0), b, T0)
    d2 = on_crm.decide(_upd(V0, b, T0), a, T0)
    assert d1.kind == d2.kind == "update_update"
    assert _result(d1, b) == _result(d2, a) == want


SUPPRESS = ", suppression: {column: dnc, wins_when: 1}}"


@pytest.mark.parametrize(
    "conflict",
    [
        PER_COLUMN[:-1] + SUPPRESS,
        "{rule: source_priority, source_priority: {default: crm}" + SUPPRESS,
        "{rule: last_write_wins}",
    ],
)
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_both_sides_converge_whatever_the_interleaving(conflict: str, data: st.DataObject) -> None:
    """Two replicas of one row edit it at random (no-op updates too) while changes travel
    each way in order, delivered at random moments; what a side applied is not sent back
    (loop prevention). Once everything is delivered both hold the same row. Commit times
    carry a per-side clock skew. Written values are never reused: a value changed and
    changed back (A-B-A) while the other side edits it cannot be told from no change by
    old-value detection (docs/two-way.md, limits)."""
    on_dialer, on_crm = _resolvers(conflict)
    # last_write_wins compares row times: it is only sure to converge when no update leaves
    # a row as it was and no two rows become equal by chance (docs/two-way.md, limits)
    lww = int("last_write_wins" in conflict)
    rows: dict[str, tuple[object, ...]] = {"crm": V0, "dialer": V0}
    # a row's version: the commit time a last_write_wins target reads for it (None: older
    # than any change)
    versions: dict[str, datetime | None] = {"crm": None, "dialer": None}
    queues: dict[str, list[ChangeRecord]] = {"crm": [], "dialer": []}  # what travels *to* it
    other = {"crm": "dialer", "dialer": "crm"}
    skew = {s: timedelta(seconds=data.draw(st.integers(-5, 5))) for s in rows}
    written = iter(range(1, 10**6))

    def deliver(side: str) -> None:
        rec = queues[side].pop(0)
        resolver = on_dialer if side == "dialer" else on_crm
        d = resolver.decide(rec, rows[side], versions[side])
        if d.record is not None:
            rows[side] = _result(d, rows[side])
            current = versions[side]
            versions[side] = rec.commit_time if d.kind is None or current is None else max(
                rec.commit_time, current)  # fmt: skip

    for _ in range(data.draw(st.integers(1, 12))):
        side = data.draw(st.sampled_from(["crm", "dialer"]))
        if data.draw(st.booleans()) and queues[side]:
            deliver(side)
            continue
        cols = data.draw(st.sets(st.sampled_from([1, 2] if lww else [1, 2, 3]), min_size=lww))
        n = next(written)
        new = list(rows[side])
        for c in cols:  # the opt-out flag is set, never cleared; other values are new
            new[c] = 1 if c == 3 else f"{side}{n}"
        t = T0 + timedelta(seconds=n) + skew[side]
        queues[other[side]].append(_upd(rows[side], tuple(new), t))
        rows[side], versions[side] = tuple(new), t
    while queues["crm"] or queues["dialer"]:
        deliver(data.draw(st.sampled_from([s for s in queues if queues[s]])))
    assert rows["crm"] == rows["dialer"]


def test_an_update_that_changed_nothing_wins_nothing() -> None:
    """The CRM saved its row unchanged, later than the dialer's edit, which the CRM already
    applied: the dialer must not lose that edit to the CRM's old values."""
    on_dialer, _ = _resolvers("{rule: last_write_wins}")
    edited = (1, "dia", "+1", 0)
    d = on_dialer.decide(_upd(V0, V0, T0 + timedelta(seconds=5)), edited, T0)
    assert d.kind == "update_update" and d.record is None and d.winner == "current"


def test_a_rule_naming_a_column_the_table_lacks_stops_with_its_name() -> None:
    from cdc_sync.errors import PermanentError  # noqa: PLC0415

    with pytest.raises(PermanentError, match=r"\['do_not_cal'\]"):
        _resolvers("{rule: last_write_wins, suppression: {column: do_not_cal, wins_when: 1}}")
