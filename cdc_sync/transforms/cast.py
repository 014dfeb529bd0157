"""The ``cast`` rule: exact conversions between canonical types, never rounding or truncating."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from decimal import Decimal

from cdc_sync.config.rules import Cast
from cdc_sync.records import ColumnType, Kind
from cdc_sync.transforms.errors import Problem, RuleError
from cdc_sync.transforms.values import (
    INT_KINDS,
    INT_RANGES,
    NUMBER_KINDS,
    TEXT_KINDS,
    canonical_text,
    fit_decimal,
    parse_bool,
    parse_decimal,
    parse_int,
    type_text,
)

Fn = Callable[[object], object]

_DECIMAL = re.compile(r"(?:decimal|numeric)\((\d+),\s*(\d+)\)")
_VARCHAR = re.compile(r"varchar\((\d+)\)")
_INTS = {"int": Kind.INTEGER, "integer": Kind.INTEGER, "smallint": Kind.SMALLINT}
_INTS["bigint"] = Kind.BIGINT
_TIMES = frozenset({Kind.DATE, Kind.TIMESTAMP, Kind.TIMESTAMPTZ})
_FROM_NUMBER = NUMBER_KINDS | TEXT_KINDS
# Target family → source kinds a cast from makes sense (text takes every scalar kind).
_SOURCES: dict[str, frozenset[Kind]] = {
    "int": _FROM_NUMBER | {Kind.BOOLEAN},
    "decimal": _FROM_NUMBER,
    "double": _FROM_NUMBER,
    "date": TEXT_KINDS | _TIMES,
    "timestamp": TEXT_KINDS | _TIMES,
    "boolean": TEXT_KINDS | INT_KINDS | {Kind.BOOLEAN},
}


def compile_cast(cfg: Cast, col: str, src: ColumnType) -> tuple[Fn, ColumnType]:
    """The cast's value function and output type; Problem when it cannot apply to ``src``."""
    to = cfg.to.replace(" ", "")
    family = _family(to)
    if src.array_dims:
        raise Problem(f"cast applies to scalar columns, {col!r} is {type_text(src)}")
    allowed = _SOURCES.get(family)
    if allowed is not None and src.kind not in allowed:
        raise Problem(f"cannot cast {col!r} from {type_text(src)} to {to}")
    fmt = cfg.format
    if fmt is not None and not (
        (family in ("date", "timestamp") and src.kind in TEXT_KINDS)
        or (family == "text" and src.kind in _TIMES | {Kind.TIME})
    ):
        raise Problem("format applies to casts between text and date / timestamp only")

    def bad(reason: str) -> RuleError:
        return RuleError("cast", col, reason)

    if family == "int":
        kind = _INTS[to]
        return _to_int(bad, to, *INT_RANGES[kind]), ColumnType(kind)
    if family == "decimal":
        m = _DECIMAL.fullmatch(to)
        assert m is not None
        p, s = int(m[1]), int(m[2])
        if p < 1 or s > p:
            raise Problem(f"{to}: precision must be at least 1 and scale at most precision")
        out_t = ColumnType(Kind.NUMERIC, precision=p, scale=s)
        if (
            src.kind is Kind.NUMERIC
            and src.scale == s
            and src.precision is not None
            and src.precision - s <= p - s
        ):
            return _same_scale(bad, p, s), out_t
        return _to_decimal(bad, p, s), out_t
    if family == "double":
        return _to_double(bad), ColumnType(Kind.DOUBLE)
    if family == "text":
        m = _VARCHAR.fullmatch(to)
        n = int(m[1]) if m else None
        if n == 0:
            raise Problem("varchar(0) holds nothing")
        out = ColumnType(Kind.TEXT) if n is None else ColumnType(Kind.VARCHAR, length=n)
        return _to_text(bad, n, fmt), out
    if family == "date":
        return _to_date(bad, fmt), ColumnType(Kind.DATE)
    if family == "timestamp":
        return _to_timestamp(bad, fmt), ColumnType(Kind.TIMESTAMP)
    return _to_bool(bad), ColumnType(Kind.BOOLEAN)


def _family(to: str) -> str:
    if to in _INTS:
        return "int"
    if _DECIMAL.fullmatch(to):
        return "decimal"
    if to == "text" or _VARCHAR.fullmatch(to):
        return "text"
    return to  # double / date / timestamp / boolean (the model's pattern allows no other)


