"""Create or widen MySQL / MariaDB target tables; DDL only where it cannot commit data."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import pymysql
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.schema import CreateTable

from cdc_sync import logs
from cdc_sync.errors import PermanentError
from cdc_sync.records import Column, Kind, TableId, TableSchema
from cdc_sync.sinks.sql.backfill import BackfillOf, my_literal
from cdc_sync.sinks.sql.ddl_notes import (
    RETYPED,
    added_without_backfill,
    generated_problem,
    made_nullable,
    missing_column_problem,
    missing_namespace,
    no_key_index,
    widened,
)
from cdc_sync.sinks.sql.errors import mysql_errno
from cdc_sync.sinks.sql.mysql import qualified_mysql, quote_mysql
from cdc_sync.sinks.sql.mysql_collation import (
    ExistingColumn,
    check_key_collations,
    exact_collation,
)
from cdc_sync.sinks.sql.mysql_labels import labels, merged_labels
from cdc_sync.sinks.sql.mysql_merge import TooWide, merged_number
from cdc_sync.sinks.sql.mysql_types import MySqlTypes, key_budgets

_COLUMNS = sa.text(
    "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, COLLATION_NAME, "
    "COLUMN_DEFAULT, EXTRA, COLUMN_KEY, COLUMN_COMMENT "
    "FROM information_schema.COLUMNS "
    "WHERE TABLE_SCHEMA = :s AND TABLE_NAME = :t ORDER BY ORDINAL_POSITION"
)
_HAS_ROWS = "SELECT 1 FROM {} LIMIT 1"
# Unique indexes on whole columns (no prefix length): what ON DUPLICATE KEY can rely on.
_UNIQUE = sa.text(
    "SELECT INDEX_NAME, COLUMN_NAME, SUB_PART FROM information_schema.STATISTICS "
    "WHERE TABLE_SCHEMA = :s AND TABLE_NAME = :t AND NON_UNIQUE = 0"
)
_SCHEMA = sa.text("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :s")
_INT_WIDTH = re.compile(r"^(tinyint|smallint|mediumint|int|bigint|year)\(\d+\)")
_STRING_KINDS = frozenset({Kind.TEXT, Kind.VARCHAR, Kind.CHAR, Kind.PG_TEXT})
_DIALECT = mysql.dialect()
_GENERATED = re.compile(r"\b(virtual|stored|persistent)\b")


def _ident(name: str) -> str:
    """A quoted identifier for a statement run by exec_driver_sql: PyMySQL %-formats it, so
    '%' is doubled, as SQLAlchemy's compiler does in the types and tables it renders."""
    return quote_mysql(name).replace("%", "%%")


def _table(t: TableId) -> str:
    return qualified_mysql(t).replace("%", "%%")


class UncommittedWorkError(PermanentError):
    """DDL was needed while the connection had a transaction open: MySQL would commit it."""


def _existing(row: Sequence[object]) -> ExistingColumn:
    """A row of ``_COLUMNS`` (after the name)."""
    dt, ct, nullable, coll, default, extra, key, comment = row
    # EXTRA: "auto_increment", "VIRTUAL GENERATED" / "STORED GENERATED" (MySQL), "VIRTUAL" /
    # "PERSISTENT" (MariaDB): the server fills the column. A NOT NULL column's COLUMN_DEFAULT
    # is NULL exactly when it has no default.
    extra_ = str(extra or "").lower()
    filled = any(w in extra_ for w in ("auto_increment", "virtual", "stored", "persistent",
                                       "generated"))  # fmt: skip
    return ExistingColumn(
        str(dt).lower(),
        str(ct),
        nullable == "YES",
        str(coll) if coll else None,
        needs_value=nullable != "YES" and default is None and not filled,
        in_pk=key == "PRI",
        comment=str(comment or ""),
        # Not MySQL 8's DEFAULT_GENERATED: that is an expression default, written freely.
        generated=str(extra) if _GENERATED.search(extra_) else "",
    )


