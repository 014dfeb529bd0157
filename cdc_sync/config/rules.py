"""Per-table and per-column rule models: rename, drop, map, cast, cleanse, mask, hash, filter."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

_IDENT = r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$"
_CUSTOM = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

Scalar = str | bool | int | float | date | datetime | None
"""A constant a user may write in YAML (``value``, ``default``, map keys and values)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Lower(_Model):
    kind: Literal["lower"]


class Upper(_Model):
    kind: Literal["upper"]


class Trim(_Model):
    kind: Literal["trim"]


class Redact(_Model):
    """The value becomes NULL in the target (the column is made nullable there)."""

    kind: Literal["redact"]


class Phone(_Model):
    """Parse with phonenumbers (``region`` for numbers without +country); invalid → dead letter."""

    kind: Literal["phone"]
    region: str = Field(pattern=r"^[A-Z]{2}$")
    format: Literal["e164", "international", "national", "digits"] = "e164"
    # e164 / digits cannot hold an extension ("x99"): the row is refused unless `drop`.
    extension: Literal["refuse", "drop"] = "refuse"


class Mask(_Model):
    """Keep the first / last characters, replace the rest with ``char`` (length kept)."""

    kind: Literal["mask"]
    keep_first: int = Field(default=0, ge=0, le=64)
    keep_last: int = Field(default=0, ge=0, le=64)
    char: str = Field(default="*", min_length=1, max_length=1)


class Hash(_Model):
    """HMAC-SHA256 of the value's canonical text, lowercase hex; the key comes from ${VAR} or
    ${file:/path} only (the loader refuses a literal)."""

    kind: Literal["hash"]
    key: SecretStr

    @field_validator("key")
    @classmethod
    def _long_enough(cls, v: SecretStr) -> SecretStr:
        if len(v.get_secret_value()) < 16:
            raise ValueError(
                "the hash key must be at least 16 characters (32 random bytes advised)"
            )
        return v


class Validate(_Model):
    kind: Literal["validate"]
    what: Literal["email"]


class Regex(_Model):
    """``re.sub(pattern, replace, value)``; Python regex syntax, ``\\1`` for groups."""

    kind: Literal["regex"]
    pattern: str
    replace: str = ""

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"bad regex {v!r}: {e}") from None
        return v


class Cast(_Model):
    """``to``: int | smallint | bigint | decimal(p,s) | double | text | varchar(n) | date |
    timestamp | boolean. ``format`` (strftime / strptime) for text ↔ date / timestamp."""

    kind: Literal["cast"]
    to: str = Field(
        pattern=r"^(int|integer|smallint|bigint|double|text|date|timestamp|boolean|"
        r"(decimal|numeric)\(\d{1,2},\s*\d{1,2}\)|varchar\(\d{1,5}\))$"
    )
    format: str | None = None


class ValueMap(_Model):
    """Source value → target value. Keys match by value, then by text (``1`` matches ``'1'``)."""

    kind: Literal["map"]
    values: dict[Scalar, Scalar]
    default: Scalar = None
    # default: unmapped values get ``default``; dead_letter: the row is dead-lettered;
    # keep: the value passes unchanged.
    on_unmapped: Literal["default", "dead_letter", "keep"] = "dead_letter"


Transform = Annotated[
    Lower | Upper | Trim | Redact | Phone | Mask | Hash | Validate | Regex | Cast | ValueMap,
    Field(discriminator="kind"),
]
_BARE = ("lower", "upper", "trim", "redact")
_KNOWN = ("lower", "upper", "trim", "redact", "phone", "mask", "hash", "validate", "regex", "cast")


def _tagged(item: Any) -> Any:
    """YAML's short forms → tagged dicts: ``lower`` / ``{phone: {...}}`` / ``{validate: email}``
    / ``{cast: "decimal(12,2)"}``; anything else is an unknown transform."""
    if isinstance(item, str):
        if item in _BARE:
            return {"kind": item}
        raise ValueError(f"unknown transform {item!r} (known: {', '.join(_KNOWN)})")
    if isinstance(item, dict) and len(item) == 1:
        ((name, spec),) = item.items()
        if name == "validate":
            return {"kind": "validate", "what": spec}
        if name == "cast" and isinstance(spec, str):
            return {"kind": "cast", "to": spec}
        if name in _KNOWN and name not in _BARE:
            if spec is None:
                spec = {}
            if not isinstance(spec, dict):
                raise ValueError(f"transform {name!r} takes a mapping of options")
            return {"kind": name, **spec}
        if name in _BARE:
            raise ValueError(f"transform {name!r} takes no options: write it as `{name}`")
        raise ValueError(f"unknown transform {name!r} (known: {', '.join(_KNOWN)})")
    raise ValueError(
        "a transform is a name (`lower`) or a one-key mapping (`{phone: {region: CN}}`)"
    )


