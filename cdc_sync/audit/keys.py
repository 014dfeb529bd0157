"""Audit ``pk`` text: row key values as compact JSON, exact and unambiguous."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from json.encoder import encode_basestring as _encode_str  # C, non-ASCII kept
from uuid import UUID

from cdc_sync.records import ColumnType, Interval, Kind, TableSchema

KeyRenderer = Callable[[TableSchema, tuple[object, ...]], str]
"""Renders a row key as the audit ``pk`` text. Keys reach it after the table's rules, so a
masked or hashed key column is rendered masked or hashed (never the source value)."""


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
    if len(key) == 1 and type(key[0]) is int:  # the common case: one integer key column
        return f"{prefixes[0]}{key[0]}}}"
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


_INTS = frozenset(
    {Kind.TINYINT, Kind.SMALLINT, Kind.MEDIUMINT, Kind.INTEGER, Kind.BIGINT, Kind.YEAR}
)


def from_json(ctype: ColumnType, value: object) -> object:
    """The inverse of :func:`json_safe` for a key column of ``ctype``: a stored key (dead
    letters keep it to re-read the source row) back to its canonical value."""
    if value is None or ctype.array_dims:
        return value
    kind, text = ctype.kind, str(value)
    if kind in _INTS:
        return int(text)
    if kind is Kind.NUMERIC:
        return Decimal(text)
    if kind in (Kind.REAL, Kind.DOUBLE):
        return float(text)
    if kind is Kind.BOOLEAN:
        return value if isinstance(value, bool) else text.lower() in ("true", "t", "1")
    if kind is Kind.UUID:
        return UUID(text)
    if kind is Kind.DATE:
        return date.fromisoformat(text)
    if kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
        return datetime.fromisoformat(text)
    if kind is Kind.TIME:
        return time.fromisoformat(text)
    if kind is Kind.BYTES:
        return bytes.fromhex(text.removeprefix("\\x"))
    return value
