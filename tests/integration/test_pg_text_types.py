"""PostgreSQL types carried as their text form (citext, inet, hstore, ranges, composites…)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.integration.harness import rows_as_text
from tests.integration.routes import Route, column_types, execute, fetch

pytestmark = pytest.mark.integration

EXTENSIONS = (
    "CREATE EXTENSION citext",
    "CREATE EXTENSION hstore",
    "CREATE EXTENSION ltree",
    "CREATE TYPE addr AS (street text, zip int, tags text[])",
    "CREATE TYPE floatrange AS RANGE (subtype = float8)",
)
CRM = """CREATE TABLE crm (
  email citext PRIMARY KEY, ip inet, net cidr, mac macaddr, attrs hstore, call tstzrange,
  span int4range, home addr, path ltree, doc tsvector, x xml)"""
CRM_COLS = "email, ip, net, mac, attrs, call, span, home, path, doc, x"
# Values whose text needs care: quotes, backslashes, newlines and tabs (COPY escapes), NULL
# fields of a composite, empty and unbounded ranges, unicode, IPv6 with a netmask.
CRM_ROWS = (
    """('Émile@Example.com', '2001:db8::1/64', '10.0.0.0/8', '08:00:2b:01:02:03',
        '"a b"=>"x\\"y", k=>NULL, "tab\tkey"=>"new\nline"',
        '[2024-01-01 10:00+02, 2024-01-01 11:30+02)', '[1,10)',
        ROW(E'Main St\\n"5"\\tback\\\\slash', 12345, ARRAY['a', 'b c', NULL]),
        'Top.Science.Astronomy', 'a:1A fat:2B,4C cat:5D rat', '<a href="x">&amp; é</a>')""",
    """('bob@example.com', '192.168.1.7', '192.168.0.0/16', '08:00:2b:01:02:04', '',
        'empty', '(,)', ROW(NULL, NULL, NULL), 'Top', '', 'plain text')""",
    """('Carol@Example.org', NULL, NULL, NULL, NULL, '(2024-02-01 00:00+00,)', NULL, NULL,
        NULL, NULL, NULL)""",
)
EXTRAS = """CREATE TABLE extras (
  id inet PRIMARY KEY, ips inet[], homes addr[], pt point, bx box, vb bit varying(8),
  b5 bit(5), mr int4multirange, q tsquery, m8 macaddr8, fr floatrange)"""
EXTRAS_ROWS = (
    """('10.1.1.1', ARRAY['1.2.3.4', NULL, '::1/128']::inet[],
        ARRAY[ROW('x,y', 1, ARRAY['q"z'])::addr, NULL], '(1.5,-2)', '((0,0),(1,1))',
        B'101', B'10101', '{[1,3), [7,9)}', 'fat & (rat | cat)', '08:00:2b:01:02:03:04:05',
        '[1.5,2.25]')""",
    "('10.1.1.2', '{}', '{}', NULL, NULL, NULL, NULL, '{}', NULL, NULL, '(,0.1]')",
)


def _source(dsn: str) -> None:
    execute(dsn, *EXTENSIONS, CRM, EXTRAS)
    execute(dsn, *(f"INSERT INTO crm ({CRM_COLS}) VALUES {r}" for r in CRM_ROWS))
    execute(dsn, *(f"INSERT INTO extras VALUES {r}" for r in EXTRAS_ROWS))


def _changes(dsn: str) -> None:
    """Streamed: a bulk insert (the writer's COPY path), updates, a key change that only
    changes case (the same citext key, another text), deletes."""
    execute(
        dsn,
        "INSERT INTO crm (email, ip, attrs, call, home, doc) SELECT 'u' || i || '@X.com', "
        "('10.0.' || i || '.1')::inet, hstore('n', i::text), tstzrange(now(), NULL), "
        "ROW('s' || i, i, NULL)::addr, to_tsvector('simple', 'w' || i) "
        "FROM generate_series(1, 60) i",
        "UPDATE crm SET ip = '::ffff:1.2.3.4', attrs = attrs || hstore('z', 'Z\"') "
        "WHERE email = 'bob@EXAMPLE.com'",
        "UPDATE crm SET email = 'carol@example.org', span = '[5,5]' "
        "WHERE email = 'carol@example.org'",
        "UPDATE crm SET home = ROW('moved', 1, ARRAY['t']) WHERE email LIKE 'u1%'",
        "DELETE FROM crm WHERE email IN ('u2@x.com', 'U3@X.COM')",
        "INSERT INTO extras VALUES ('2001:db8::2', ARRAY['10.0.0.1']::inet[], NULL, '(0,0)', "
        "NULL, B'1', B'00000', '{}', 'a', NULL, 'empty')",
        "UPDATE extras SET vb = B'11111111', pt = '(3,4)' WHERE id = '10.1.1.2'",
        "DELETE FROM extras WHERE id = '10.1.1.1'",
    )


def _out(columns: str) -> str:
    """Each column as its type's output (what pgoutput sends); ``::text`` may differ (inet's
    text() adds a /32)."""
    return ", ".join(
        f"CASE WHEN num_nulls({c}) = 1 THEN NULL ELSE format('%s', {c}) END"
        for c in columns.split(", ")
    )


def _order(table: str) -> str:
    return "email::text" if table == "crm" else "id"


def test_pg_to_pg_carries_the_text_form(tmp_path: Path, source_dsn: str, target_dsn: str) -> None:
    _source(source_dsn)
    r = Route(tmp_path, source_dsn, target_dsn, {"public.crm": None, "public.extras": None},
              pipeline="pgtext_" + source_dsn.rsplit("/", 1)[-1])  # fmt: skip
    # Without the extension on the target: a clear error at check, naming the fix.
    res = r.cli("check")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "column 'email' has the source's type public.citext" in res.stdout
    assert "CREATE EXTENSION citext SCHEMA public;" in res.stdout
    assert "CREATE TYPE public.floatrange AS RANGE (SUBTYPE = double precision);" in res.stdout
    execute(target_dsn, *EXTENSIONS)
    res = r.cli("check")
    assert res.returncode == 0, res.stdout + res.stderr
    r.drain()  # the snapshot: COPY text straight into the created tables
    for table in ("crm", "extras"):
        assert rows_as_text(target_dsn, table, _order(table)) == rows_as_text(
            source_dsn, table, _order(table)
        )
    _changes(source_dsn)
    r.drain()
    for table in ("crm", "extras"):
        src = rows_as_text(source_dsn, table, _order(table))
        assert rows_as_text(target_dsn, table, _order(table)) == src, table
    assert len(rows_as_text(target_dsn, "crm")) == 3 + 60 - 2
    types = column_types(target_dsn, "public.crm")
    # A row type goes in as its text, for now (sinks/sql/types.as_text)
    assert types["email"] == "citext" and types["home"] == "text" and types["x"] == "xml"
    assert types["attrs"] == "hstore" and types["call"] == "tstzrange"
    assert column_types(target_dsn, "public.extras")["homes"] == "text[]"
    assert column_types(target_dsn, "public.extras")["fr"] == "floatrange"
    assert column_types(target_dsn, "public.extras")["vb"] == "bit varying"
    assert column_types(target_dsn, "public.extras")["b5"] == "bit(5)"
    # The target's session prints tstzrange in another zone: verify reads it as UTC text.
    tdb = target_dsn.rsplit("/", 1)[-1]
    execute(target_dsn, f"ALTER DATABASE {tdb} SET TimeZone = 'Asia/Tokyo'")
    res = r.cli("verify", "-p", r.pipeline)
    assert res.returncode == 0, res.stdout + res.stderr


def test_pg_to_pg_text_target_columns(tmp_path: Path, source_dsn: str, target_dsn: str) -> None:
    """A DBA's text / varchar target columns take the values' text (the type must still
    exist on the target: values are cast to it, then assigned to the text column)."""
    execute(
        source_dsn,
        "CREATE EXTENSION citext",
        "CREATE TABLE people (email citext PRIMARY KEY, ip inet, mac macaddr, call tstzrange, "
        "doc tsvector, x xml)",
        "INSERT INTO people VALUES ('Ann@X.com', '10.0.0.1/8', '08:00:2b:01:02:03', "
        "'[2024-01-01 10:00+02,)', 'b:1 a:2', '<p>é</p>'), "
        "('bob@x.com', NULL, NULL, 'empty', '', '')",
    )
    execute(
        target_dsn,
        "CREATE EXTENSION citext",
        "CREATE TABLE people (email varchar(200) PRIMARY KEY, ip text, mac varchar(17), "
        "call text, doc text, x text)",
    )
    r = Route(tmp_path, source_dsn, target_dsn, {"public.people": None},
              pipeline="pgtext_t_" + source_dsn.rsplit("/", 1)[-1])  # fmt: skip
    # inet's cast to text prints '10.0.0.1/32' for the source's '10.0.0.1': refused
    res = r.cli("check")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "column 'ip' is text, but the source column is inet" in res.stdout
    assert "ALTER TABLE public.people ALTER COLUMN ip TYPE inet USING ip::inet;" in res.stdout
    execute(target_dsn, "ALTER TABLE people ALTER COLUMN ip TYPE inet USING ip::inet")
    r.drain()
    execute(source_dsn, "UPDATE people SET ip = '10.9.9.9' WHERE email = 'BOB@x.com'")
    r.drain()
    src = fetch(source_dsn, "people", _out("email, ip, mac, call, doc, x"), order_by="1")
    assert fetch(target_dsn, "people", _out("email, ip, mac, call, doc, x"), order_by="1") == src
    assert src[1][1] == "10.9.9.9"
    res = r.cli("verify", "-p", r.pipeline)
    assert res.returncode == 0, res.stdout + res.stderr


def test_pg_to_mariadb_carries_the_text_form(
    tmp_path: Path, source_dsn: str, my_target_dsn: str
) -> None:
    _source(source_dsn)
    tdb = my_target_dsn.rsplit("/", 1)[-1]
    r = Route(tmp_path, source_dsn, my_target_dsn, {"public.crm": f"{tdb}.crm"},
              pipeline="pgtext_my_" + source_dsn.rsplit("/", 1)[-1])  # fmt: skip
    r.drain()
    _changes(source_dsn)
    r.drain()
    cols = _out(CRM_COLS)
    with psycopg.connect(source_dsn) as conn:
        for k, v in (("TimeZone", "UTC"), ("DateStyle", "ISO, MDY")):
            conn.execute("SELECT set_config(%s, %s, false)", (k, v))
        order = 'email::text COLLATE "C"'
        src = conn.execute(f"SELECT {cols} FROM crm ORDER BY {order}").fetchall()
    quoted = ", ".join(f"`{c}`" for c in CRM_COLS.split(", "))  # CALL is a MariaDB keyword
    got = fetch(my_target_dsn, "crm", quoted, order_by="email")
    assert [tuple(row) for row in got] == src
    types = column_types(my_target_dsn, "crm")
    assert types["email"] == "varchar(768)" and types["ip"] == "varchar(43)"
    assert types["mac"] == "varchar(17)" and types["home"] == "longtext"
    res = r.cli("verify", "-p", r.pipeline)
    assert res.returncode == 0, res.stdout + res.stderr
