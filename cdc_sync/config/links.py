"""Two-way links: config models and their expansion into one pipeline per direction."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cdc_sync.config.rules import ColumnConfig, Scalar

_CUSTOM = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_PAIR = re.compile(r"^\s*(\S+)\s*<->\s*(\S+)\s*$")
# A column rule of a link must read the same both ways: a rename, a drop, or a value map
# that is one-to-one (inverted for the way back). Masks, hashes, casts and cleansing lose
# information, so the way back could not restore the value: refused, naming the key.
_TWO_WAY_KEYS = {"target", "drop", "map"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Priority(_Model):
    """Which side owns the row (``default``) and, per column, which side owns that column."""

    default: str
    columns: dict[str, str] = Field(default_factory=dict)


class Suppression(_Model):
    """An opt-out (do-not-call) that no conflict may undo: when either side holds
    ``wins_when`` in ``column``, the resolved row holds it too."""

    column: str
    wins_when: Scalar = True


class ConflictConfig(_Model):
    rule: Literal["last_write_wins", "source_priority", "custom"] = "last_write_wins"
    source_priority: Priority | None = None
    custom: str | None = None  # "package.module:function"
    suppression: Suppression | None = None

    @model_validator(mode="after")
    def _complete(self) -> ConflictConfig:
        if self.rule == "source_priority" and self.source_priority is None:
            raise ValueError("rule source_priority needs source_priority: {default: <side>}")
        if self.rule == "custom" and not self.custom:
            raise ValueError("rule custom needs custom: 'package.module:function'")
        if self.custom is not None and not _CUSTOM.match(self.custom):
            raise ValueError(f"custom: expected 'package.module:function', got {self.custom!r}")
        return self


class LinkTable(_Model):
    columns: dict[str, ColumnConfig] = Field(default_factory=dict)
    conflict: ConflictConfig = ConflictConfig()

    @field_validator("columns", mode="before")
    @classmethod
    def _renames(cls, v: object) -> object:
        if isinstance(v, dict):
            return {k: ({"target": c} if isinstance(c, str) else c) for k, c in v.items()}
        return v

    @field_validator("columns")
    @classmethod
    def _two_way(cls, v: dict[str, ColumnConfig]) -> dict[str, ColumnConfig]:
        problems = []
        for name, col in v.items():
            one_way = sorted(col.model_fields_set - _TWO_WAY_KEYS)
            if col.transforms:
                one_way = sorted({*one_way, "transforms"})
            if one_way:
                problems.append(
                    f"{name}: {', '.join(one_way)} cannot be reversed for the way back; a "
                    "link allows renames, drop and one-to-one map only"
                )
            if col.map is not None and len(set(col.map.values())) != len(col.map):
                problems.append(f"{name}: map is not one-to-one, so it cannot be reversed")
        if problems:
            raise ValueError("\n".join(problems))
        return v


class LinkConfig(_Model):
    between: list[str] = Field(min_length=2, max_length=2)
    tables: dict[str, LinkTable]
    # The side whose existing rows seed the other the first time (snapshot: initial for that
    # direction only); None: both directions stream only (snapshot: never).
    seed: str | None = None
    audit: Literal["row", "transaction", "off"] = "row"
    on_error: Literal["dead_letter", "stop"] = "dead_letter"

    @field_validator("between")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if v[0] == v[1]:
            raise ValueError("a link joins two different sources")
        return v

    @field_validator("tables")
    @classmethod
    def _pairs(cls, v: dict[str, LinkTable]) -> dict[str, LinkTable]:
        bad = [k for k in v if not _PAIR.match(k)]
        if bad:
            raise ValueError(f"expected 'schema.table <-> schema.table' keys, got {bad}")
        return v

    @model_validator(mode="after")
    def _sides(self) -> LinkConfig:
        sides = set(self.between)
        problems = []
        if self.seed is not None and self.seed not in sides:
            problems.append(f"seed: {self.seed!r} is not one of {self.between}")
        for key, t in self.tables.items():
            c = t.conflict
            if c.source_priority is not None:
                prio = c.source_priority
                owners = {prio.default, *prio.columns.values()}
                problems += [
                    f"tables.{key}.conflict.source_priority: {o!r} is not one of {self.between}"
                    for o in sorted(owners - sides)
                ]
        if problems:
            raise ValueError("\n".join(problems))
        return self


def split_pair(key: str) -> tuple[str, str]:
    m = _PAIR.match(key)
    if m is None:
        raise ValueError(f"not a link table pair: {key!r}")
    return m.group(1), m.group(2)


def direction_name(link: str, from_side: str, to_side: str) -> str:
    """The pipeline of one direction; lower case because it names a PostgreSQL slot."""
    return f"{link}__{from_side}_to_{to_side}".lower()


def origin_name(pipeline: str) -> str:
    """The origin a pipeline tags its target transactions with (loop prevention)."""
    return f"cdc_sync_{pipeline}"


@dataclass(frozen=True)
class LinkTableRole:
    """One link table seen from one direction, in that direction's target column names."""

    source_table: str
    target_table: str
    conflict: ConflictConfig
    # target column name → the side that owns it (source_priority); the row's owner else
    owners: dict[str, str]
    suppression: tuple[str, Scalar] | None  # (target column, value that wins)
    # target column → first-side column name: one name per synced column across directions
    canonical: dict[str, str]
    # target column → source column, and target value → source value where a map applies:
    # to write a winning value back to the source side (a correction)
    back_names: dict[str, str]
    back_maps: dict[str, dict[Scalar, Scalar]]