@dataclass
class _Plan:
    """The DDL a table needs, in order, and what to log once it has run."""

    ddl: list[str] = field(default_factory=list)
    widening: list[tuple[str, str, str]] = field(default_factory=list)  # column, was, now
    added: list[str] = field(default_factory=list)  # columns added to a table with rows
    nullable: list[str] = field(default_factory=list)  # columns whose NOT NULL is dropped
    relaxed: list[str] = field(default_factory=list)  # of those: the source's allows NULL
    why: dict[str, str] = field(default_factory=dict)  # statement -> why it is needed
    padded: list[tuple[str, str, str]] = field(default_factory=list)  # column, target, source


def _normal(spelled: str) -> str:
    """One spelling for a type from SQLAlchemy's compiler and from information_schema:
    integer display widths dropped (MariaDB shows int(11)), labels kept as they are."""
    base, paren, rest = spelled.partition("(")
    base = base.strip().lower()
    if base in ("enum", "set"):
        return f"{base}({rest}"
    text = (base + paren + rest).lower().replace(", ", ",")
    return _INT_WIDTH.sub(r"\1", text).replace("integer", "int")


_RANKS = {
    "tinyint": 0, "smallint": 1, "mediumint": 2, "int": 3, "bigint": 4,
    "tinytext": 10, "text": 11, "mediumtext": 12, "longtext": 13,
    "tinyblob": 20, "blob": 21, "mediumblob": 22, "longblob": 23,
}  # fmt: skip
# Decimal digits of the largest value of each integer type (BIGINT UNSIGNED: one more).
_INT_DIGITS = {"tinyint": 3, "smallint": 5, "mediumint": 8, "int": 10, "bigint": 19}
_SIZED = re.compile(r"^([a-z]+)(?:\((\d+)(?:,(\d+))?\))?( unsigned)?$")
_BYTE_STRINGS = ("binary", "varbinary")


def _holds_bytes(big: str, m: int, small: str, n: int) -> bool:
    """VARBINARY(m) holds any n <= m bytes; BINARY(m) pads a shorter value with zero bytes,
    so it holds exactly only values of its own length: those of BINARY(m) itself."""
    if big == "varbinary":
        return m >= n
    return small == "binary" and m == n


def _pads(want: str, got: str) -> bool:
    """True when the source widened to BINARY(m) from a shorter (VAR)BINARY(n): its ALTER
    padded its rows with zero bytes to m, and a MODIFY pads the target's rows alike."""
    a, b = _SIZED.match(want), _SIZED.match(got)
    if a is None or b is None or a.group(1) != "binary" or b.group(1) not in _BYTE_STRINGS:
        return False
    return int(a.group(2) or 0) > int(b.group(2) or 0)


def _holds(big: str, small: str) -> bool | None:
    """True when every value of type ``small`` fits type ``big`` (normal spellings), False
    when not, None when the two are not comparable (different families)."""
    a, b = _SIZED.match(big), _SIZED.match(small)
    if a is None or b is None:
        return None
    ta, tb = a.group(1), b.group(1)
    if ta in _RANKS and tb in _RANKS and _RANKS[ta] // 10 == _RANKS[tb] // 10:
        if _RANKS[ta] < 10:  # integers: signedness matters
            ua, ub = bool(a.group(4)), bool(b.group(4))
            if ua and not ub:
                return False
            return _RANKS[ta] > _RANKS[tb] or (_RANKS[ta] == _RANKS[tb] and ua == ub)
        return _RANKS[ta] >= _RANKS[tb]
    if ta in _BYTE_STRINGS and tb in _BYTE_STRINGS:
        return _holds_bytes(ta, int(a.group(2) or 0), tb, int(b.group(2) or 0))
    if ta == "decimal" and tb in _INT_DIGITS:
        # An integer into a DBA's DECIMAL(p,s) with p - s digits enough (as on PostgreSQL
        # targets); an unsigned DECIMAL takes only unsigned integers.
        digits = _INT_DIGITS[tb] + (1 if tb == "bigint" and b.group(4) else 0)
        whole = int(a.group(2) or 10) - int(a.group(3) or 0)
        return whole >= digits and (not a.group(4) or bool(b.group(4)))
    if ta != tb or a.group(4) != b.group(4):
        return None
    if ta == "decimal":
        pa, sa_, pb, sb = (int(x or 0) for x in (a.group(2), a.group(3), b.group(2), b.group(3)))
        return pa - sa_ >= pb - sb and sa_ >= sb
    if ta in ("varchar", "char", "datetime", "time", "timestamp", "bit"):
        return int(a.group(2) or 0) >= int(b.group(2) or 0)
    return None


