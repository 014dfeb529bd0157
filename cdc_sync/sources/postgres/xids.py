"""Which transactions a PostgreSQL snapshot sees, for 32-bit xids read from pgoutput."""

from __future__ import annotations

from dataclasses import dataclass

_WRAP = 1 << 32
_HALF = 1 << 31


@dataclass(frozen=True, slots=True)
class XidSnapshot:
    """``pg_current_snapshot()`` (full 64-bit ids): xmin, xmax and the in-progress list."""

    xmin: int
    xmax: int
    xip: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> XidSnapshot:
        """``'xmin:xmax:xip,xip'`` as PostgreSQL prints a pg_snapshot."""
        xmin, xmax, xip = text.split(":")
        return cls(int(xmin), int(xmax), frozenset(int(x) for x in xip.split(",") if x))

    def full(self, xid32: int) -> int:
        """The 64-bit id of a 32-bit xid near this snapshot (modulo-2^32 distance to xmax, as
        PostgreSQL compares xids): within 2^31 after xmax it is newer, else older."""
        d = (xid32 - self.xmax) % _WRAP
        return self.xmax + d if d < _HALF else self.xmax - (_WRAP - d)

    def sees(self, xid: str) -> bool:
        """Whether this snapshot saw the effects of committed transaction ``xid``."""
        full = self.full(int(xid))
        if full >= self.xmax:
            return False
        return full < self.xmin or full not in self.xip
