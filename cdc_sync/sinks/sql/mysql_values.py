"""Canonical values → MySQL SQL literals, refusing what MySQL would alter silently."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from pymysql.converters import escape_string

from cdc_sync.records import ColumnType, Interval, Kind
from cdc_sync.sinks.sql.mysql_types import decimal_bounds, fsp

Literal = Callable[[Any], str]
"""One value (never None) → its SQL literal text; raises Refused for a value to stop."""

# TIMESTAMP holds 1970-01-01 00:00:01 … 2038-01-19 03:14:07.999999 UTC (32-bit seconds).
_TS_MIN = datetime(1970, 1, 1, 0, 0, 1)
_TS_MAX = datetime(2038, 1, 19, 3, 14, 7, 999_999)
# TIME holds ±838:59:59.999999 (MariaDB; MySQL stops at .000000 and refuses the rest itself).
_TIME_MAX = timedelta(hours=838, minutes=59, seconds=59, microseconds=999_999)


class Refused(ValueError):
    """The value cannot be stored exactly; ``why`` names the problem, never the value."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def _text(v: str) -> str:
    return "'" + str(escape_string(v)) + "'"


def _int(v: int) -> str:
    return str(int(v))


def _bool(v: bool) -> str:
    return "1" if v else "0"


def _float(v: float) -> str:
    if not math.isfinite(v):
        raise Refused("is NaN or Infinity, which MySQL cannot store")
    return repr(float(v))


def _bytes(v: bytes) -> str:
    return "x'" + bytes(v).hex() + "'"


def _fixed_bytes(ct: ColumnType) -> Literal:
    n = ct.length or 0

    def lit(v: bytes) -> str:
        # BINARY(n) pads a shorter value with zero bytes silently (a MySQL source's BINARY
        # values always have n bytes; a custom function's may not). A longer one the server
        # refuses (1406, strict mode), as for VARBINARY(n).
        if len(v) < n:
            raise Refused(f"is shorter than BINARY({n}), which would pad it with zero bytes")
        return _bytes(v)

    return lit


def _bit(v: str) -> str:
    if not v or v.strip("01"):
        raise Refused("is not a bit string")
    return "b'" + v + "'"


def _decimal(ct: ColumnType) -> Literal:
    p, s = decimal_bounds(ct)
    whole = p - s

    def lit(v: Decimal) -> str:
        if not v.is_finite():
            raise Refused("is NaN or Infinity, which a MySQL DECIMAL cannot hold")
        _, digits, exp = v.as_tuple()
        assert isinstance(exp, int)
        extra = -exp - s  # decimals beyond the column's scale: fine only if all zeros
        # MySQL rounds extra decimals silently even in strict mode: check the scale here.
        if (extra > 0 and any(digits[-extra:])) or (v and v.adjusted() + 1 > whole):
            raise Refused(f"needs more digits than DECIMAL({p},{s})")
        # 'f': never exponent notation, which MySQL would read as a (rounded) DOUBLE.
        return format(v, "f")

    return lit


def _fraction(ct: ColumnType) -> int:
    """Divisor that must divide the microseconds: MySQL rounds lost fractions silently."""
    return int(10 ** (6 - fsp(ct)))


def _time(ct: ColumnType) -> Literal:
    step = _fraction(ct)

    def lit(v: time) -> str:
        if v.microsecond % step:
            raise Refused("has more fractional digits than the column")
        return "'" + v.isoformat() + "'"

    return lit


def _duration(ct: ColumnType) -> Literal:
    step = _fraction(ct)

    def lit(v: timedelta) -> str:
        if abs(v) > _TIME_MAX:
            raise Refused("is outside the TIME range ±838:59:59.999999")
        if v.microseconds % step:
            raise Refused("has more fractional digits than the column")
        sign = "-" if v < timedelta(0) else ""
        secs, micros = divmod(abs(v) // timedelta(microseconds=1), 1_000_000)
        hours, rest = divmod(secs, 3600)
        return f"'{sign}{hours}:{rest // 60:02d}:{rest % 60:02d}.{micros:06d}'"

    return lit


def _datetime(ct: ColumnType) -> Literal:
    step = _fraction(ct)

    def lit(v: datetime) -> str:
        if v.microsecond % step:
            raise Refused("has more fractional digits than the column")
        return "'" + v.isoformat(" ") + "'"

    return lit


def _timestamptz(ct: ColumnType) -> Literal:
    naive = _datetime(ct)

    def lit(v: datetime) -> str:
        # The session runs in UTC ('+00:00'), so the UTC wall time is the instant.
        utc = v.astimezone(UTC).replace(tzinfo=None) if v.tzinfo is not None else v
        if not _TS_MIN <= utc <= _TS_MAX:
            raise Refused("outside the TIMESTAMP range 1970-01-01 00:00:01 to 2038-01-19 UTC")
        return naive(utc)

    return lit


def _date(v: date) -> str:
    return "'" + v.isoformat() + "'"


def _interval(v: Interval) -> str:
    return "'" + v.to_iso() + "'"


def _uuid(v: object) -> str:
    return "'" + str(v).lower() + "'"


_SIMPLE: dict[Kind, Literal] = {
    Kind.TINYINT: _int,
    Kind.SMALLINT: _int,
    Kind.MEDIUMINT: _int,
    Kind.INTEGER: _int,
    Kind.BIGINT: _int,
    Kind.YEAR: _int,
    Kind.BOOLEAN: _bool,
    Kind.REAL: _float,
    Kind.DOUBLE: _float,
    Kind.TEXT: _text,
    Kind.VARCHAR: _text,
    Kind.CHAR: _text,
    Kind.ENUM: _text,
    Kind.SET: _text,
    Kind.JSON: _text,
    Kind.JSONB: _text,
    Kind.PG_TEXT: _text,  # a PostgreSQL type's text form
    Kind.BYTES: _bytes,
    Kind.BIT: _bit,
    Kind.DATE: _date,
    Kind.INTERVAL: _interval,
    Kind.UUID: _uuid,
}

_PARAMETRISED: dict[Kind, Callable[[ColumnType], Literal]] = {
    Kind.NUMERIC: _decimal,
    Kind.TIME: _time,
    Kind.DURATION: _duration,
    Kind.TIMESTAMP: _datetime,
    Kind.TIMESTAMPTZ: _timestamptz,
}


def literal_for(ct: ColumnType) -> Literal:
    """The literal function of one column, chosen once per schema."""
    if ct.fixed and ct.kind is Kind.BYTES:
        return _fixed_bytes(ct)
    simple = _SIMPLE.get(ct.kind)
    if simple is not None:
        return simple
    return _PARAMETRISED[ct.kind](ct)
