"""Custom row functions for the transforms tests ("tests.unit.custom_rules_example:fn")."""

from __future__ import annotations

from cdc_sync.transforms import Change

CALLS: list[Change] = []
NOT_A_FUNCTION = 42


def fn(change: Change) -> Change | None:
    """Records the call; skips rows whose name is 'skip'; otherwise prefixes the name."""
    CALLS.append(change)
    name = change.values.get("name")
    if name == "skip":
        return None
    if isinstance(name, str):
        return change.replace(name=f"x-{name}")
    return change


def set_phone(change: Change) -> Change | None:
    return change.replace(phone="13812345678")


def unknown_column(change: Change) -> Change | None:
    return change.replace(no_such_column=1)


def explode(change: Change) -> Change | None:
    raise ValueError(f"bad row {change.values!r}")


def wrong_type(change: Change) -> Change | None:
    return dict(change.values)  # type: ignore[return-value]


def set_status(change: Change) -> Change | None:
    return change.replace(status=9)