class ColumnConfig(_Model):
    """Rules of one source column (or, with ``value``, of a target-only column).

    Order: ``value`` → ``default`` (NULL filled, without ``map``) → ``map`` → ``cast`` →
    ``transforms`` in list order; ``target`` renames. ``drop`` excludes every other key.
    """

    target: str | None = Field(default=None, pattern=_IDENT)
    drop: bool = False
    value: Scalar = None  # constant; meaningful only when set (see ``model_fields_set``)
    default: Scalar = None
    map: dict[Scalar, Scalar] | None = None
    on_unmapped: Literal["default", "dead_letter", "keep"] | None = None
    cast: str | Cast | None = None
    transforms: list[Transform] = Field(default_factory=list)

    @field_validator("transforms", mode="before")
    @classmethod
    def _short_forms(cls, v: Any) -> Any:
        return [_tagged(t) for t in v] if isinstance(v, list) else v

    @field_validator("cast", mode="before")
    @classmethod
    def _cast(cls, v: Any) -> Any:
        if isinstance(v, str):
            return {"kind": "cast", "to": v}
        if isinstance(v, dict):
            return {"kind": "cast", **v}
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ColumnConfig:
        given = self.model_fields_set
        if self.drop and given - {"drop"}:
            raise ValueError(f"drop: true excludes {sorted(given - {'drop'})}")
        if "on_unmapped" in given and self.map is None:
            raise ValueError("on_unmapped needs a map")
        if self.on_unmapped == "default" and "default" not in given:
            raise ValueError("on_unmapped: default needs a default")
        if "value" in given and ({"map", "default"} & given):
            raise ValueError("value (a constant) excludes map and default")
        return self

    @property
    def has_value(self) -> bool:
        return "value" in self.model_fields_set

    @property
    def has_default(self) -> bool:
        return "default" in self.model_fields_set

    def steps(self) -> list[Transform]:
        """The column's transforms in application order, short keys included (not ``value``
        / NULL ``default``, which the compiler handles before these)."""
        out: list[Transform] = []
        if self.map is not None:
            unmapped = self.on_unmapped or ("default" if self.has_default else "dead_letter")
            out.append(
                ValueMap(kind="map", values=self.map, default=self.default, on_unmapped=unmapped)
            )
        if isinstance(self.cast, Cast):
            out.append(self.cast)
        return out + list(self.transforms)


class TableRules(_Model):
    """The rule part of a table's config (mixed into ``TableConfig``)."""

    # Rows whose new image does not match are not replicated (an UPDATE that leaves the
    # filter deletes the target row); a small expression language, never eval.
    filter: str | None = None
    include: list[str] | None = None  # include-only: every other source column is dropped
    columns: dict[str, ColumnConfig] = Field(default_factory=dict)
    # "package.module:function", called with a cdc_sync.transforms.Change before the column
    # rules; returns the Change (values changed or not) or None to skip the row.
    custom: list[str] = Field(default_factory=list)

    @field_validator("columns", mode="before")
    @classmethod
    def _renames(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: ({"target": c} if isinstance(c, str) else c) for k, c in v.items()}
        return v

    @field_validator("custom", mode="before")
    @classmethod
    def _one_custom(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("custom")
    @classmethod
    def _custom_refs(cls, v: list[str]) -> list[str]:
        bad = [c for c in v if not _CUSTOM.match(c)]
        if bad:
            raise ValueError(f"expected 'package.module:function', got {bad}")
        return v

    @field_validator("include")
    @classmethod
    def _include(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("include: an empty list would replicate no column")
        return v

    @property
    def has_rules(self) -> bool:
        return bool(self.filter or self.include or self.columns or self.custom)
