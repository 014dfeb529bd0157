"""Tables a DDL statement of the binlog renames, drops or gives foreign keys (ALTER, CREATE)."""

from __future__ import annotations

import re

from cdc_sync.records import TableId

_NAME = r"(?:`(?:[^`]|``)+`|[\w$]+)"
_TABLE = rf"{_NAME}(?:\s*\.\s*{_NAME})?"
_PART = re.compile(r"`((?:[^`]|``)+)`|([\w$]+)")
_COMMENTS = re.compile(r"/\*.*?\*/|--[^\n]*|#[^\n]*", re.DOTALL)
_RENAME = re.compile(r"^\s*rename\s+tables?\s+(?P<pairs>.+)$", re.IGNORECASE | re.DOTALL)
_PAIR = re.compile(rf"(?P<old>{_TABLE})\s+to\s+{_TABLE}", re.IGNORECASE)
_ALTER_RENAME = re.compile(
    rf"^\s*alter\s+(?:online\s+|ignore\s+)*table\s+(?:if\s+exists\s+)?(?P<old>{_TABLE})\s.*?"
    rf"\brename\s+(?:to\s+|as\s+)?(?!column\b|index\b|key\b|constraint\b){_TABLE}",
    re.IGNORECASE | re.DOTALL,
)
_KEYED = re.compile(
    rf"^\s*(?:alter\s+(?:online\s+|ignore\s+)*table\s+(?:if\s+exists\s+)?|create\s+"
    rf"(?:or\s+replace\s+)?table\s+(?:if\s+not\s+exists\s+)?)(?P<name>{_TABLE})"
    r".*\breferences\b",
    re.IGNORECASE | re.DOTALL,
)
_DROP = re.compile(
    rf"^\s*drop\s+(?:temporary\s+)?tables?\s+(?:if\s+exists\s+)?(?P<names>{_TABLE}"
    rf"(?:\s*,\s*{_TABLE})*)",
    re.IGNORECASE,
)


def _table(text: str, default: str) -> TableId:
    parts = [(m.group(1) or "").replace("``", "`") or m.group(2) for m in _PART.finditer(text)]
    return TableId(parts[0], parts[1]) if len(parts) > 1 else TableId(default, parts[0])


def tables_gone(query: str, default_schema: str) -> list[tuple[TableId, str]]:
    """(table, "renamed" | "dropped") for each table the statement takes away under its
    name; [] for any other statement. Names without a database are in ``default_schema``."""
    q = _COMMENTS.sub(" ", query)
    if (m := _RENAME.match(q)) is not None:
        return [(_table(p.group("old"), default_schema), "renamed")
                for p in _PAIR.finditer(m.group("pairs"))]  # fmt: skip
    if (m := _ALTER_RENAME.match(q)) is not None:
        return [(_table(m.group("old"), default_schema), "renamed")]
    if (m := _DROP.match(q)) is not None:
        names = re.finditer(_TABLE, m.group("names"))
        return [(_table(n.group(0), default_schema), "dropped") for n in names]
    return []


def ddl_effects(query: str, default_schema: str) -> list[tuple[TableId, str]]:
    """:func:`tables_gone`, plus (table, "references") for an ALTER or CREATE TABLE that
    declares a foreign key (its referential actions are for the caller to read)."""
    gone = tables_gone(query, default_schema)
    if gone:
        return gone
    m = _KEYED.match(_COMMENTS.sub(" ", query))
    return [] if m is None else [(_table(m.group("name"), default_schema), "references")]
