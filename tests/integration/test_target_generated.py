"""Pre-made targets whose server fills columns itself: an ALWAYS identity takes the source's
values (made BY DEFAULT, as PostgreSQL's own apply would write them), and a generated column
the source also sends is refused at start with the fix, which then works."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.integration.routes import Route, execute, fetch, kind

pytestmark = pytest.mark.integration


def _db(dsn: str) -> str:
    return dsn.rsplit("/", 1)[-1]


def test_always_identity_target_takes_the_source_keys(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    # As `pg_dump -s` of the source would make it.
    ddl = "CREATE TABLE leads (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text, n int)"
    execute(
        source_dsn, ddl, "INSERT INTO leads (v, n) SELECT 'x' || g, g FROM generate_series(1, 60) g"
    )
    execute(target_dsn, ddl)
    r = Route(tmp_path, source_dsn, target_dsn, {"public.leads": "public.leads"})
    assert r.cli("check").returncode == 0
    r.drain()  # the snapshot (COPY) and the stream's first start
    execute(
        source_dsn,
        "INSERT INTO leads (v, n) VALUES ('new', 1), ('new2', 2)",
        "UPDATE leads SET v = 'z', n = n + 1 WHERE id = 2",
        "DELETE FROM leads WHERE id = 3",
    )
    r.drain()
    assert fetch(source_dsn, "leads") == fetch(target_dsn, "public.leads")
    with psycopg.connect(target_dsn) as c:
        got = c.execute(
            "SELECT attidentity FROM pg_attribute "
            "WHERE attrelid = 'public.leads'::regclass AND attname = 'id'"
        ).fetchall()
    assert got == [("d",)]
    assert "target_identity_by_default" in r.log.read_text()


@pytest.fixture(params=["mysql->postgres", "mysql->mysql"])
def route(request: pytest.FixtureRequest) -> tuple[str, str]:
    src = str(request.getfixturevalue("my_source_dsn"))
    tgt = "target_dsn" if request.param.endswith("postgres") else "my_target_dsn"
    return src, str(request.getfixturevalue(tgt))


def test_generated_target_column_is_refused_with_the_fix(
    tmp_path: Path, route: tuple[str, str]
) -> None:
    src, tgt = route
    execute(
        src,
        "CREATE TABLE leads (id int PRIMARY KEY, first varchar(20), last varchar(20), "
        "full_name varchar(41) AS (concat(first, ' ', last)) VIRTUAL, n int)",
        "INSERT INTO leads (id, first, last, n) VALUES (1, 'a', 'b', 1), (2, 'c', 'd', 2)",
    )
    if kind(tgt) == "mysql":
        execute(
            tgt,
            "CREATE TABLE leads (id int PRIMARY KEY, first varchar(20), last varchar(20), "
            "full_name varchar(41) AS (concat(first, ' ', last)) PERSISTENT, n int)",
        )
        target = f"{_db(tgt)}.leads"
    else:
        execute(
            tgt,
            "CREATE TABLE leads (id int PRIMARY KEY, first varchar(20), last varchar(20), "
            "full_name text GENERATED ALWAYS AS (first || ' ' || last) STORED, n int)",
        )
        target = "public.leads"
    r = Route(tmp_path, src, tgt, {f"{_db(src)}.leads": target})
    checked = r.cli("check")
    assert checked.returncode != 0
    out = checked.stdout + checked.stderr
    assert "column 'full_name' is a generated column in the target" in out, out
    assert "`full_name: {drop: true}`" in out
    res = r.cli("run", "--until-caught-up")
    assert res.returncode != 0
    assert "generated column in the target" in res.stderr
    # The fix the message names: the target computes the column itself.
    text = r.config.read_text()
    r.config.write_text(
        text.replace(
            f"{{target: {target}}}", f"{{target: {target}, columns: {{full_name: {{drop: true}}}}}}"
        )
    )
    assert r.cli("check").returncode == 0
    r.drain()
    execute(
        src,
        "INSERT INTO leads (id, first, last, n) VALUES (3, 'e', 'f', 3)",
        "UPDATE leads SET last = 'z' WHERE id = 1",
        "DELETE FROM leads WHERE id = 2",
    )
    r.drain()
    assert fetch(src, "leads") == fetch(tgt, target if kind(tgt) == "postgres" else "leads")
