"""information_schema reads: server facts and configured tables' columns, key and JSON columns."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cdc_sync.errors import CdcSyncError, PermanentError, UnsupportedTypeError
from cdc_sync.records import TableId, TableSchema
from cdc_sync.sources.mysql import columns as ct
from cdc_sync.sources.mysql.columns import ColumnSpec, build_schema, check_charset

_BY_NAME = {
    "tinyint": ct.TINY, "smallint": ct.SHORT, "mediumint": ct.INT24, "int": ct.LONG,
    "bigint": ct.LONGLONG, "decimal": ct.NEWDECIMAL, "float": ct.FLOAT, "double": ct.DOUBLE,
    "varchar": ct.VARCHAR, "char": ct.STRING, "varbinary": ct.VARCHAR, "binary": ct.STRING,
    "date": ct.DATE, "datetime": ct.DATETIME2, "timestamp": ct.TIMESTAMP2, "time": ct.TIME2,
    "year": ct.YEAR, "enum": ct.ENUM, "set": ct.SET, "bit": ct.BIT, "json": ct.JSON,
}  # fmt: skip
_LOBS = {"tiny": 1, "": 2, "medium": 3, "long": 4}
_JSON_CHECK = re.compile(r"json_valid\(`((?:[^`]|``)+)`\)", re.IGNORECASE)
_LABEL = re.compile(r"'((?:[^']|'')*)'")


@dataclass(frozen=True)
class ServerInfo:
    mariadb: bool
    version: str
    server_id: int
    gtid_on: bool  # MariaDB: always; MySQL: gtid_mode = ON


def query(conn: Any, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql, tuple(args))
        return list(cur.fetchall())


def variables(conn: Any, *names: str) -> dict[str, str]:
    marks = ",".join(["%s"] * len(names))
    rows = query(conn, f"SHOW GLOBAL VARIABLES WHERE Variable_name IN ({marks})", names)
    return {str(k).lower(): str(v) for k, v in rows}


def server_info(conn: Any) -> ServerInfo:
    (version, server_id), *_ = query(conn, "SELECT VERSION(), @@server_id")
    mariadb = "mariadb" in str(version).lower()
    gtid_on = mariadb or variables(conn, "gtid_mode").get("gtid_mode", "OFF").upper() == "ON"
    return ServerInfo(mariadb, str(version), int(server_id), gtid_on)


def _labels(column_type: str) -> tuple[str, ...]:
    body = column_type[column_type.index("(") + 1 : column_type.rindex(")")]
    return tuple(m.replace("''", "'").replace("\\\\", "\\") for m in _LABEL.findall(body))


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _spec(row: dict[str, Any], json_cols: set[str]) -> ColumnSpec | str:
    """A ColumnSpec equal to what the table map will describe, or the unsupported type name."""
    name, dt = str(row["COLUMN_NAME"]), str(row["DATA_TYPE"]).lower()
    col_type = str(row["COLUMN_TYPE"]).lower()
    nullable = row["IS_NULLABLE"] == "YES"
    charset = row["CHARACTER_SET_NAME"]
    if dt.endswith(("text", "blob")) and dt[:-4] in _LOBS:
        binary = dt.endswith("blob")
        return ColumnSpec(
            name, ct.BLOB, nullable, length_size=_LOBS[dt[:-4]],
            charset="binary" if binary else str(charset), is_json=name in json_cols,
            collation=None if binary else _text(row["COLLATION_NAME"]),
        )  # fmt: skip
    code = _BY_NAME.get(dt)
    if code is None:
        return col_type
    if code in (ct.VARCHAR, ct.STRING):
        binary = dt in ("varbinary", "binary")
        return ColumnSpec(
            name, code, nullable, max_length=int(row["CHARACTER_OCTET_LENGTH"]),
            charset="binary" if binary else str(charset),
            collation=None if binary else _text(row["COLLATION_NAME"]),
        )  # fmt: skip
    if code in (ct.ENUM, ct.SET):
        labels = _labels(str(row["COLUMN_TYPE"]))
        size = (1 if len(labels) < 256 else 2) if code == ct.ENUM else (len(labels) + 7) // 8
        return ColumnSpec(name, code, nullable, size=8 if size > 4 else size, labels=labels)
    decimals = row["NUMERIC_SCALE"] if code == ct.NEWDECIMAL else row["DATETIME_PRECISION"]
    return ColumnSpec(
        name, code, nullable, unsigned="unsigned" in col_type,
        precision=int(row["NUMERIC_PRECISION"] or 0), decimals=int(decimals or 0),
        bits=int(row["NUMERIC_PRECISION"] or 0) if code == ct.BIT else 0,
        display_width=1 if col_type.startswith("tinyint(1)") else 0,
    )  # fmt: skip


def tinyint1_columns(conn: Any, table: TableId) -> set[str]:
    """TINYINT(1) columns (what clients read as BOOLEAN): the binlog's table map says TINY."""
    rows = query(
        conn,
        "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s "
        "AND TABLE_NAME = %s AND COLUMN_TYPE LIKE 'tinyint(1)%%'",
        (table.schema, table.name),
    )
    return {str(r[0]) for r in rows}


