"""Typed, classified errors: transient (retry), permanent (stop), row-level (dead-letter)."""

from __future__ import annotations


class CdcSyncError(Exception):
    """Root of every error cdc-sync raises on purpose.

    Messages must never contain row values, DSNs with passwords or other secrets:
    they are logged and shown to operators as they are.
    """


class TransientError(CdcSyncError):
    """Worth retrying with backoff: connection lost, serialization failure, deadlock."""


class PermanentError(CdcSyncError):
    """Retrying cannot help: stop with a clear message naming the table, column or setting."""


class RowLevelError(CdcSyncError):
    """One row cannot be applied; the rest of the stream can (a rule or target refusal is
    dead-lettered; one raised while decoding the source stops the pipeline)."""


class ConfigError(PermanentError):
    """The configuration is invalid; ``problems`` holds one line per problem, key path first."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class PrerequisiteError(PermanentError):
    """A server-side prerequisite is missing; ``fix_sql`` tells the DBA what to run."""

    def __init__(self, message: str, fix_sql: str | None = None) -> None:
        self.fix_sql = fix_sql
        super().__init__(message if fix_sql is None else f"{message}\n  fix: {fix_sql}")


class UnsupportedTypeError(PermanentError):
    """A source column type cannot be mapped; names table, column and type."""

    def __init__(self, table: str, column: str, type_name: str) -> None:
        self.table, self.column, self.type_name = table, column, type_name
        super().__init__(
            f"table {table}: column {column!r} has type {type_name!r}, which cdc-sync cannot "
            "replicate; exclude the table or change the column type"
        )


class NoKeyError(PermanentError):
    """A configured table has no primary key / replica identity: never skipped silently."""


class FencedError(PermanentError):
    """Another daemon instance took over the pipeline; this one must not commit."""


class ShutdownRequested(CdcSyncError):
    """Raised inside the loop when a stop signal arrives while blocked."""
