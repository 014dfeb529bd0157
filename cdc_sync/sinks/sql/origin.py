"""OriginTag: marks every target transaction a pipeline writes, for two-way loop prevention."""

from __future__ import annotations

import weakref
from typing import Any

import psycopg
import pymysql
import sqlalchemy as sa

from cdc_sync.errors import CdcSyncError, PermanentError, TransientError
from cdc_sync.sinks.sql.errors import classify_db_error, mysql_errno
from cdc_sync.sinks.sql.mysql import quote_mysql
from cdc_sync.sinks.sql.types import MYSQL_DIALECTS
from cdc_sync.state.driver import psycopg_connection

MARKER_TABLE = "cdc_sync_origin"
MAX_ORIGIN = 100  # the marker table's VARCHAR(100); PostgreSQL allows 512 bytes
PG_FUNCTIONS = (
    "pg_replication_origin_create(text)",
    "pg_replication_origin_oid(text)",
    "pg_replication_origin_session_setup(text)",
)
_MY_NO_PRIVILEGE = frozenset({1142, 1143, 1044, 1045, 1227})
_NO_SUCH_TABLE = 1146

# PostgreSQL: the replication origin each live driver connection (database session) was set
# up with. Shared by every OriginTag of the process, so a new tag (a pipeline restarted in
# the same process) on a pooled session that already carries its origin does not set it up
# again (which the server refuses, SQLSTATE 55000).
_SESSIONS: weakref.WeakKeyDictionary[psycopg.Connection[Any], str] = weakref.WeakKeyDictionary()


