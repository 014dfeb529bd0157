"""Source positions as comparable values, serialisable to text and back."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Self

_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


class Position(ABC):
    """A point in a source's change stream. Subclasses are frozen, ordered dataclasses.

    ``to_text`` / ``Position.parse`` round-trip; the text carries a kind prefix so a
    checkpoint written by one source kind is never misread as another.
    """

    kind: ClassVar[str]
    _kinds: ClassVar[dict[str, type[Position]]] = {}

    def __init_subclass__(cls, **kw: object) -> None:
        super().__init_subclass__(**kw)
        if "kind" in cls.__dict__:
            Position._kinds[cls.kind] = cls

    @abstractmethod
    def sort_key(self) -> tuple[int, ...]:
        """Total order within one kind; comparing different kinds is a programming error."""

    def _check(self, other: object) -> Position:
        if type(other) is not type(self):
            raise TypeError(f"cannot compare {type(self).__name__} with {type(other).__name__}")
        assert isinstance(other, Position)
        return other

    def __lt__(self, other: object) -> bool:
        return self.sort_key() < self._check(other).sort_key()

    def __le__(self, other: object) -> bool:
        return self.sort_key() <= self._check(other).sort_key()

    def __gt__(self, other: object) -> bool:
        return self.sort_key() > self._check(other).sort_key()

    def __ge__(self, other: object) -> bool:
        return self.sort_key() >= self._check(other).sort_key()

    @abstractmethod
    def body(self) -> str:
        """The position without its kind prefix."""

    @classmethod
    @abstractmethod
    def from_body(cls, text: str) -> Self:
        """Parse :meth:`body` output."""

    def to_text(self) -> str:
        return f"{self.kind}:{self.body()}"

    @staticmethod
    def parse(text: str) -> Position:
        kind, sep, body = text.partition(":")
        if not sep or kind not in Position._kinds:
            raise ValueError(f"not a cdc-sync position: {text!r}")
        return Position._kinds[kind].from_body(body)

    def __str__(self) -> str:
        return self.to_text()


@dataclass(frozen=True, slots=True)
class PgLsn(Position):
    """A PostgreSQL WAL location (64-bit), text form ``pg:16/B374D848``."""

    kind: ClassVar[str] = "pg"
    value: int

    def __post_init__(self) -> None:
        if not 0 <= self.value < 1 << 64:
            raise ValueError(f"LSN out of range: {self.value}")

    def sort_key(self) -> tuple[int, ...]:
        return (self.value,)

    def body(self) -> str:
        return f"{self.value >> 32:X}/{self.value & 0xFFFFFFFF:X}"

    def to_text(self) -> str:
        # Same text as Position.to_text, in one step: the audit asks for it once per row.
        v = self.value
        return f"pg:{v >> 32:X}/{v & 0xFFFFFFFF:X}"

    @classmethod
    def from_body(cls, text: str) -> PgLsn:
        m = _LSN_RE.match(text.strip())
        if not m:
            raise ValueError(f"not a PostgreSQL LSN: {text!r}")
        return cls((int(m.group(1), 16) << 32) | int(m.group(2), 16))

    @classmethod
    def zero(cls) -> PgLsn:
        return cls(0)


_BINLOG_RE = re.compile(r"^([^:|]+):(\d+)(?:\|gtid=(.*))?$")


@dataclass(frozen=True, slots=True)
class BinlogPosition(Position):
    """A MySQL / MariaDB binlog point: ``file:pos`` and, when the server has GTIDs on, the
    GTID state reached there (MariaDB ``domain-server-seq`` list, or a MySQL GTID set).

    Order is by file:pos, which is total on one server; ``gtid`` is what resuming uses when
    present, since it survives binlog rotation and failover where file:pos does not.
    Text: ``mysql:mariadb-bin.000003:1234`` or ``mysql:mariadb-bin.000003:1234|gtid=0-1-55``.
    """

    kind: ClassVar[str] = "mysql"
    file: str
    pos: int
    gtid: str = ""

    def __post_init__(self) -> None:
        if not self.file or ":" in self.file or "|" in self.file or self.pos < 0:
            raise ValueError(f"not a binlog position: {self.file!r}:{self.pos}")

    def sort_key(self) -> tuple[int, ...]:
        # The numeric extension orders files (mariadb-bin.000010 after .000009, and after
        # .999999 comes .1000000); the base name is the same for every file of one server.
        _, _, ext = self.file.rpartition(".")
        return (int(ext) if ext.isdigit() else 0, self.pos)

    def body(self) -> str:
        text = f"{self.file}:{self.pos}"
        return f"{text}|gtid={self.gtid}" if self.gtid else text

    @classmethod
    def from_body(cls, text: str) -> BinlogPosition:
        m = _BINLOG_RE.match(text.strip())
        if not m:
            raise ValueError(f"not a binlog position (file:pos[|gtid=...]): {text!r}")
        return cls(m.group(1), int(m.group(2)), m.group(3) or "")
