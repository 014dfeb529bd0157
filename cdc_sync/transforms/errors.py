"""Rule failures: per-row errors (dead-lettered) and compile-time problems."""

from __future__ import annotations

from cdc_sync.errors import RowLevelError


class RuleError(RowLevelError):
    """A row failed a rule. The message never holds a row value."""

    def __init__(self, rule: str, column: str | None, reason: str) -> None:
        self.rule = rule
        self.column = column
        self.reason = reason
        where = f"{rule}: {reason}" if column is None else f"column {column!r}: {rule}: {reason}"
        super().__init__(where)

    def __reduce__(self) -> tuple[type[RuleError], tuple[str, str | None, str]]:
        # The default reduce replays ``args`` (the message) into __init__, which takes three.
        return (RuleError, (self.rule, self.column, self.reason))


class Problem(Exception):
    """A compile-time problem; the compiler prefixes the key path and collects it."""