class OriginTag:
    """Marks every target transaction a pipeline writes as written by that pipeline.

    The capture of the target database (the other direction of a two-way link) drops the
    transactions that carry a tag it is told to skip, so a change does not ping-pong.

    * PostgreSQL: a replication origin named ``origin``, set up once per database session
      (``pg_replication_origin_session_setup``): every later commit of that session carries
      it in WAL and pgoutput sends an Origin message with the name after Begin. The origin
      can be active in one session at a time: the writer's connection should be this
      pipeline's alone.
    * MySQL / MariaDB: the first write of every target transaction is an upsert of the row
      ``origin`` in ``<schema>.cdc_sync_origin`` (``seq`` always changes, so a row event is
      always logged); the capture reads that row event before the transaction's other rows.

    ``schema`` is the target's state schema (the MySQL database holding the cdc_sync_*
    tables); None means the DSN's database. PostgreSQL origins are cluster-wide: ``schema``
    is not used there.
    """

    def __init__(self, origin: str, schema: str | None) -> None:
        if not origin or len(origin) > MAX_ORIGIN:
            raise PermanentError(f"an origin name needs 1 to {MAX_ORIGIN} characters: {origin!r}")
        self.origin, self.schema = origin, schema
        table = quote_mysql(MARKER_TABLE)
        self._table = f"{quote_mysql(schema)}.{table}" if schema else table
        # PyMySQL formats the arguments with %: a % in a (quoted) name must be doubled.
        self._upsert = (
            f"INSERT INTO {self._table.replace('%', '%%')} (origin, seq) VALUES (%s, 1) "
            "ON DUPLICATE KEY UPDATE seq = seq + 1"
        )
        # MySQL: the transaction the marker was written in (None: not written yet).
        self._marked: weakref.ref[Any] | None = None

    # -- setup ---------------------------------------------------------------------------------

    def ensure(self, conn: sa.Connection) -> None:
        """Create the origin (PostgreSQL) or the marker table (MySQL) when missing.

        Called once at pipeline start, outside any open transaction; the caller commits.
        """
        try:
            if conn.dialect.name in MYSQL_DIALECTS:
                conn.execute(sa.text(self.marker_table_sql()))
                return
            conn.execute(
                sa.text(
                    "SELECT pg_replication_origin_create(:n) "
                    "WHERE pg_replication_origin_oid(:n) IS NULL"
                ),
                {"n": self.origin},
            )
        except sa.exc.DBAPIError as e:
            raise self._error(e.orig or e, "cannot create") from None

    def marker_table_sql(self) -> str:
        """The MySQL / MariaDB marker table's DDL (also the fix ``problems`` suggests)."""
        return (
            f"CREATE TABLE IF NOT EXISTS {self._table} (origin VARCHAR({MAX_ORIGIN}) "
            "PRIMARY KEY, seq BIGINT NOT NULL) ENGINE=InnoDB"
        )

    # -- the hot path --------------------------------------------------------------------------

    def tag(self, conn: sa.Connection) -> None:
        """Tag the open target transaction of ``conn`` (opening it if needed); called before
        its first row write, cheap when already done."""
        if conn.dialect.name in MYSQL_DIALECTS:
            self._tag_mysql(conn)
            return
        raw = psycopg_connection(conn)  # joins (or begins) the runtime's transaction
        if raw is None:
            raise PermanentError("origin tagging needs the psycopg driver (postgresql+psycopg://)")
        done = _SESSIONS.get(raw)
        if done == self.origin:
            return
        if done is not None:
            raise PermanentError(
                f"the target session already carries replication origin {done!r}, not "
                f"{self.origin!r}: two pipelines share one writer connection"
            )
        try:
            raw.execute("SELECT pg_replication_origin_session_setup(%s)", (self.origin,))
        except psycopg.Error as e:
            raise self._error(e, "cannot set up") from None
        _SESSIONS[raw] = self.origin

    def _tag_mysql(self, conn: sa.Connection) -> None:
        if not conn.in_transaction():
            # Statements on the driver connection bypass SQLAlchemy's autobegin; without
            # this the runtime's commit() would see no transaction (see SqlSink).
            conn.begin()
        tx = conn.get_transaction()
        marked = self._marked
        if marked is not None and marked() is tx:
            return
        raw = conn.connection.driver_connection
        if not isinstance(raw, pymysql.connections.Connection):
            raise PermanentError("origin tagging needs the PyMySQL driver (mysql+pymysql://)")
        try:
            with raw.cursor() as cur:
                cur.execute(self._upsert, (self.origin,))
        except pymysql.MySQLError as e:
            raise self._error(e, "cannot write") from None
        self._marked = weakref.ref(tx) if tx is not None else None

    def ended(self) -> None:
        """The target transaction was committed or rolled back: the next one needs a new
        marker (MySQL; a PostgreSQL session keeps its origin)."""
        self._marked = None

    # -- check ---------------------------------------------------------------------------------

    def problems(self, conn: sa.Connection) -> list[str]:
        """What keeps this user from tagging, one line each with the fixing SQL (empty: fine)."""
        try:
            if conn.dialect.name in MYSQL_DIALECTS:
                return self._mysql_problems(conn)
            return self._pg_problems(conn)
        except sa.exc.DBAPIError as e:
            raise self._error(e.orig or e, "cannot check") from None

    def _pg_problems(self, conn: sa.Connection) -> list[str]:
        checks = ", ".join(f"has_function_privilege('{f}', 'EXECUTE')" for f in PG_FUNCTIONS)
        row = conn.execute(
            sa.text(
                "SELECT quote_ident(current_user), "
                f"current_setting('max_replication_slots')::int, {checks}"
            )
        ).one()
        user, slots, allowed = row[0], row[1], row[2:]
        out = []
        if slots == 0:
            out.append(
                "max_replication_slots is 0, so the target cannot keep replication origins "
                f"(origin {self.origin!r}); fix: ALTER SYSTEM SET max_replication_slots = 10; "
                "and restart the server"
            )
        missing = [f for f, ok in zip(PG_FUNCTIONS, allowed, strict=True) if not ok]
        if missing:
            grants = " ".join(f"GRANT EXECUTE ON FUNCTION {f} TO {user};" for f in missing)
            out.append(
                f"user {user} may not use replication origins (needed to tag the changes it "
                f"writes with origin {self.origin!r}); fix: make it a superuser, or {grants}"
            )
        return out

    def _mysql_problems(self, conn: sa.Connection) -> list[str]:
        schema = self.schema or conn.execute(sa.text("SELECT DATABASE()")).scalar()
        if schema is None:
            return ["the target DSN names no database and no state schema is set"]
        user = str(conn.execute(sa.text("SELECT CURRENT_USER()")).scalar())
        name, _, host = user.rpartition("@")
        who = f"'{name}'@'{host}'"
        table = f"{quote_mysql(schema)}.{quote_mysql(MARKER_TABLE)}"
        # Privileges are checked when a statement is prepared: an upsert of no rows proves
        # them without writing anything (no row changes, nothing logged).
        probe = (
            f"INSERT INTO {table} (origin, seq) SELECT 'probe', 1 FROM DUAL WHERE FALSE "
            "ON DUPLICATE KEY UPDATE seq = seq + 1"
        )
        try:
            conn.execute(sa.text(probe))
        except sa.exc.DBAPIError as e:
            missing = mysql_errno(e.orig) == _NO_SUCH_TABLE if e.orig is not None else False
            if missing and _may_create(conn, schema):
                return []  # ensure() creates it
            if not missing and not _denied(e.orig):
                raise
            # Without any privilege on it the server does not say whether the table exists.
            return [
                f"user {user} cannot create or write the origin marker table {table}; fix: "
                f"GRANT CREATE, SELECT, INSERT, UPDATE ON {quote_mysql(schema)}.* TO {who}; "
                f"or create it and grant on it: {self.marker_table_sql()}; "
                f"GRANT SELECT, INSERT, UPDATE ON {table} TO {who};"
            ]
        return []

    # -- errors --------------------------------------------------------------------------------

    def _error(self, err: BaseException, what: str) -> CdcSyncError:
        if isinstance(err, psycopg.Error):
            state = err.sqlstate
            if state == "55006":  # object_in_use
                return TransientError(
                    f"replication origin {self.origin!r} is active in another target session "
                    "(a previous daemon's connection not gone yet?); retrying"
                )
            if state == "42501":  # insufficient_privilege
                return PermanentError(
                    f"{what} replication origin {self.origin!r}: permission denied; fix: make "
                    "the target user a superuser, or "
                    + " ".join(f"GRANT EXECUTE ON FUNCTION {f} TO <user>;" for f in PG_FUNCTIONS)
                )
            if state == "55000":  # object_not_in_prerequisite_state
                return PermanentError(
                    f"{what} replication origin {self.origin!r}: the target session already "
                    "has another replication origin set up, or max_replication_slots is 0 "
                    "(replication origins need it above 0)"
                )
        if _denied(err):
            return PermanentError(
                f"{what} the origin marker table {self._table}: permission denied; fix: "
                f"GRANT CREATE, SELECT, INSERT, UPDATE ON {self._table} TO <user>; "
                f"(or create it: {self.marker_table_sql()})"
            )
        return classify_db_error(err, self._table if isinstance(err, pymysql.MySQLError) else None)


def _denied(err: BaseException | None) -> bool:
    """A MySQL / MariaDB permission error."""
    return err is not None and (mysql_errno(err) or 0) in _MY_NO_PRIVILEGE


def _may_create(conn: sa.Connection, schema: str) -> bool:
    """Whether SHOW GRANTS gives CREATE on ``schema`` (or globally). A role may grant it
    too; roles are not followed, so a DBA may see a problem they know to be handled."""
    for (line,) in conn.execute(sa.text("SHOW GRANTS FOR CURRENT_USER()")):
        text = str(line)
        head, sep, rest = text.partition(" ON ")
        if not sep or not head.upper().startswith("GRANT "):
            continue
        target = rest.split(" TO ", 1)[0].strip()
        if target not in ("*.*", f"{quote_mysql(schema)}.*"):
            continue
        privs = {p.strip().upper() for p in head[6:].split(",")}
        if "ALL PRIVILEGES" in privs or "CREATE" in privs:
            return True
    return False