@dataclass(frozen=True)
class LinkRole:
    """What a pipeline that belongs to a link needs to know about it."""

    link: str
    pipeline: str
    from_side: str
    to_side: str
    reverse: str  # the pipeline of the other direction
    first: str  # between[0]: tie-breaks and canonical column names
    tables: dict[str, LinkTableRole]  # by source table


def _forward(cols: dict[str, ColumnConfig]) -> dict[str, str]:
    """First-side column → second-side column for every renamed column."""
    return {k: c.target for k, c in cols.items() if c.target and not c.drop}


def direction_columns(link: LinkTable, forward: bool) -> dict[str, ColumnConfig]:
    """The column rules of one direction: as written for first → second, inverted back."""
    if forward:
        return dict(link.columns)
    out: dict[str, ColumnConfig] = {}
    for name, col in link.columns.items():
        back = col.target or name
        if col.drop:
            out[back] = ColumnConfig(drop=True)
            continue
        spec: dict[str, object] = {}
        if col.target and col.target != name:
            spec["target"] = name
        if col.map is not None:
            spec["map"] = {v: k for k, v in col.map.items()}
        if spec:
            out[back] = ColumnConfig.model_validate(spec)
    return out


def table_role(link: LinkConfig, key: str, table: LinkTable, forward: bool) -> LinkTableRole:
    """``forward``: first side → second side (the target speaks second-side names)."""
    first_t, second_t = split_pair(key)
    fwd = _forward(table.columns)
    back = {v: k for k, v in fwd.items()}

    def target_name(col: str) -> str:
        first_name = back.get(col, col)  # either side's spelling → first-side name
        return fwd.get(first_name, first_name) if forward else first_name

    c = table.conflict
    owners: dict[str, str] = {}
    if c.source_priority is not None:
        owners = {target_name(col): side for col, side in c.source_priority.columns.items()}
    supp = None
    if c.suppression is not None:
        supp = (target_name(c.suppression.column), c.suppression.wins_when)
    cols = direction_columns(table, forward)
    back_names = {(c.target or n): n for n, c in cols.items() if not c.drop}
    back_maps = {
        (c.target or n): {v: k for k, v in c.map.items()}
        for n, c in cols.items()
        if c.map is not None
    }
    return LinkTableRole(
        back_names=back_names,
        back_maps=back_maps,
        source_table=first_t if forward else second_t,
        target_table=second_t if forward else first_t,
        conflict=c,
        owners=owners,
        suppression=supp,
        canonical=dict(back) if forward else {},
    )


