"""Create or widen target tables (and their enum types) to hold a source table's rows."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import psycopg
import sqlalchemy as sa

from cdc_sync.errors import PermanentError
from cdc_sync.records import (
    Backfill,
    Column,
    ColumnType,
    Kind,
    PgTypeName,
    TableId,
    TableSchema,
)
from cdc_sync.sinks.sql.backfill import BackfillOf, pg_literal
from cdc_sync.sinks.sql.ddl_notes import (
    RETYPED,
    added_without_backfill,
    generated_problem,
    identity_by_default,
    inet_as_text,
    made_nullable,
    missing_column_problem,
    missing_namespace,
    missing_pg_type,
    no_key_index,
    row_type_target,
    widened,
)
from cdc_sync.sinks.sql.types import TypeMapper, as_text, enum_type_id, quote_ident
from cdc_sync.state.driver import psycopg_connection

_SCHEMA = sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :s")
# needs_value: a row written without a value for the column is refused (NOT NULL, and no
# default, identity or generation expression gives it one). in_pk: part of the primary key.
_COLUMNS = sa.text(
    """
    SELECT a.attname, a.atttypid::bigint, format_type(a.atttypid, a.atttypmod),
           a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = '',
           EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisprimary
                   AND a.attnum = ANY (i.indkey)),
           a.attidentity, a.attgenerated
    FROM pg_attribute a
    WHERE a.attrelid = to_regclass(:t) AND a.attnum > 0 AND NOT a.attisdropped
    ORDER BY a.attnum
    """
)

# Unique, non-partial, plain-column indexes: exactly what ON CONFLICT (key) can use.
_UNIQUE_KEYS = sa.text(
    """
    SELECT array_agg(a.attname::text ORDER BY a.attname)
    FROM pg_index i
    JOIN LATERAL unnest(i.indkey) AS k(attnum) ON true
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = to_regclass(:t) AND i.indisunique AND i.indpred IS NULL
      AND i.indexprs IS NULL
    GROUP BY i.indexrelid
    """
)

# Key columns whose collation is nondeterministic (ICU, deterministic = false): equal keys
# there need not be equal bytes, e.g. 'ABC' = 'abc' under a case-insensitive collation.
_LOOSE_KEYS = sa.text(
    """
    SELECT a.attname, c.collname, format_type(a.atttypid, a.atttypmod)
    FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation
    WHERE a.attrelid = to_regclass(:t) AND a.attname = ANY(:keys) AND NOT c.collisdeterministic
    """
)
_TYPE_OID = sa.text("SELECT to_regtype(:n)::oid::bigint")
_EXTENSION_SCHEMA = sa.text(
    "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = :x"
)
_ENUM_LABELS = sa.text(
    "SELECT enumlabel FROM pg_enum WHERE enumtypid = to_regtype(:n) ORDER BY enumsortorder"
)

_STRING_KINDS = frozenset({Kind.TEXT, Kind.VARCHAR, Kind.CHAR})
# A DBA's target column types a PG_TEXT value may go into (I/O conversion on assignment)
_TEXT_TARGETS, _INET = ("text", "character varying"), PgTypeName("pg_catalog", "inet")


_WIDER_INT = {"smallint": 0, "integer": 1, "bigint": 2, "numeric": 3}
# Decimal digits every value of a source integer type needs, by its target base name
# ("numeric": a MySQL BIGINT UNSIGNED, up to 18446744073709551615).
_SOURCE_DIGITS = {"smallint": 5, "integer": 10, "bigint": 19, "numeric": 20}
_INT_KINDS = frozenset(
    {Kind.TINYINT, Kind.SMALLINT, Kind.MEDIUMINT, Kind.INTEGER, Kind.BIGINT, Kind.YEAR}
)
_NUMERIC = re.compile(r"^numeric(?:\((\d+),(\d+)\))?$")
_MODS = re.compile(r"\((\d+)(?:,(\d+))?\)")


def _target_digits(spelled: str) -> int | None:
    """Integer digits every value of an existing integer or numeric column may have."""
    if spelled in ("smallint", "integer", "bigint"):
        return _SOURCE_DIGITS[spelled]
    m = _NUMERIC.match(spelled)
    if m is None:
        return None
    return 1 << 20 if m.group(1) is None else int(m.group(1)) - int(m.group(2))


def _holds_ints(ct: ColumnType, base: str, spelled: str) -> bool:
    """An integer source column into an existing integer / numeric column at least as wide
    (a bigint the daemon widened it to for a later source type, or a DBA's numeric(20,0)):
    every value fits exactly. As for varchar length and numeric precision, a wider target
    is fine; only a narrower one is widened."""
    if ct.array_dims or ct.kind not in _INT_KINDS or base not in _SOURCE_DIGITS:
        return False
    have = _target_digits(spelled)
    return have is not None and have >= _SOURCE_DIGITS[base]


def _needs_widening(ct: ColumnType, spelled: str) -> bool:
    """Same base type, but the source's modifiers now admit values the target's do not."""
    if ct.array_dims:
        return False
    m = _MODS.search(spelled)
    if ct.kind in (Kind.VARCHAR, Kind.CHAR):
        return m is not None and (ct.length is None or ct.length > int(m.group(1)))
    if ct.kind is Kind.NUMERIC:
        if m is None:
            return False  # unconstrained numeric holds everything
        p, s = int(m.group(1)), int(m.group(2) or 0)
        if ct.precision is None:
            return True
        scale = ct.scale or 0
        return ct.precision - scale > p - s or scale > s
    if ct.kind in (Kind.TIME, Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
        have = int(m.group(1)) if m else 6
        return (ct.precision if ct.precision is not None else 6) > have
    return False


def _holding_ints(ct: ColumnType, spelled: str) -> ColumnType | None:
    """A source column now numeric(p,s) (or numeric) over a target integer column: the
    numeric type holding both, as a MariaDB target merges them (integer digits of either,
    the source's scale); None for any other pair."""
    digits = _SOURCE_DIGITS.get(spelled) if spelled != "numeric" else None
    if digits is None or ct.kind is not Kind.NUMERIC or ct.array_dims:
        return None
    if ct.precision is None:
        return ct  # unconstrained numeric holds every integer
    scale = ct.scale or 0
    return dataclasses.replace(ct, precision=max(digits, ct.precision - scale) + scale)


def _merged(ct: ColumnType, spelled: str) -> ColumnType:
    """The source's new type, keeping whatever the target already admits beyond it (numeric
    (12,4) widened for a source numeric(14,2) becomes numeric(14,4), never loses scale)."""
    m = _MODS.search(spelled)
    if ct.kind is not Kind.NUMERIC or m is None or ct.precision is None:
        return ct
    p, s = int(m.group(1)), int(m.group(2) or 0)
    scale = max(s, ct.scale or 0)
    return dataclasses.replace(
        ct, precision=max(p - s, ct.precision - (ct.scale or 0)) + scale, scale=scale
    )


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _qualified(t: TableId) -> str:
    return f"{quote_ident(t.schema)}.{quote_ident(t.name)}"


@dataclass(frozen=True)
class _Existing:
    typid: int
    spelled: str  # format_type(), for messages
    needs_value: bool  # NOT NULL without a default, identity or generation expression
    in_pk: bool
    identity: str = ""  # pg_attribute.attidentity: 'a' ALWAYS, 'd' BY DEFAULT
    generated: bool = False  # GENERATED ALWAYS AS (expression) STORED


class TableMaker:
    """Runs inside the caller's transaction (the runtime's), so a new table or column commits
    together with the first rows written to it, or not at all."""

    def __init__(self, types: TypeMapper, create_tables: bool) -> None:
        self.types = types
        self.create_tables = create_tables

    def ensure(
        self,
        conn: sa.Connection,
        schema: TableSchema,
        target: TableId,
        backfill: BackfillOf | None = None,
        *,
        relax: frozenset[str] = frozenset(),
    ) -> None:
        qualified = _qualified(target)
        # First: PostgreSQL 15's to_regclass fails on a schema that does not exist.
        if conn.execute(_SCHEMA, {"s": target.schema}).first() is None:
            raise PermanentError(missing_namespace(target, "schema"))
        existing = {
            name: _Existing(int(oid), spelled, bool(needs), bool(in_pk), ident, gen != "")
            for name, oid, spelled, needs, in_pk, ident, gen in conn.execute(
                _COLUMNS, {"t": qualified}
            )
        }
        for col in schema.columns:
            if col.type.kind is Kind.ENUM:
                self._ensure_enum(conn, col.type, target)
            elif col.type.kind is Kind.PG_TEXT:
                self._check_pg_type(conn, col, target)
        if not existing:
            if not self.create_tables:
                raise PermanentError(
                    f"target table {target} does not exist and create_tables is off; "
                    "create it or turn create_tables on"
                )
            self._create(conn, schema, target)
            return
        self._check_key(conn, schema, target, qualified)
        for col in schema.columns:
            have = existing.get(col.name)
            if have is None:
                self._add_column(conn, col, target, backfill(col.name) if backfill else None)
                continue
            if have.generated:
                raise PermanentError(generated_problem(target, col.name, "GENERATED … STORED"))
            if have.identity == "a":
                self._by_default(conn, target, col.name)
            self._check_type(conn, col, have, target)
        relaxed = relax - set(schema.key)  # the source's NOT NULL just dropped
        for name, have in existing.items():
            if have.needs_value and (name not in schema.names or name in relaxed):
                self._make_nullable(conn, schema, target, name, have, name in relaxed)

    def _make_nullable(  # noqa: PLR0917
        self,
        conn: sa.Connection,
        schema: TableSchema,
        target: TableId,
        name: str,
        have: _Existing,
        relaxed: bool = False,
    ) -> None:
        """A NOT NULL column without a default that the source no longer sends (dropped at
        the source, or never there: a DBA's column): every insert or update would be refused
        (and become a dead letter). The README's promise is that such a column stays, NULL in
        new rows; so its NOT NULL goes, logged at WARNING. Never for a primary key column."""
        problem = None if relaxed else missing_column_problem(target, name, have.in_pk, schema.key)
        if problem is not None:
            raise PermanentError(problem)
        self._ddl(
            conn,
            target,
            f"ALTER TABLE {_qualified(target)} ALTER COLUMN {quote_ident(name)} DROP NOT NULL",
            f"column {name!r} is NOT NULL without a default and the source "
            + ("column allows NULL" if relaxed else "table no longer has it")
            + ", so rows would be refused",
        )
        made_nullable(target, name, relaxed)

    def _by_default(self, conn: sa.Connection, target: TableId, name: str) -> None:
        """A pre-made target (e.g. from the source's pg_dump) with an ALWAYS identity the
        source writes: PostgreSQL's own apply bypasses ALWAYS; our INSERTs and UPDATEs
        cannot, so the column becomes BY DEFAULT, logged at WARNING like a widening."""
        self._ddl(
            conn,
            target,
            f"ALTER TABLE {_qualified(target)} ALTER COLUMN {quote_ident(name)} "
            "SET GENERATED BY DEFAULT",
            f"column {name!r} is GENERATED ALWAYS AS IDENTITY, which refuses the values the "
            "source sends",
        )
        identity_by_default(target, name)

    def _ddl(self, conn: sa.Connection, target: TableId, sql: str, why: str) -> None:
        """Run ``sql``; without the privilege (ALTER TABLE needs ownership of the table), stop
        with the statement for the DBA to run."""
        try:
            # exec_driver_sql: no bind-parameter parsing, so ':' or '%' in names are harmless.
            conn.exec_driver_sql(sql)
        except sa.exc.DBAPIError as e:
            if getattr(e.orig, "sqlstate", None) != "42501":
                raise
            primary = getattr(getattr(e.orig, "diag", None), "message_primary", None)
            raise PermanentError(
                f"target table {target}: {primary or 'permission denied'} (SQLSTATE 42501); "
                f"{why}. Run as the table's owner: {sql}; then restart"
            ) from None

    def _create(self, conn: sa.Connection, schema: TableSchema, target: TableId) -> None:
        keys = set(schema.key)
        cols = [
            sa.Column(
                c.name,
                self.types.column_type(c.type, target, c.name),
                nullable=c.nullable and c.name not in keys,
            )
            for c in schema.columns
        ]
        table = sa.Table(
            target.name,
            sa.MetaData(),
            *cols,
            sa.PrimaryKeyConstraint(*schema.key),
            schema=target.schema,
        )
        table.create(conn)

    def _add_column(
        self, conn: sa.Connection, col: Column, target: TableId, fill: Backfill | None
    ) -> None:
        # Added as nullable even when the source column is NOT NULL: the target's existing
        # rows may have no value for it (when the source's default is unknown).
        spec = self.types.column_type(col.type, target, col.name).compile(dialect=conn.dialect)
        qualified = _qualified(target)
        name = quote_ident(col.name)
        literal = None if fill is None or fill.value is None else pg_literal(conn, col, fill.value)
        # A constant DEFAULT gives the rows already there the source's value without
        # rewriting the table. Kept: the stream may still send inserts from before the ALTER
        # (the daemon was stopped), without the column, and the source gave those rows the
        # default too; rows written later carry their own values.
        add = f"ALTER TABLE {qualified} ADD COLUMN IF NOT EXISTS {name} {spec}"
        why = f"the source table has a column {col.name!r} the target table lacks"
        if literal is not None:
            raw = psycopg_connection(conn)
            try:
                # A literal the column refuses (or no privilege: _ddl below says so): the
                # column is added without it. On the driver: a '%' in it is no placeholder.
                with conn.begin_nested():
                    assert raw is not None  # pg_literal found it
                    raw.execute(f"{add} DEFAULT {literal}".encode())
            except (sa.exc.DBAPIError, psycopg.Error):
                literal = None
        if literal is None:
            self._ddl(conn, target, add, why)
        unknown = fill is None or (fill.value is not None and literal is None)
        if unknown and conn.exec_driver_sql(f"SELECT EXISTS (SELECT FROM {qualified})").scalar():
            added_without_backfill(target, col.name)

    def _check_type(
        self, conn: sa.Connection, col: Column, have: _Existing, target: TableId
    ) -> None:
        base = self.types.base_name(col.type, target)
        want = conn.execute(_TYPE_OID, {"n": base}).scalar()
        if want is not None and int(want) == have.typid:
            if _needs_widening(col.type, have.spelled):
                merged = Column(col.name, _merged(col.type, have.spelled))
                self._alter_type(conn, merged, target, have.spelled)
            return
        if col.type.kind in _STRING_KINDS and not col.type.array_dims and have.spelled == "text":
            return  # any string fits losslessly into text
        if col.type.kind is Kind.PG_TEXT and have.spelled.startswith(_TEXT_TARGETS):
            if col.type.pg_type == _INET:  # its cast to text adds a /32 the source never sent
                raise PermanentError(inet_as_text(target, col.name, have.spelled))
            return  # the type's text (a varchar(n) too short for a value refuses that row)
        if as_text(col.type):
            raise PermanentError(row_type_target(target, col.name, have.spelled))
        if _holds_ints(col.type, base, have.spelled):
            return
        if (num := _holding_ints(col.type, have.spelled)) is not None:
            # int -> numeric(p,s) at the source: the target keeps its integers' digits.
            self._alter_type(conn, Column(col.name, num), target, have.spelled)
            return
        if (
            not col.type.array_dims
            and _WIDER_INT.get(have.spelled, -1) >= 0
            and (_WIDER_INT.get(base, -1) > _WIDER_INT[have.spelled])
        ):
            # MODIFY COLUMN int -> bigint at the source: every old value fits the new type.
            self._alter_type(conn, col, target, have.spelled)
            return
        raise PermanentError(
            f"target table {target}: column {col.name!r} has type {have.spelled}, but the "
            f"source column is {col.type.source_name or base}; alter the target column or "
            f"map the table to another target{RETYPED}"
        )

    def _alter_type(self, conn: sa.Connection, col: Column, target: TableId, was: str) -> None:
        """Widen a column the source widened (varchar(20) -> varchar(40), int -> bigint…):
        rows written after the source's ALTER would not fit otherwise. Never narrows."""
        spec = self.types.column_type(col.type, target, col.name).compile(dialect=conn.dialect)
        name, qualified = quote_ident(col.name), _qualified(target)
        self._ddl(
            conn,
            target,
            f"ALTER TABLE {qualified} ALTER COLUMN {name} TYPE {spec} USING {name}::{spec}",
            f"column {col.name!r} is {was}, narrower than the source column's type",
        )
        widened(target, col.name, was, spec)

    def _check_key(
        self, conn: sa.Connection, schema: TableSchema, target: TableId, qualified: str
    ) -> None:
        loose = conn.execute(_LOOSE_KEYS, {"t": qualified, "keys": list(schema.key)}).first()
        if loose is not None:
            name, coll, spelled = loose
            raise PermanentError(
                f"target table {target}: key column {name!r} uses the nondeterministic "
                f"collation {coll}, under which keys that differ only in case or accents are "
                "one row; the source tells them apart, so their rows would overwrite each "
                f"other. Fix: ALTER TABLE {qualified} ALTER COLUMN {quote_ident(name)} TYPE "
                f'{spelled} COLLATE "C"; (or let cdc-sync create the table)'
            )
        want = sorted(schema.key)
        unique = [list(cols) for (cols,) in conn.execute(_UNIQUE_KEYS, {"t": qualified})]
        if any(sorted(cols) == want for cols in unique):
            return
        raise no_key_index(target, schema.key, unique, schema.names)

    def _check_pg_type(self, conn: sa.Connection, col: Column, target: TableId) -> None:
        """The type must exist in the target (the writer casts to it); never created here."""
        t, base = col.type.pg_type, self.types.base_name(col.type.element(), target)
        if t is None or t.composite or conn.execute(_TYPE_OID, {"n": base}).scalar():
            return  # a row type goes in as text (types.as_text)
        ext = conn.execute(_EXTENSION_SCHEMA, {"x": t.extension}).scalar() if t.extension else ""
        raise PermanentError(missing_pg_type(target, col.name, t, str(ext or "") or None))

    def _ensure_enum(self, conn: sa.Connection, ct: ColumnType, target: TableId) -> None:
        tid = enum_type_id(ct, target)
        name = _qualified(tid)
        have = [r[0] for r in conn.execute(_ENUM_LABELS, {"n": name})]
        if not have:
            exists = conn.execute(_TYPE_OID, {"n": name}).scalar()
            if exists is not None:
                raise PermanentError(
                    f"target type {tid} exists but is not an enum; the source enum "
                    f"{ct.enum_name} cannot be mapped to it"
                )
            labels = ", ".join(_literal(lb) for lb in ct.enum_labels)
            conn.exec_driver_sql(f"CREATE TYPE {name} AS ENUM ({labels})")
            return
        missing = [lb for lb in ct.enum_labels if lb not in have]
        if not missing:
            return
        # A label added by ALTER TYPE … ADD VALUE cannot be used in the transaction that
        # added it (SQLSTATE 55P04), and the rows needing it are about to be written in the
        # caller's transaction. So labels are added in a short transaction of their own and
        # committed at once; an extra enum label is harmless if the batch later rolls back.
        with conn.engine.connect() as side:
            for i, lb in enumerate(ct.enum_labels):
                if lb not in missing:
                    continue
                # Keep the source's order: labels before this one exist by now.
                where = (
                    f" AFTER {_literal(ct.enum_labels[i - 1])}"
                    if i
                    else f" BEFORE {_literal(have[0])}"
                )
                side.exec_driver_sql(
                    f"ALTER TYPE {name} ADD VALUE IF NOT EXISTS {_literal(lb)}{where}"
                )
                have.append(lb)
            side.commit()
