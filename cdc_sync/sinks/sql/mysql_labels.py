"""ENUM / SET labels of a MySQL / MariaDB target column against the source column's labels."""

from __future__ import annotations

import re
from collections.abc import Sequence

_LABELS = re.compile(r"'((?:[^']|'')*)'")


def labels(spelled: str) -> list[str]:
    """The labels of an ``enum(...)`` / ``set(...)`` as information_schema spells it."""
    return [m.replace("''", "'") for m in _LABELS.findall(spelled)]


def merged_labels(source: Sequence[str], target: Sequence[str]) -> tuple[str, ...] | None:
    """The labels a target ENUM / SET needs to take every value of the source's, or None
    when it has them all already.

    Values travel as labels, not as the binlog's index / bit mask (the source decodes those
    with the table map's own labels, the sink writes the text), so a target holding every
    source label takes every source value, whatever its order or extra labels. That is what
    a daemon restarted after a source ALTER meets: the target was given the new labels from
    the source's catalog, then the rows written before the ALTER come back with the old ones.

    A target lacking some: the source's labels, when the target has no label of its own (the
    source added labels: its order, so the target sorts as the source does); else the
    target's labels with the missing ones each put after the source label before it, as a
    PostgreSQL enum type is extended. Never a label dropped: target rows may hold it."""
    have = list(target)
    if set(source) <= set(have):
        return None
    if set(have) <= set(source):
        return tuple(source)
    for i, label in enumerate(source):
        if label in have:
            continue
        have.insert(have.index(source[i - 1]) + 1 if i else 0, label)
    return tuple(have)
