"""What the table makers of both engines log (at WARNING) and refuse with, as messages."""

from __future__ import annotations

from cdc_sync import logs
from cdc_sync.errors import PermanentError
from cdc_sync.records import PgTypeName, TableId


def _warn(event: str, target: TableId, column: str, **fields: str) -> None:
    """A WARNING naming the target column the daemon altered or will not write as sent."""
    logs.get("cdc_sync.sinks").warning(event, target_table=str(target), column=column, **fields)


# A source ALTER that changes a column's type may rewrite every row's value without sending
# one change: after the type is settled, only a compare with the source finds those rows.
RETYPED_FIX = "cdc-sync verify -c <config> -p <pipeline> --table <source table> --repair"
RETYPED = (
    "; if a source ALTER changed the column's type, it may also have rewritten values it never "
    f"sent (a USING expression, rounding): after the fix, run {RETYPED_FIX}"
)


def widened(target: TableId, column: str, was: str, now: str) -> None:
    """Logged at WARNING: a DBA must see the daemon alter a target column (at a start it
    cannot tell a source ALTER from the DBA narrowing the target: it widens either way)."""
    _warn(
        "target_column_widened",
        target,
        column,
        from_type=was,
        to_type=now,
        why="the source column's type holds values the target column's type cannot; a source "
        "ALTER that changed it may also have rewritten values it never sent (a USING "
        "expression, rounding)",
        fix=RETYPED_FIX,
    )


def made_nullable(target: TableId, column: str, source_allows_null: bool = False) -> None:
    """Logged at WARNING: the daemon dropped a target column's NOT NULL (never values)."""
    _warn(
        "target_column_made_nullable",
        target,
        column,
        why=RELAXED_WHY
        if source_allows_null
        else "the column is NOT NULL without a default and the source table has no such "
        "column (dropped at the source, or one only the target has): rows written from now "
        "on leave it NULL, rows already there keep their values",
    )


RELAXED_WHY = (
    "the column is NOT NULL without a default and the source column allows NULL (its NOT NULL "
    "was dropped at the source, or only the target has it): the source's rows with NULL there "
    "would be refused; they are written as they are"
)


def added_without_backfill(target: TableId, column: str) -> None:
    """Logged at WARNING when a column is added to a target table that has rows: they get
    NULL in it, while the source's ALTER may have given its rows a value (a DEFAULT). Neither
    a Relation message nor a binlog table map carries the default, so it is not copied."""
    _warn(
        "target_column_added_without_backfill",
        target,
        column,
        why="rows already in the target table have NULL in the new column; if the source's "
        "ALTER gave its existing rows a value (ADD COLUMN ... DEFAULT, NOT NULL), they differ "
        "until each is updated",
        fix="cdc-sync verify -c <config> -p <pipeline> --table <source table> --repair",
    )


def missing_column_problem(
    target: TableId, column: str, in_key: bool, key: tuple[str, ...]
) -> str | None:
    """What stops rows into ``target`` whose ``column`` the source no longer sends and which
    needs a value: None for a plain column (its NOT NULL is dropped instead)."""
    if not in_key:
        return None
    return (
        f"target table {target}: column {column!r} is part of the target's primary key, but "
        f"the source table has no such column any more (dropped or renamed at the source?), "
        f"so no row can be written; the source's key is ({', '.join(key)}): give the target "
        "table that key (or map the table to a new target and re-snapshot it)"
    )


def missing_namespace(target: TableId, what: str) -> str:
    """``target``'s schema (PostgreSQL) or database (MySQL) does not exist: the daemon never
    creates one, the names of which may only be the source's (a table without ``target:``)."""
    return (
        f"target table {target}: the target has no {what} {target.schema!r}, and the daemon "
        f"does not create one; set the table's target: to a table in an existing {what} "
        f"(e.g. target: <{what}>.{target.name}), or create the {what} first"
    )


