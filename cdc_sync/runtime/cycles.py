"""Replication cycles among pipelines: a pure search over (instance, table) nodes."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from cdc_sync.records import TableId


@dataclass(frozen=True)
class Node:
    """One table on one server and database (``Source.instance()`` text)."""

    instance: str
    table: TableId


@dataclass(frozen=True)
class Edge:
    """A pipeline copies every change of ``source`` into ``target``; ``link``: the link the
    pipeline is one direction of, None for an ordinary pipeline."""

    pipeline: str
    source: Node
    target: Node
    link: str | None = None


Cycle = tuple[Edge, ...]


def _key(e: Edge) -> tuple[str, str, str, str, str]:
    s, t = e.source, e.target
    return (e.pipeline, s.instance, str(s.table), t.instance, str(t.table))


def _passes(applied: Edge, captured: Edge) -> bool:
    """Whether ``captured``'s pipeline reads again what ``applied``'s pipeline wrote: all of
    it, except what a link direction wrote for its counterpart, which drops the whole
    transaction by its origin (docs/two-way.md, loop prevention)."""
    if applied.target != captured.source:
        return False
    reverse = applied.link is not None and applied.link == captured.link
    return not (reverse and applied.pipeline != captured.pipeline)


def _way_back(first: Edge, out: dict[Node, list[Edge]]) -> Cycle | None:
    """The shortest walk that starts with ``first`` and whose last step feeds ``first``
    again, each step reading what the previous one wrote (breadth first over edges)."""
    came: dict[Edge, Edge | None] = {first: None}
    todo = deque([first])
    while todo:
        edge = todo.popleft()
        if _passes(edge, first):
            path: list[Edge] = []
            step: Edge | None = edge
            while step is not None:
                path.append(step)
                step = came[step]
            return tuple(reversed(path))
        for nxt in out.get(edge.target, ()):
            if nxt not in came and _passes(edge, nxt):
                came[nxt] = edge
                todo.append(nxt)
    return None


def _rotated(cycle: Cycle) -> Cycle:
    i = min(range(len(cycle)), key=lambda k: _key(cycle[k]))
    return cycle[i:] + cycle[:i]


def find_cycles(edges: Iterable[Edge]) -> list[Cycle]:
    """Every way a change goes round for ever, each once (starting at its smallest edge),
    sorted. A change a pipeline writes is read again by every pipeline reading that table,
    except by the other direction of the same link: so a link's two directions alone are no
    cycle, nor is a chain of links through one side (a hub), but a ring of links is, and so is
    any cycle through an ordinary pipeline (it passes the echo on untagged). One pipeline
    writing into its own source tables (an edge to itself, or a cycle of one pipeline on one
    database) is left to ``runtime.self_loop``, which refuses it with its own message."""
    out: dict[Node, list[Edge]] = {}
    for e in sorted({e for e in edges if e.source != e.target}, key=_key):
        out.setdefault(e.source, []).append(e)
    found: set[Cycle] = set()
    for first in (e for es in out.values() for e in es):
        cycle = _way_back(first, out)
        if cycle is not None and len({e.pipeline for e in cycle}) > 1:
            found.add(_rotated(cycle))
    return sorted(found, key=lambda c: [_key(e) for e in c])