def json_columns(conn: Any, table: TableId) -> set[str]:
    """MariaDB JSON columns: LONGTEXT with a CHECK (json_valid(col)) constraint."""
    rows = query(
        conn,
        "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
        "WHERE CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s",
        (table.schema, table.name),
    )
    out: set[str] = set()
    for (clause,) in rows:
        out.update(m.replace("``", "`") for m in _JSON_CHECK.findall(str(clause)))
    return out


# MariaDB's system-versioned tables keep history rows in the table itself: the binlog logs a
# DELETE as an UPDATE of the hidden row_end, and every UPDATE also inserts the old version.
# Replicated as rows, the target would keep deleted customers and their history.
_VERSIONED = (
    "table {table} is system-versioned (WITH SYSTEM VERSIONING): its binlog holds history rows "
    "and logs a DELETE as an update of row_end, so its deleted rows would stay in the target; "
    "cdc-sync does not replicate such tables: leave it out of the config"
)


def _versioned(conn: Any, table: TableId) -> bool:
    rows = query(
        conn,
        "SELECT TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
        "AND TABLE_NAME = %s",
        (table.schema, table.name),
    )
    return bool(rows) and str(rows[0][0]).upper() == "SYSTEM VERSIONED"


def read_schemas(
    conn: Any, tables: Sequence[TableId], mariadb: bool
) -> tuple[dict[TableId, TableSchema], list[CdcSyncError]]:
    """Schemas of the configured tables, and one error per table that cannot be replicated."""
    schemas: dict[TableId, TableSchema] = {}
    errors: list[CdcSyncError] = []
    fields = (
        "COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, CHARACTER_SET_NAME, COLLATION_NAME, "
        "CHARACTER_OCTET_LENGTH, NUMERIC_PRECISION, NUMERIC_SCALE, DATETIME_PRECISION"
    )
    for table in tables:
        with conn.cursor() as cur:
            cur.execute(
                f"SELECT {fields} FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s "
                "AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
                (table.schema, table.name),
            )
            names = [d[0] for d in cur.description]
            cols = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        if not cols:
            errors.append(PermanentError(f"table {table} does not exist on the source"))
            continue
        if mariadb and _versioned(conn, table):
            errors.append(PermanentError(_VERSIONED.format(table=table)))
            continue
        key = [
            str(r[0])
            for r in query(
                conn,
                "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE "
                "TABLE_SCHEMA = %s AND TABLE_NAME = %s AND CONSTRAINT_NAME = 'PRIMARY' "
                "ORDER BY ORDINAL_POSITION",
                (table.schema, table.name),
            )
        ]
        jcols = json_columns(conn, table) if mariadb else set()
        specs = [_spec(c, jcols) for c in cols]
        bad = [
            (c["COLUMN_NAME"], s) for c, s in zip(cols, specs, strict=True) if isinstance(s, str)
        ]
        try:
            if bad:
                raise UnsupportedTypeError(str(table), str(bad[0][0]), bad[0][1])
            for s in specs:
                if isinstance(s, ColumnSpec):
                    check_charset(table, s)
            schemas[table] = build_schema(
                table, [s for s in specs if isinstance(s, ColumnSpec)], key
            )
        except CdcSyncError as e:
            errors.append(e)
    return schemas, errors