def _as_int(v: object) -> int:
    """ValueError texts here are fixed reasons, never the value."""
    if isinstance(v, int):
        return int(v)  # bool → 0 / 1
    if isinstance(v, str):
        return parse_int(v)
    if isinstance(v, Decimal | float):
        if not (v.is_finite() if isinstance(v, Decimal) else math.isfinite(v)):
            raise ValueError("not a finite number")
        if v != int(v):
            raise ValueError("has a fractional part")
        return int(v)
    raise ValueError("not an integer")


def _to_int(bad: Callable[[str], RuleError], name: str, lo: int, hi: int) -> Fn:
    def cast_int(v: object) -> object:
        if type(v) is int:
            n = v
        else:
            try:
                n = _as_int(v)
            except ValueError as e:
                raise bad(str(e)) from None
        if n < lo or n > hi:
            raise bad(f"out of range for {name}")
        return n

    return cast_int


def _as_decimal(v: object) -> Decimal:
    if isinstance(v, bool):
        raise ValueError("not a number")
    if isinstance(v, Decimal):
        return v
    if isinstance(v, int):
        return Decimal(v)
    if isinstance(v, float):
        # repr is the shortest text that reads back as the same float: 0.1 → '0.1', not
        # the binary expansion 0.1000000000000000055511151231257827...
        return Decimal(repr(v))
    if isinstance(v, str):
        return parse_decimal(v)
    raise ValueError("not a number")


def _to_decimal(bad: Callable[[str], RuleError], p: int, s: int) -> Fn:
    def cast_decimal(v: object) -> object:
        try:
            return fit_decimal(_as_decimal(v), p, s)
        except ValueError as e:
            raise bad(str(e)) from None

    return cast_decimal


def _same_scale(bad: Callable[[str], RuleError], p: int, s: int) -> Fn:
    """numeric(p0,s) → decimal(p,s), p0 <= p: a value already at scale s fits as it is (the
    common case, checked by its exponent); anything else (NaN, a custom function's value at
    another scale) takes the full cast."""
    full = _to_decimal(bad, p, s)
    exponent = -s

    def cast_same_scale(v: object) -> object:
        if type(v) is Decimal and v.as_tuple().exponent == exponent:
            return v
        return full(v)

    return cast_same_scale


def _to_double(bad: Callable[[str], RuleError]) -> Fn:
    def cast_double(v: object) -> object:
        if type(v) is float:
            return v
        try:
            return float(_as_decimal(v))
        except ValueError as e:
            raise bad(str(e)) from None
        except OverflowError:
            raise bad("out of range for double") from None

    return cast_double


def _to_text(bad: Callable[[str], RuleError], n: int | None, fmt: str | None) -> Fn:
    def cast_text(v: object) -> object:
        s = v.strftime(fmt) if fmt is not None and isinstance(v, date | time) else canonical_text(v)
        if n is not None and len(s) > n:
            raise bad(f"longer than {n} characters")
        return s

    return cast_text


def _parse_datetime(bad: Callable[[str], RuleError], v: str, fmt: str | None) -> datetime:
    try:
        if fmt is not None:
            return datetime.strptime(v.strip(), fmt)
        return datetime.fromisoformat(v.strip())
    except ValueError:
        # Python's message quotes the input: a fixed reason instead, and no chained context.
        reason = "not a date / timestamp" + ("" if fmt is None else f" in format {fmt!r}")
        raise bad(reason) from None


def _to_date(bad: Callable[[str], RuleError], fmt: str | None) -> Fn:
    def cast_date(v: object) -> object:
        if isinstance(v, datetime):
            return (v.astimezone(UTC) if v.tzinfo is not None else v).date()
        if isinstance(v, date):
            return v
        if isinstance(v, str):
            if fmt is None:
                try:
                    return date.fromisoformat(v.strip())
                except ValueError:
                    pass  # maybe a timestamp text: its date part
            d = _parse_datetime(bad, v, fmt)
            return (d.astimezone(UTC) if d.tzinfo is not None else d).date()
        raise bad("not a date")

    return cast_date


def _to_timestamp(bad: Callable[[str], RuleError], fmt: str | None) -> Fn:
    def cast_timestamp(v: object) -> object:
        if isinstance(v, str):
            v = _parse_datetime(bad, v, fmt)
        if isinstance(v, datetime):
            # The target is naive: an instant is written as its UTC wall time.
            return v.astimezone(UTC).replace(tzinfo=None) if v.tzinfo is not None else v
        if isinstance(v, date):
            return datetime.combine(v, time())
        raise bad("not a timestamp")

    return cast_timestamp


def _to_bool(bad: Callable[[str], RuleError]) -> Fn:
    def cast_bool(v: object) -> object:
        try:
            return parse_bool(v)
        except ValueError as e:
            raise bad(str(e)) from None

    return cast_bool
