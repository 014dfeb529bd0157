"""Enum values checked against the labels known: a label added since is read from the catalog."""

from __future__ import annotations

from collections.abc import Collection

from cdc_sync.records import ColumnType, Kind
from cdc_sync.sources.postgres.values import Converter


class NewLabel(Exception):
    """A row holds an enum label its column's type did not have when the relation was read.

    ``ALTER TYPE … ADD VALUE`` changes no table, so pgoutput sends no new Relation or Type
    message; without this the target never learned the label and the rows using it became
    dead letters. The label is never put in a message: it is row data."""

    def __init__(self, label: str) -> None:
        super().__init__("an enum label not known yet")
        self.label = label


def _labels_in(value: object, out: list[str]) -> None:
    if isinstance(value, list):
        for v in value:
            _labels_in(v, out)
    elif isinstance(value, str):
        out.append(value)


def checked(conv: Converter | None, ctype: ColumnType, tolerated: Collection[str]) -> Converter:
    """``conv`` (None: the text is the value) raising :class:`NewLabel` for a label outside
    the type's labels and ``tolerated`` (labels looked up once already and still unknown: a
    value renamed since, which the target refuses as before, once, not in a loop)."""
    assert ctype.kind is Kind.ENUM
    known = frozenset(ctype.enum_labels) | frozenset(tolerated)
    if conv is None:

        def scalar(text: str) -> object:
            if text not in known:
                raise NewLabel(text)
            return text

        return scalar

    def array(text: str) -> object:
        value = conv(text)
        found: list[str] = []
        _labels_in(value, found)
        for label in found:
            if label not in known:
                raise NewLabel(label)
        return value

    return array