def no_key_index(
    target: TableId, key: tuple[str, ...], unique: list[list[str]], names: tuple[str, ...]
) -> PermanentError:
    """No unique index on exactly the source key; says so plainly when the target's key
    holds a column the source table no longer has (a key column dropped at the source)."""
    msg = (
        f"target table {target} has no primary key or unique index on exactly "
        f"({', '.join(key)}), the source key; changes cannot be applied by key"
    )
    for cols in unique:
        gone = [c for c in cols if c not in names]
        if gone:
            msg += (
                f". Its unique key ({', '.join(cols)}) holds "
                f"{', '.join(repr(c) for c in gone)}, which the source table no longer has "
                "(a key column dropped or renamed at the source): re-key the target table on "
                f"({', '.join(key)}), or map the table to a new target and re-snapshot it"
            )
            break
    return PermanentError(msg)


# Integer types by width, as format_type() spells them: a narrower one may be widened.


def generated_problem(target: TableId, column: str, how: str) -> str:
    """A source column whose target column is generated: the target refuses every value
    written into it (PostgreSQL 428C9, MySQL 3105 / MariaDB 1906), so no row could be
    written. Dropping the column from what is replicated lets the target compute it."""
    return (
        f"target table {target}: column {column!r} is a generated column in the target "
        f"({how}), which refuses the value the source sends for it; fix: add "
        f"`{column}: {{drop: true}}` under the table's columns: in the pipeline config (the "
        "target then computes it; `cdc-sync verify` compares it only if the source has it "
        "too), or make the target column a plain one"
    )


def identity_by_default(target: TableId, column: str) -> None:
    """Logged at WARNING: the daemon let an ALWAYS identity column take written values."""
    _warn(
        "target_identity_by_default",
        target,
        column,
        why="GENERATED ALWAYS refuses the source's values (only OVERRIDING SYSTEM VALUE "
        "inserts and no updates); BY DEFAULT takes them and still numbers rows inserted "
        "without one",
    )


def missing_pg_type(target: TableId, column: str, t: PgTypeName, ext_schema: str | None) -> str:
    """Why a PostgreSQL target cannot hold a column carried as its type's text (Kind.PG_TEXT):
    the type is not there, under the source's schema and name. ``ext_schema``: where the
    target has the type's extension, when it has it elsewhere."""
    head = (
        f"target table {target}: column {column!r} has the source's type {t.display}, which "
        f"the target database lacks ({t.schema}.{t.name}; its values are written as that "
        "type's text, also into a text column); fix, on the target: "
    )
    if t.extension and ext_schema:
        return (
            head + f"ALTER EXTENSION {t.extension} SET SCHEMA {t.schema}; (it is in schema "
            f"{ext_schema} there, in {t.schema} at the source), then restart"
        )
    if t.extension:
        return head + f"CREATE EXTENSION {t.extension} SCHEMA {t.schema}; then restart"
    if t.create:
        return head + f"{t.create} then restart"
    return head + "create the type as the source has it (pg_dump --schema-only), then restart"


def row_type_target(target: TableId, column: str, spelled: str) -> str:
    """A composite-typed target column for a source row type: written as text for now
    (``types.as_text``), which does not assign to a row type."""
    return (
        f"target table {target}: column {column!r} has the row type {spelled}; cdc-sync "
        "writes a composite source column's values as their text, into a text column, for "
        f"now; fix: ALTER TABLE {target} ALTER COLUMN {column} TYPE text; (or map the table "
        "to another target)"
    )


def inet_as_text(target: TableId, column: str, spelled: str) -> str:
    """An inet source column into a text target column: the writer sends inet values, and
    PostgreSQL's inet-to-text assignment (text(inet)) prints the netmask the source's text
    leaves out ('10.0.0.1' becomes '10.0.0.1/32'): not the source's text."""
    return (
        f"target table {target}: column {column!r} is {spelled}, but the source column is "
        "inet, whose cast to text adds a /32 netmask the source's text leaves out; fix: "
        f"ALTER TABLE {target} ALTER COLUMN {column} TYPE inet USING {column}::inet; (or map "
        "the table to another target)"
    )