def _relabelled(col: Column, have: ExistingColumn) -> Column | None:
    """``col`` as the target needs it: an ENUM / SET into one of the same kind gets the labels
    ``merged_labels`` says (None: the target holds every source value already, so rows the
    source wrote before it dropped or added labels replay too); any other column as it is."""
    kind = col.type.kind
    if kind not in (Kind.ENUM, Kind.SET) or have.data_type != kind.value:
        return col
    merged = merged_labels(col.type.enum_labels, labels(have.column_type))
    if merged is None:
        return None
    return dataclasses.replace(col, type=dataclasses.replace(col.type, enum_labels=merged))


class MySqlTableMaker:
    """Plans the DDL a table needs by reading information_schema (no DDL on the way), then
    runs it only when the caller's connection has no transaction open: DDL in MySQL commits
    the open transaction implicitly, which would split rows, audit and checkpoint apart."""

    def __init__(self, create_tables: bool) -> None:
        self.types = MySqlTypes()
        self.create_tables = create_tables
        self._collation: str | None = None

    def _table_collation(self, conn: sa.Connection) -> str:
        if self._collation is None:
            self._collation = exact_collation(conn)
        return self._collation

    def ensure(
        self,
        conn: sa.Connection,
        schema: TableSchema,
        target: TableId,
        backfill: BackfillOf | None = None,
        *,
        relax: frozenset[str] = frozenset(),
    ) -> None:
        was_open = conn.in_transaction()
        p = self._plan(conn, schema, target, backfill, relax)
        for column, have, source in p.padded:
            logs.get("cdc_sync.sinks").warning(
                "target_column_pads_binary",
                target_table=str(target),
                column=column,
                target_type=have,
                source_type=source,
                why="the source's shorter binary values are padded with zero bytes in the "
                "target: as the source's own ALTER padded them when it widened the column "
                "(rows from before it, replayed), else they differ from the source's (verify "
                "reports them)",
            )
        if not p.ddl:
            return
        if was_open:
            raise UncommittedWorkError(
                f"target table {target} needs DDL, which on MySQL / MariaDB commits the open "
                "transaction; commit (or roll back) before ensure_table"
            )
        if conn.execute(sa.text("SELECT @@explicit_defaults_for_timestamp")).scalar() == 0:
            # Else a NOT NULL TIMESTAMP column would get DEFAULT / ON UPDATE CURRENT_TIMESTAMP
            # and rows written without it would silently take the current time.
            conn.exec_driver_sql("SET SESSION explicit_defaults_for_timestamp = 1")
        for statement in p.ddl:
            try:
                conn.exec_driver_sql(statement)
            except (sa.exc.DBAPIError, pymysql.MySQLError) as e:
                orig = e.orig if isinstance(e, sa.exc.DBAPIError) else e
                errno = mysql_errno(orig) if orig is not None else None
                if errno not in (1142, 1143):
                    raise
                # ALTER command denied: say which statement the DBA should run instead.
                run = statement.replace("%%", "%")  # as a client would send it
                raise PermanentError(
                    f"target table {target}: the daemon's user may not alter it (MySQL error "
                    f"{errno}); {p.why.get(statement, 'the source table changed')}. Run: "
                    f"{run}; (or GRANT ALTER ON {qualified_mysql(target)} to the daemon's "
                    "user), then restart"
                ) from None
        conn.commit()  # DDL has committed already; this realigns SQLAlchemy's state
        for column, was, now in p.widening:
            widened(target, column, was, now)
        for column in p.added:
            added_without_backfill(target, column)
        for column in p.nullable:
            made_nullable(target, column, column in p.relaxed)

    def plan(
        self,
        conn: sa.Connection,
        schema: TableSchema,
        target: TableId,
        relax: frozenset[str] = frozenset(),
    ) -> list[str]:
        """The DDL statements ``target`` needs ([] when none); PermanentError on conflicts."""
        return self._plan(conn, schema, target, relax=relax).ddl

    def _plan(
        self,
        conn: sa.Connection,
        schema: TableSchema,
        target: TableId,
        backfill: BackfillOf | None = None,
        relax: frozenset[str] = frozenset(),
    ) -> _Plan:
        """``plan``'s statements, and what they change (logged once the DDL has run)."""
        where = {"s": target.schema, "t": target.name}
        existing = {str(r[0]): _existing(tuple(r[1:])) for r in conn.execute(_COLUMNS, where)}
        if not existing:
            if not self.create_tables:
                raise PermanentError(
                    f"target table {target} does not exist and create_tables is off; "
                    "create it or turn create_tables on"
                )
            if conn.execute(_SCHEMA, {"s": target.schema}).first() is None:
                # Never made here: a database outside the DSN's, which nobody named (a table
                # entry without target: keeps the source's schema.table), is a surprise.
                raise PermanentError(missing_namespace(target, "database"))
            return _Plan([self._create(conn, schema, target)])
        self._check_key(conn, schema, target)
        check_key_collations(schema, existing, target, self._table_collation(conn))
        keys = key_budgets(schema)
        alter: list[str] = []
        p = _Plan()
        for source_col in schema.columns:
            have = existing.get(source_col.name)
            if have is not None and have.generated:
                raise PermanentError(generated_problem(target, source_col.name, have.generated))
            col = source_col if have is None else _relabelled(source_col, have)
            if col is None:
                continue  # an ENUM / SET with every source label already
            spec = self._spec(col, target, keys.get(col.name))
            if have is None:
                # Nullable even when the source column is NOT NULL: existing target rows may
                # have no value for it (when the source's default is unknown). A known one
                # is its DEFAULT (kept: inserts from before the ALTER may still come).
                fill = backfill(col.name) if backfill else None
                value = None if fill is None else fill.value
                literal = None if value is None else my_literal(conn, col, value)
                default = "" if literal is None else f" DEFAULT {literal}"
                alter.append(f"ADD COLUMN {_ident(col.name)} {spec} NULL{default}")
                if literal is None and (fill is None or value is not None):
                    p.added.append(col.name)
            elif (now := self._reconcile(col, have, spec, target)) is not None:
                keep = have.keep_collation() + (" NULL" if have.nullable else " NOT NULL")
                alter.append(f"MODIFY COLUMN {_ident(col.name)} {now}{keep}")
                p.widening.append((col.name, have.column_type, now))
            elif _pads(_normal(have.column_type), _normal(spec)):
                p.padded.append((col.name, have.column_type, spec))
        if p.added and self._empty(conn, target):
            p.added = []  # no row to backfill
        loosen: list[str] = []
        relaxed = relax - set(schema.key)  # the source's NOT NULL just dropped
        for name, have in existing.items():
            if not have.needs_value or (name in schema.names and name not in relaxed):
                continue
            # A NOT NULL column without a default the source no longer sends (dropped at the
            # source, or a DBA's), or whose source column allows NULL now: rows would be
            # refused (1364, 1048). It stays, the same type, character set, collation and
            # comment, only nullable.
            if name in relaxed:
                p.relaxed.append(name)
            elif problem := missing_column_problem(target, name, have.in_pk, schema.key):
                raise PermanentError(problem)
            change = (
                f"MODIFY COLUMN {quote_mysql(name)} {have.column_type}{have.keep_collation()} "
                f"NULL{have.keep_comment()}"
            )
            loosen.append(change.replace("%", "%%"))  # all of it as information_schema has it
            p.nullable.append(name)
        table = f"ALTER TABLE {_table(target)} "
        if alter:
            p.ddl.append(table + ", ".join(alter))
            p.why[p.ddl[-1]] = "the source table has columns (or wider types) the target lacks"
        if loosen:
            # A statement of its own, so that a refusal names exactly this one.
            p.ddl.append(table + ", ".join(loosen))
            p.why[p.ddl[-1]] = (
                f"column(s) {', '.join(repr(c) for c in p.nullable)} are NOT NULL without a "
                "default and the source table no longer has them (or they allow NULL there), "
                "so rows written would be refused"
            )
        return p

    def _empty(self, conn: sa.Connection, target: TableId) -> bool:
        return conn.exec_driver_sql(_HAS_ROWS.format(_table(target))).first() is None

    def _spec(self, col: Column, target: TableId, key: int | None) -> str:
        ct = self.types.column_type(col.type, target, col.name, key=key)
        return str(ct.compile(dialect=_DIALECT))

    def _create(self, conn: sa.Connection, schema: TableSchema, target: TableId) -> str:
        keys = key_budgets(schema)
        cols = [
            sa.Column(
                c.name,
                self.types.column_type(c.type, target, c.name, key=keys.get(c.name)),
                nullable=c.nullable and c.name not in keys,
                # SQLAlchemy would make a lone integer key AUTO_INCREMENT: values come from
                # the source, and AUTO_INCREMENT turns a NULL / 0 key into a new number.
                autoincrement=False,
            )
            for c in schema.columns
        ]
        table = sa.Table(
            target.name,
            sa.MetaData(),
            *cols,
            sa.PrimaryKeyConstraint(*schema.key),
            schema=target.schema,
            mysql_engine="InnoDB",
            mysql_charset="utf8mb4",
            mysql_collate=self._table_collation(conn),
        )
        return str(CreateTable(table).compile(dialect=conn.dialect)).strip()

    def _reconcile(
        self, col: Column, have: ExistingColumn, spec: str, target: TableId
    ) -> str | None:
        """None when the existing column holds every source value exactly, else the type to
        MODIFY it to (an ENUM / SET with new labels, a wider type); PermanentError when none."""
        want, got = _normal(spec), _normal(have.column_type)
        kind = col.type.kind
        if want == got:
            return None
        if kind in (Kind.JSON, Kind.JSONB) and have.data_type == "longtext":
            return None  # MariaDB's JSON is LONGTEXT with a json_valid CHECK
        if kind in _STRING_KINDS and have.data_type == "longtext":
            return None  # any string fits
        if kind is Kind.BOOLEAN and got.startswith("tinyint"):
            return None
        if (
            kind in (Kind.ENUM, Kind.SET)
            and have.data_type == kind.value
            and set(labels(have.column_type)) <= set(col.type.enum_labels)
        ):
            return spec
        holds = _holds(got, want)  # the existing type holds every value of the source's?
        if holds is True:
            return None  # e.g. the source narrowed varchar(40) to varchar(20)
        if _pads(got, want):
            # A BINARY(m) target for a shorter (VAR)BINARY(n) source: what the MODIFY below
            # makes when the source widens to BINARY(m), met again by the rows written before
            # the source's ALTER (replayed after a restart). They are padded to m bytes, as
            # the source's ALTER padded them; refusing would stop the pipeline for good.
            return None
        if holds is False and (_holds(want, got) is True or _pads(want, got)):
            # The source widened (MODIFY varchar(20) -> varchar(40), int -> bigint): rows
            # written after its ALTER would not fit. Every existing value fits the new type.
            return spec
        try:
            # Neither holds the other: a type holding both, as a PostgreSQL target widens to.
            now = merged_number(got, want)
        except TooWide as e:
            now, spec = None, f"{e} to hold the values of both, wider than DECIMAL(65,30)"
        if now is not None:
            return None if now == got else now
        raise PermanentError(
            f"target table {target}: column {col.name!r} has type {have.column_type}, but the "
            f"source column is {col.type.source_name or col.type.kind.value} (needs {spec}); "
            f"alter the target column or map the table to another target{RETYPED}"
        )

    def _check_key(self, conn: sa.Connection, schema: TableSchema, target: TableId) -> None:
        indexes: dict[str, set[str]] = {}
        prefixed: set[str] = set()
        for index, column, sub_part in conn.execute(
            _UNIQUE, {"s": target.schema, "t": target.name}
        ):
            indexes.setdefault(index, set()).add(column)
            if sub_part is not None:
                prefixed.add(index)
        want = set(schema.key)
        if any(cols == want and ix not in prefixed for ix, cols in indexes.items()):
            return
        unique = [sorted(cols) for cols in indexes.values()]
        raise no_key_index(target, schema.key, unique, schema.names)
