"""The MySQL / MariaDB exact number type that holds every value of two others (DDL merges)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from cdc_sync.sinks.sql.mysql_types import MAX_PRECISION, MAX_SCALE

# A normal spelling (see mysql_ddl._normal): lower case, no integer display width, no space
# after the comma; a width that is there anyway (tinyint(1)) says nothing about the values.
_NUMBER = re.compile(
    r"^(tinyint|smallint|mediumint|int|bigint|decimal)(?:\((\d+)(?:,(\d+))?\))?( unsigned)?$"
)
# Bits of each integer type, smallest first: the first holding both merges two of them.
_INT_BITS = {"tinyint": 8, "smallint": 16, "mediumint": 24, "int": 32, "bigint": 64}


class TooWide(ValueError):
    """Only a DECIMAL beyond MySQL's largest, DECIMAL(65,30), holds the values of both."""


@dataclass(frozen=True)
class _Range:
    """The values of one type: exact bounds, and the digits after the point it keeps."""

    lo: Fraction
    hi: Fraction
    scale: int
    integer: bool = False  # an integer type, not a DECIMAL

    def holds(self, other: _Range) -> bool:
        return self.scale >= other.scale and self.lo <= other.lo and self.hi >= other.hi

    @property
    def whole(self) -> int:
        """Digits before the point a DECIMAL needs for every value (0 for DECIMAL(3,3))."""
        largest = int(max(self.hi, -self.lo))
        return len(str(largest)) if largest else 0


def _int_range(base: str, unsigned: bool) -> _Range:
    bits = _INT_BITS[base]
    if unsigned:
        return _Range(Fraction(0), Fraction(2**bits - 1), 0, integer=True)
    return _Range(Fraction(-(2 ** (bits - 1))), Fraction(2 ** (bits - 1) - 1), 0, integer=True)


def _range(spelled: str) -> _Range | None:
    """None for anything but an integer type or a DECIMAL (FLOAT / DOUBLE are not exact)."""
    m = _NUMBER.match(spelled)
    if m is None:
        return None
    base, unsigned = m.group(1), bool(m.group(4))
    if base != "decimal":
        return _int_range(base, unsigned)
    p = int(m.group(2) or 10)  # MySQL's DECIMAL is DECIMAL(10,0)
    s = int(m.group(3) or 0)
    hi = 10 ** (p - s) - Fraction(1, 10**s)
    return _Range(Fraction(0) if unsigned else -hi, hi, s)


def merged_number(have: str, want: str) -> str | None:
    """The type to give a target column of type ``have`` for a source column now of type
    ``want`` (normal spellings) so that it holds every value of both: the rows the target
    has and the ones the source sends from now on. ``have`` itself when it holds ``want``
    (nothing to change), ``want`` when it holds ``have``, else the smallest exact type holding
    both: a signed integer for two integers (int unsigned with int: bigint), else a DECIMAL
    with the most integer digits and the largest scale of the two (decimal(12,4) with
    decimal(12,1): decimal(15,4); int with bigint unsigned: decimal(20,0)), as a PostgreSQL
    target merges them: the source's own type would round the target's values or refuse
    some. None when either is not an exact number; TooWide beyond DECIMAL(65,30)."""
    a, b = _range(have), _range(want)
    if a is None or b is None:
        return None
    if a.holds(b):
        return have
    if b.holds(a):
        return want
    both = _Range(min(a.lo, b.lo), max(a.hi, b.hi), max(a.scale, b.scale))
    if a.integer and b.integer:
        # Two integer types differing in signedness: the smallest signed one holding both
        # (int unsigned with int: bigint); none for bigint unsigned (a DECIMAL, below).
        for base in _INT_BITS:
            if _int_range(base, False).holds(both):
                return base
    # Signed even when both are unsigned: MySQL 8 deprecates DECIMAL UNSIGNED, and a signed
    # one holds the same values. The cap is the widest DECIMAL the target mapping makes
    # (mysql_types): 65 digits on both servers, a scale of 30 on MySQL (MariaDB: 38).
    precision = both.whole + both.scale
    if precision > MAX_PRECISION or both.scale > MAX_SCALE:
        raise TooWide(f"decimal({precision},{both.scale})")
    return f"decimal({precision},{both.scale})"
