"""Convert PostgreSQL text output (ISO DateStyle, UTC, iso_8601 intervals, hex bytea) to values."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from decimal import Decimal

from cdc_sync.records import Column, ColumnType, Interval, JsonText, Kind, RowProblem, TableId

Converter = Callable[[str], object]
"""Text output form → canonical value. ``None`` in a converter tuple means "keep the str"."""

# The replication connection asks for these settings; the stream verifies them before use
# because every converter below relies on exactly this output format.
SESSION_SETTINGS: dict[str, str] = {
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "iso_8601",
    "TimeZone": "UTC",
    "extra_float_digits": "3",
    "bytea_output": "hex",
}


def to_bool(text: str) -> bool:
    if text == "t":
        return True
    if text == "f":
        return False
    raise ValueError("not a boolean")


def to_date(text: str) -> date:
    # 'infinity', BC dates and years > 9999 raise ValueError → reported per column as row error
    return date.fromisoformat(text)


def to_time(text: str) -> time:
    # '24:00:00' is a valid PostgreSQL time but not a Python one: ValueError, reported
    return time.fromisoformat(text)


def to_timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text)


def to_timestamptz(text: str) -> datetime:
    value = _fromisoformat(text)
    # The session runs with TimeZone=UTC, so the offset is +00 and fromisoformat already
    # returns the UTC singleton as tzinfo: the common case costs one C call.
    if value.tzinfo is UTC:
        return value
    if value.tzinfo is None:
        raise ValueError("timestamptz without offset")
    return value.astimezone(UTC)


_fromisoformat = datetime.fromisoformat


_ISO_INTERVAL = re.compile(
    r"P(?:(-?\d+)Y)?(?:(-?\d+)M)?(?:(-?\d+)D)?"
    r"(?:T(?:(-?\d+)H)?(?:(-?\d+)M)?(?:(-?)(\d+)(?:\.(\d{1,6}))?S)?)?"
)


def to_interval(text: str) -> Interval:
    """Parse IntervalStyle=iso_8601 output, e.g. ``P-1Y-2M3DT-4H-5M-6.000001S``, exactly."""
    m = _ISO_INTERVAL.fullmatch(text)
    if m is None or text == "P":
        raise ValueError("not an iso_8601 interval")
    years, months, days, hours, minutes, sec_sign, secs, frac = m.groups()
    micros = int(secs or 0) * 1_000_000 + (int(frac.ljust(6, "0")) if frac else 0)
    if sec_sign:
        micros = -micros
    micros += (int(hours or 0) * 60 + int(minutes or 0)) * 60_000_000
    return Interval(int(years or 0) * 12 + int(months or 0), int(days or 0), micros)


def to_bytes(text: str) -> bytes:
    if not text.startswith("\\x"):
        raise ValueError("bytea not in hex output format")
    return bytes.fromhex(text[2:])


def to_json(text: str) -> JsonText:
    return JsonText(text)


def parse_array(text: str, element: Converter | None) -> list[object]:
    """Parse an array literal (``{1,NULL,"a \\"b"}``, nested) into nested lists.

    Lower bounds other than 1 (``[0:1]={…}``) are dropped: lists have no lower bound.
    Only ',' delimited element types are supported (all types this package maps).
    """
    if text.startswith("["):
        text = text[text.index("=") + 1 :]
    stack: list[list[object]] = []
    cur: list[object] | None = None
    result: list[object] | None = None
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "{":
            new: list[object] = []
            if cur is not None:
                cur.append(new)
                stack.append(cur)
            cur = new
            i += 1
        elif c == "}":
            if cur is None:
                raise ValueError("unbalanced array literal")
            if stack:
                cur = stack.pop()
            else:
                result, cur = cur, None
            i += 1
        elif c == ",":
            i += 1
        elif cur is None:
            raise ValueError("malformed array literal")
        elif c == '"':
            j = i + 1
            parts: list[str] = []
            while True:
                q = text.find('"', j)
                b = text.find("\\", j, q) if q >= 0 else -1
                if q < 0:
                    raise ValueError("unterminated quoted array element")
                if b < 0:
                    parts.append(text[j:q])
                    j = q + 1
                    break
                parts.append(text[j:b])
                parts.append(text[b + 1])
                j = b + 2
            s = "".join(parts)
            cur.append(s if element is None else element(s))
            i = j
        else:
            j = i
            while j < n and text[j] not in ",}":
                j += 1
            token = text[i:j]
            if token.upper() == "NULL":  # unquoted NULL is SQL NULL; "NULL" quoted is a string
                cur.append(None)
            else:
                cur.append(token if element is None else element(token))
            i = j
    if result is None or cur is not None:
        raise ValueError("malformed array literal")
    return result


_SCALAR: dict[Kind, Converter | None] = {
    Kind.SMALLINT: int,
    Kind.INTEGER: int,
    Kind.BIGINT: int,
    Kind.NUMERIC: Decimal,  # keeps scale ('1.10'), NaN, Infinity, -Infinity exactly
    Kind.REAL: float,  # PostgreSQL's 'NaN', 'Infinity', '-Infinity' are what float() reads
    Kind.DOUBLE: float,
    Kind.TEXT: None,
    Kind.VARCHAR: None,
    Kind.CHAR: None,  # blank padding is part of the output and kept
    Kind.BOOLEAN: to_bool,
    Kind.DATE: to_date,
    Kind.TIME: to_time,
    Kind.TIMESTAMP: to_timestamp,
    Kind.TIMESTAMPTZ: to_timestamptz,
    Kind.INTERVAL: to_interval,
    Kind.UUID: uuid.UUID,
    Kind.JSON: to_json,
    Kind.JSONB: to_json,
    Kind.BYTES: to_bytes,
    Kind.ENUM: None,
    Kind.BIT: None,  # '0' / '1' digits, as bit(n) prints them
    Kind.PG_TEXT: None,  # the type's own text output, read back by its input function
}


def converter_for(ctype: ColumnType) -> Converter | None:
    """The converter for a canonical type; ``None`` when the text itself is the value."""
    scalar = _SCALAR[ctype.kind]
    if ctype.array_dims == 0:
        return scalar

    def array(text: str) -> list[object]:
        return parse_array(text, scalar)

    return array


def describe_unrepresentable(ctype: ColumnType) -> str:
    """Why a value of this type may fail to convert, without showing the value (PII)."""
    if ctype.kind in (Kind.DATE, Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
        return "infinity, BC and year > 9999 values cannot be represented"
    if ctype.kind is Kind.TIME:
        return "24:00:00 cannot be represented"
    return "the value could not be parsed"


def unrepresentable(table: TableId, col: Column) -> RowProblem:
    """A row's refusal for a value of ``col`` with no canonical value (the stream decoder and
    the query reads say the same): table, column and type, never the value (PII)."""
    return RowProblem(
        col.name,
        f"table {table}: column {col.name!r} ({col.type.source_name}): "
        f"{describe_unrepresentable(col.type)}",
    )