def link_roles(links: dict[str, LinkConfig]) -> dict[str, LinkRole]:
    """Every link pipeline's role, by pipeline name."""
    out: dict[str, LinkRole] = {}
    for name, link in links.items():
        first, second = link.between
        for forward in (True, False):
            a, b = (first, second) if forward else (second, first)
            pipeline = direction_name(name, a, b)
            tables = {}
            for key, t in link.tables.items():
                role = table_role(link, key, t, forward)
                tables[role.source_table] = role
            out[pipeline] = LinkRole(
                link=name,
                pipeline=pipeline,
                from_side=a,
                to_side=b,
                reverse=direction_name(name, b, a),
                first=first,
                tables=tables,
            )
    return out


def expand(data: dict[str, object]) -> dict[str, object]:
    """Raw config with ``links`` → the same with one pipeline per direction added (and a
    target per side that has none, from the side's source DSN). Raises ValueError with one
    line per problem, key path first."""
    raw_links = data.get("links")
    if not isinstance(raw_links, dict) or not raw_links:
        return data
    from pydantic import ValidationError  # noqa: PLC0415

    sources = data.get("sources") if isinstance(data.get("sources"), dict) else {}
    assert isinstance(sources, dict)
    targets = dict(data.get("targets") or {})  # type: ignore[call-overload]
    pipelines = dict(data.get("pipelines") or {})  # type: ignore[call-overload]
    problems: list[str] = []
    for name, raw in raw_links.items():
        try:
            link = LinkConfig.model_validate(raw)
        except ValidationError as e:
            for err in e.errors(include_url=False, include_input=False):
                loc = ".".join(str(p) for p in err["loc"])
                msg = err["msg"].removeprefix("Value error, ")
                problems += [f"links.{name}.{loc}: {line}" for line in msg.split("\n")]
            continue
        for side in link.between:
            src = sources.get(side)
            if not isinstance(src, dict):
                problems.append(f"links.{name}.between: no source named {side!r}")
                continue
            if side not in targets:
                # The side is written too: as a target, from the source's own DSN.
                targets[side] = {"type": src.get("type"), "dsn": src.get("dsn")}
        kinds = {
            s.get("type") for s in (sources.get(x) for x in link.between) if isinstance(s, dict)
        }
        if kinds == {"mysql"}:
            problems += [
                f"links.{name}.tables.{key}.conflict.rule: last_write_wins needs a PostgreSQL "
                "side (MySQL / MariaDB keep no commit time per row); use source_priority or "
                "custom between two MySQL sides"
                for key, t in link.tables.items()
                if t.conflict.rule == "last_write_wins"
            ]
        first, second = link.between
        for forward in (True, False):
            a, b = (first, second) if forward else (second, first)
            pipeline = direction_name(name, a, b)
            if not re.match(r"^[a-z_][a-z0-9_]{0,40}$", pipeline):
                problems.append(
                    f"links.{name}: direction pipeline {pipeline!r} is longer than 41 "
                    "characters or not lower-case letters, digits and _; shorten the link "
                    "or source names"
                )
            if pipeline in pipelines:
                problems.append(f"links.{name}: pipelines.{pipeline} already exists")
            tables = {}
            for key, t in link.tables.items():
                first_t, second_t = split_pair(key)
                src_t, dst_t = (first_t, second_t) if forward else (second_t, first_t)
                cols = direction_columns(t, forward)
                tables[src_t] = {
                    "target": dst_t,
                    "columns": {c: spec.model_dump(exclude_unset=True) for c, spec in cols.items()},
                }
            pipelines[pipeline] = {
                "source": a,
                "target": b,
                "tables": tables,
                "audit": link.audit,
                "on_error": link.on_error,
                "snapshot": "initial" if link.seed == a else "never",
            }
    if problems:
        raise ValueError("\n".join(problems))
    return {**data, "targets": targets, "pipelines": pipelines}
