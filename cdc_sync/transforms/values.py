"""Value helpers shared by the rules: kind families, canonical text, constants, JSON-safe form."""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, time
from decimal import Context, Decimal, InvalidOperation
from uuid import UUID

from cdc_sync.records import ColumnType, Interval, JsonText, Kind

INT_KINDS = frozenset(
    {Kind.TINYINT, Kind.SMALLINT, Kind.MEDIUMINT, Kind.INTEGER, Kind.BIGINT, Kind.YEAR}
)
FLOAT_KINDS = frozenset({Kind.REAL, Kind.DOUBLE})
NUMBER_KINDS = INT_KINDS | FLOAT_KINDS | {Kind.NUMERIC}
# Kinds whose canonical value is a plain str that text rules may rewrite. JSON / BIT are str
# too but rewriting them yields invalid JSON / bit strings, so they are left out.
TEXT_KINDS = frozenset({Kind.TEXT, Kind.VARCHAR, Kind.CHAR, Kind.ENUM, Kind.SET})

TEXT = ColumnType(Kind.TEXT)

INT_RANGES: dict[Kind, tuple[int, int]] = {
    Kind.SMALLINT: (-(2**15), 2**15 - 1),
    Kind.INTEGER: (-(2**31), 2**31 - 1),
    Kind.BIGINT: (-(2**63), 2**63 - 1),
}

_INT_TEXT = re.compile(r"\s*[+-]?[0-9]+\s*")
_NUM_TEXT = re.compile(r"\s*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*")


def type_text(t: ColumnType) -> str:
    """``varchar(32)`` / ``numeric(12,2)`` / ``integer``: for messages."""
    name = t.kind.value
    if t.kind is Kind.PG_TEXT:
        name = (t.source_name or "pg_text").removesuffix("[]")  # named as the source names it
        return name + "[]" * t.array_dims
    if t.array_dims:
        return name + "[]" * t.array_dims
    if t.kind is Kind.NUMERIC and t.precision is not None:
        return f"{name}({t.precision},{t.scale or 0})"
    if t.kind in (Kind.VARCHAR, Kind.CHAR) and t.length is not None:
        return f"{name}({t.length})"
    return name


def canonical_text(v: object) -> str:
    """One text per value, engine-neutral: hashed keys join across sources (42 == '42')."""
    if type(v) is str:
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, datetime | date | time):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, Interval):
        return v.to_iso()
    return str(v)  # int, Decimal (scale kept), float (repr), UUID, JsonText, timedelta


def json_safe(value: object) -> object:
    """A JSON-representable form of a canonical value (as ``cdc_sync.audit.keys.json_safe``,
    copied: transforms must not import the audit package)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, Interval):
        return value.to_iso()
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return str(value)


def constant_type(v: object) -> ColumnType:
    """The column type of a YAML constant (``value``, map outputs)."""
    if isinstance(v, bool):
        return ColumnType(Kind.BOOLEAN)
    if isinstance(v, int):
        return ColumnType(Kind.BIGINT)
    if isinstance(v, float):
        return ColumnType(Kind.DOUBLE)
    if isinstance(v, datetime):
        return ColumnType(Kind.TIMESTAMPTZ if v.tzinfo is not None else Kind.TIMESTAMP)
    if isinstance(v, date):
        return ColumnType(Kind.DATE)
    return TEXT


def canonical_constant(v: object) -> object:
    """A YAML constant as the canonical value of :func:`constant_type` (aware → UTC)."""
    if isinstance(v, datetime) and v.tzinfo is not None:
        return v.astimezone(UTC)
    return v


def parse_int(text: str) -> int:
    """``int('  12 ')`` but ASCII digits only: Python's int() also takes '1_000' and '١٢'."""
    if not _INT_TEXT.fullmatch(text):
        raise ValueError("not an integer")
    return int(text)


