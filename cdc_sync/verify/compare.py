"""Chunk summaries (count + checksum) and narrowing a chunk to missing / extra / different."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K")
S = TypeVar("S")

_MASK = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Summary:
    """A chunk's row count and order-independent checksum (sum of row digests mod 2**64):
    equal chunks give equal summaries whatever order each side read its rows in."""

    count: int
    checksum: int


def summarize(digests: Iterable[int]) -> Summary:
    got = digests if isinstance(digests, list) else list(digests)
    return Summary(len(got), sum(got) & _MASK)  # sum() in C: no Python loop per row


@dataclass(slots=True)
class Diff(Generic[K, S]):
    """Keys found differing, by kind. ``S`` is what the caller needs to act on a key later
    (the source key, to re-read the source row); extras have no source row."""

    missing: list[tuple[K, S]] = field(default_factory=list)  # in the source, not the target
    extra: list[K] = field(default_factory=list)  # in the target, not the source
    different: list[tuple[K, S]] = field(default_factory=list)  # in both, values differ

    def __len__(self) -> int:
        return len(self.missing) + len(self.extra) + len(self.different)

    def extend(self, other: Diff[K, S]) -> None:
        self.missing += other.missing
        self.extra += other.extra
        self.different += other.different


def narrow(
    source: Mapping[K, tuple[int, S]], target: Mapping[K, int], *, extras: bool = True
) -> Diff[K, S]:
    """Exact keys of a mismatching chunk. ``source``: target key → (row digest, source key);
    ``target``: target key → row digest. ``extras`` False: target keys absent from
    ``source`` are not reported (the caller finds extras another way)."""
    diff: Diff[K, S] = Diff()
    for key, (digest, skey) in source.items():
        got = target.get(key)
        if got is None:
            diff.missing.append((key, skey))
        elif got != digest:
            diff.different.append((key, skey))
    if extras:
        diff.extra = [k for k in target if k not in source]
    return diff


def compare_chunk(
    source: Mapping[K, tuple[int, S]], target: Mapping[K, int]
) -> tuple[Summary, Diff[K, S]]:
    """Summaries first (the common, equal case costs two sums); narrowed only on mismatch."""
    s = summarize(d for d, _ in source.values())
    t = summarize(target.values())
    if s == t:
        return s, Diff()
    return s, narrow(source, target)
