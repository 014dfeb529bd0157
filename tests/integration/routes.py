"""Cross-engine helpers: configs for any source/target pair, rows read as comparable values."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pymysql

from tests.integration.harness import Cli, table_lines

CONFIG = """
sources:
  src: {{type: {stype}, dsn: "${{SRC_DSN}}"{sextra}}}
targets:
  tgt: {{type: {ttype}, dsn: "${{TGT_DSN}}"}}
pipelines:
  {pipeline}:
    source: src
    target: tgt
    audit: row
{on_error}    batch: {{max_rows: {max_rows}, max_seconds: {max_seconds}, flush_rows: {flush_rows}}}
    retry: {{initial_seconds: 0.1, max_seconds: 1}}
    tables:
{tables}
logging: {{level: {level}, format: json}}
"""


def kind(dsn: str) -> str:
    return "mysql" if dsn.startswith("mysql") else "postgres"


class Route(Cli):
    """One pipeline from ``source_dsn`` to ``target_dsn`` (either engine), run through the CLI."""

    def __init__(
        self,
        tmp: Path,
        source_dsn: str,
        target_dsn: str,
        tables: dict[str, str | None],
        pipeline: str = "route",
        max_rows: int = 20_000,
        max_seconds: float = 0.2,
        flush_rows: int = 5_000,
        source_extra: str = "",
        on_error: str | None = None,
        level: str = "INFO",
    ) -> None:
        """``on_error``: None keeps the default (dead_letter)."""
        stype, ttype = kind(source_dsn), kind(target_dsn)
        if stype == "mysql" and "server_id" not in source_extra:
            source_extra += server_id_extra(source_dsn)
        text = CONFIG.format(
            stype=stype,
            ttype=ttype,
            sextra=source_extra,
            pipeline=pipeline,
            max_rows=max_rows,
            max_seconds=max_seconds,
            flush_rows=flush_rows,
            tables=table_lines(tables),
            on_error=f"    on_error: {on_error}\n" if on_error else "",
            level=level,
        )
        self._configure(tmp, pipeline, text, source_dsn, target_dsn)

    def set_on_error(self, on_error: str) -> None:
        """Rewrite the config with another ``on_error`` (the next run reads it)."""
        text = self.config.read_text()
        old = next(line for line in text.splitlines() if line.startswith("    on_error: "))
        self.config.write_text(text.replace(old, f"    on_error: {on_error}"))


def server_id_extra(source_dsn: str) -> str:
    """The ``server_id`` of a MySQL source config, unique per source database: tests share
    a server, and two replicas with one server_id would disconnect each other."""
    return f", server_id: {1000 + abs(hash(source_dsn)) % 100000}"


def my_connect(dsn: str) -> pymysql.connections.Connection:
    u = urlsplit(dsn)
    return pymysql.connect(
        host=u.hostname,
        port=u.port or 3306,
        user=u.username or "root",
        password=u.password or "",
        database=u.path.lstrip("/") or None,
        charset="utf8mb4",
        autocommit=True,
        init_command="SET time_zone = '+00:00'",
    )


def execute(dsn: str, *statements: str, params: Any = None) -> None:
    if kind(dsn) == "mysql":
        with my_connect(dsn) as c, c.cursor() as cur:
            for s in statements:
                cur.execute(s, params)
    else:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for s in statements:
                conn.execute(s, params)  # type: ignore[arg-type]


def fetch(dsn: str, table: str, columns: str = "*", order_by: str = "1") -> list[tuple[Any, ...]]:
    """Rows as driver values; timestamps read in UTC on both engines."""
    query = f"SELECT {columns} FROM {table} ORDER BY {order_by}"
    if kind(dsn) == "mysql":
        with my_connect(dsn) as c, c.cursor() as cur:
            cur.execute(query)
            return list(cur.fetchall())
    with psycopg.connect(dsn) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        return list(conn.execute(query).fetchall())  # type: ignore[arg-type]


def norm(v: Any) -> Any:
    """A value as both engines' drivers can agree on: aware datetimes as naive UTC, JSON text
    parsed, bools as ints, numbers compared by value."""
    if isinstance(v, datetime) and v.tzinfo is not None:
        return v.astimezone(UTC).replace(tzinfo=None)
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    return v


def norm_json(v: Any) -> Any:
    return json.loads(v) if isinstance(v, str | bytes) else v


def audit_counts(dsn: str, pipeline: str) -> Counter[tuple[str, str, str]]:
    """(op, source_table, key as JSON text) → applied audit rows."""
    q = (
        "SELECT op, source_table, pk FROM cdc_sync_audit "
        f"WHERE pipeline = '{pipeline}' AND outcome = 'applied'"
    )
    out: Counter[tuple[str, str, str]] = Counter()
    if kind(dsn) == "mysql":
        with my_connect(dsn) as c, c.cursor() as cur:
            cur.execute(q)
            rows = list(cur.fetchall())
    else:
        with psycopg.connect(dsn) as conn:
            rows = list(conn.execute(q).fetchall())  # type: ignore[arg-type]
    for op, table, pk in rows:
        key = pk if isinstance(pk, str) else json.dumps(pk)
        out[(str(op), str(table), json.dumps(json.loads(key), sort_keys=True))] += 1
    return out


def column_types(dsn: str, table: str) -> dict[str, str]:
    """{column: its type as the server shows it}: ``format_type`` on PostgreSQL (``table``
    schema-qualified), ``COLUMN_TYPE`` on MySQL / MariaDB (``table`` in the DSN's database)."""
    if kind(dsn) == "mysql":
        q = (
            "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION"
        )
        with my_connect(dsn) as c, c.cursor() as cur:
            cur.execute(q, (table,))
            return {str(n): str(t) for n, t in cur.fetchall()}
    q = (
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
    )
    with psycopg.connect(dsn) as conn:
        return {str(n): str(t) for n, t in conn.execute(q, (table,)).fetchall()}