def parse_decimal(text: str) -> Decimal:
    if not _NUM_TEXT.fullmatch(text):
        raise ValueError("not a number")
    try:
        return Decimal(text.strip())
    except InvalidOperation:
        raise ValueError("not a number") from None


_WIDE = Context(prec=250)  # quantize must not run out of digits (precision is at most 99)
_EXPONENTS = tuple(Decimal(1).scaleb(-i) for i in range(100))


def fit_decimal(d: Decimal, precision: int, scale: int) -> Decimal:
    """``d`` with exactly ``scale`` decimal places; ValueError rather than rounding."""
    if not d.is_finite():
        raise ValueError("not a finite number")
    if d and d.adjusted() >= precision - scale:
        raise ValueError(f"out of range for decimal({precision},{scale})")
    q = d.quantize(_EXPONENTS[scale], context=_WIDE)
    if q != d:
        raise ValueError(f"would lose digits (more than {scale} decimal places)")
    return q


def parse_bool(v: object) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        if v in (0, 1):
            return bool(v)
        raise ValueError("not a boolean (integers: 0 or 1)")
    if isinstance(v, str):
        t = v.strip().lower()
        if t in ("true", "t", "yes", "1"):
            return True
        if t in ("false", "f", "no", "0"):
            return False
    raise ValueError("not a boolean")


def coerce_constant(v: object, t: ColumnType) -> object:
    """A config constant as a canonical value of column type ``t``; ValueError if it does not
    fit. Used for ``default`` on a source column and for map outputs kept beside source values."""
    if v is None:
        return None
    k = t.kind
    if t.array_dims:
        raise ValueError("array columns take no constants")
    if k in INT_KINDS:
        n = parse_int(v) if isinstance(v, str) else v
        if type(n) is not int:
            raise ValueError("not an integer")
        lo, hi = INT_RANGES.get(k, (-(2**63), 2**64 - 1))
        if not lo <= n <= hi:
            raise ValueError(f"out of range for {k.value}")
        return n
    if k is Kind.NUMERIC:
        if isinstance(v, bool) or not isinstance(v, int | float | str | Decimal):
            raise ValueError("not a number")
        d = (
            parse_decimal(v)
            if isinstance(v, str)
            else Decimal(repr(v) if isinstance(v, float) else v)
        )
        return d if t.precision is None else fit_decimal(d, t.precision, t.scale or 0)
    if k in FLOAT_KINDS:
        if isinstance(v, bool) or not isinstance(v, int | float | str):
            raise ValueError("not a number")
        return float(parse_decimal(v)) if isinstance(v, str) else float(v)
    if k in TEXT_KINDS:
        if isinstance(v, bool) or not isinstance(v, str | int | float | Decimal):
            raise ValueError("not text")
        s = canonical_text(v)
        if k in (Kind.VARCHAR, Kind.CHAR) and t.length is not None and len(s) > t.length:
            raise ValueError(f"longer than {t.length} characters")
        if k is Kind.ENUM and t.enum_labels and s not in t.enum_labels:
            raise ValueError("not a label of the enum")
        return s
    if k is Kind.BOOLEAN:
        return parse_bool(v)
    if k is Kind.DATE:
        if isinstance(v, datetime):
            raise ValueError("a timestamp, not a date")
        return v if isinstance(v, date) else date.fromisoformat(_text(v))
    if k in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
        ts = v if isinstance(v, datetime) else datetime.fromisoformat(_text(v))
        if k is Kind.TIMESTAMPTZ:
            # A naive constant for an aware column is read as UTC, the canonical zone.
            return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
        if ts.tzinfo is not None:
            raise ValueError("has a time zone, the column has none")
        return ts
    if k is Kind.TIME:
        return time.fromisoformat(_text(v))
    if k is Kind.UUID:
        return UUID(_text(v))
    if k in (Kind.JSON, Kind.JSONB):
        return JsonText(_text(v))
    raise ValueError(f"{k.value} columns take no constants")


def _text(v: object) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected text, got {type(v).__name__}")
    return v.strip()
