"""Collations of MySQL / MariaDB target key columns: which keys the target holds as one row."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from cdc_sync import logs
from cdc_sync.errors import PermanentError
from cdc_sync.records import Kind, TableId, TableSchema
from cdc_sync.sinks.sql.mysql import qualified_mysql, quote_mysql

# PG_TEXT too (a PostgreSQL type's text form): an exact collation keeps apart any two texts
# the source may hold as two keys
_STRING_KINDS = frozenset({Kind.TEXT, Kind.VARCHAR, Kind.CHAR, Kind.PG_TEXT})
# Binary and NO PAD, so equal keys are equal bytes: MariaDB's utf8mb4_nopad_bin, MySQL 8's
# utf8mb4_0900_bin. Every other *_bin is PAD SPACE: 'abc' and 'abc ' are one key there.
_NOPAD = ("utf8mb4_nopad_bin", "utf8mb4_0900_bin")
_FALLBACK = "utf8mb4_bin"  # MySQL 5.7 has no NO PAD collation
_COLLATIONS = sa.text(
    "SELECT COLLATION_NAME FROM information_schema.COLLATIONS WHERE COLLATION_NAME IN :names"
).bindparams(sa.bindparam("names", expanding=True))


def charset_of(collation: str) -> str:
    return collation.split("_", 1)[0]


def exact_collation(conn: sa.Connection) -> str:
    """The collation of the tables the sink creates: binary and NO PAD where the server has
    one, so that no two source keys can become one target row."""
    have = set(conn.execute(_COLLATIONS, {"names": list(_NOPAD)}).scalars())
    return next((c for c in _NOPAD if c in have), _FALLBACK)


def _exact(collation: str | None) -> bool:
    return (
        collation is None
        or collation == "binary"
        or collation.endswith(("_nopad_bin", "_0900_bin"))
    )


def _pads(collation: str | None) -> bool:
    """PAD SPACE: trailing spaces do not count (MySQL 8's 0900 collations and MariaDB's
    *_nopad_* are NO PAD; binary compares bytes)."""
    return (
        collation is not None
        and collation != "binary"
        and not any(m in collation for m in ("_nopad_", "_0900_"))
    )


@dataclass(frozen=True)
class ExistingColumn:
    """A target column as information_schema shows it."""

    data_type: str
    column_type: str
    nullable: bool
    collation: str | None  # text columns only
    # A row written without a value for it is refused: NOT NULL, and no default,
    # AUTO_INCREMENT or generation expression gives it one (strict sql_mode: error 1364).
    needs_value: bool = False
    in_pk: bool = False
    comment: str = ""
    generated: str = ""  # "VIRTUAL GENERATED" etc. for a generated column, else ""

    def keep_collation(self) -> str:
        """A MODIFY without these clauses would take the table's default collation: a key
        column a DBA made binary in a *_ci table would silently become *_ci again."""
        if self.collation is None:
            return ""
        return f" CHARACTER SET {charset_of(self.collation)} COLLATE {self.collation}"

    def keep_comment(self) -> str:
        """A MODIFY without it drops the column's COMMENT."""
        if not self.comment:
            return ""
        text = self.comment.replace("\\", "\\\\").replace("'", "''")
        return f" COMMENT '{text}'"


def check_key_collations(
    schema: TableSchema, existing: dict[str, ExistingColumn], target: TableId, exact: str
) -> None:
    """Refuse a text key column whose collation holds as one key values the source holds
    apart ('ABC' and 'abc' under *_ci): their rows would overwrite each other in the target,
    silently. Fine when the source compares the same way. A binary PAD SPACE key (*_bin, as
    earlier cdc-sync versions made them) merges only keys that differ in trailing spaces: a
    WARNING with the fix, since refusing would stop every pipeline into such a table.
    ``exact``: the server's binary NO PAD collation (:func:`exact_collation`), for the fix."""
    for name in schema.key:
        have, src = existing.get(name), schema.column(name).type
        if have is None or src.kind not in _STRING_KINDS or _exact(have.collation):
            continue
        coll = have.collation
        assert coll is not None
        pad_bin = coll.endswith("_bin")
        if src.collation == coll or (pad_bin and _pads(src.collation)):
            continue  # whatever the target holds as one key, the source does too
        fix = (
            f"ALTER TABLE {qualified_mysql(target)} MODIFY {quote_mysql(name)} "
            f"{have.column_type} CHARACTER SET {charset_of(exact)} COLLATE {exact} "
            f"{'NULL' if have.nullable else 'NOT NULL'};"
        )
        source = f"the source's {src.collation}" if src.collation else "the source"
        if pad_bin:
            logs.get("cdc_sync.sinks").warning(
                "target_key_ignores_trailing_spaces",
                target_table=str(target),
                column=name,
                collation=coll,
                why=f"keys that differ only in trailing spaces are one row here, not in {source}",
                fix=fix,
            )
            continue
        raise PermanentError(
            f"target table {target}: key column {name!r} uses collation {coll}, under which "
            f"keys that differ only in case or accents are one row, but {source} tells them "
            f"apart: their rows would overwrite each other. Fix: {fix} "
            "(or let cdc-sync create the table)"
        )
