"""Canonical value types that have no exact Python builtin."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Final


@dataclass(frozen=True, slots=True)
class Interval:
    """An SQL interval kept exact: months and days are not a fixed number of seconds."""

    months: int = 0
    days: int = 0
    microseconds: int = 0

    def to_iso(self) -> str:
        """ISO 8601 duration that PostgreSQL reads back exactly (negative parts allowed)."""
        secs, micros = divmod(abs(self.microseconds), 1_000_000)
        sign = "-" if self.microseconds < 0 else ""
        frac = f".{micros:06d}".rstrip("0") if micros else ""
        years, months = divmod(abs(self.months), 12)
        msign = "-" if self.months < 0 else ""
        return f"P{msign}{years}Y{msign}{months}M{self.days}DT{sign}{secs}{frac}S"


class JsonText(str):
    """JSON kept as the exact text the source stored (key order, spacing, numbers)."""

    __slots__ = ()


class _Unchanged:
    """Marker for an unchanged TOASTed value the source did not send: keep the target's."""

    _inst: _Unchanged | None = None
    __slots__ = ()

    def __new__(cls) -> _Unchanged:
        if cls._inst is None:
            cls._inst = super().__new__(cls)
        return cls._inst

    def __repr__(self) -> str:
        return "UNCHANGED"

    def __reduce__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged()


_F32 = struct.Struct("<f")


def float32(v: Any) -> float:
    """A single-precision (REAL / FLOAT) value read back as its exact double: packing to
    four bytes is then the identity, and it equals what the binlog's '<f' decodes. Read a
    MySQL FLOAT as CAST(... AS DOUBLE) first: its text has 6 digits, another float."""
    return float(_F32.unpack(_F32.pack(v))[0])
