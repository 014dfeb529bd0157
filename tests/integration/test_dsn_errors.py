"""DSN errors against real servers.

A. A password holding every URL special character (``# @ / : % ?``), percent-encoded in the
   DSN, logs in and replicates on PostgreSQL (scram-sha-256) and MariaDB, at both ends.
B. The same password unencoded is refused by every command (check, run, offsets, status)
   with exit 2, naming the setting and how to encode it, and no piece of the password.
C. An invalid PostgreSQL connection option (``sslmode=bogus``) stops ``run`` at once with
   exit 1 and a clear message, never a retry loop; an unknown MySQL URL parameter is refused
   when the config is loaded.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import psycopg
import pytest
from psycopg import sql

from cdc_sync.testing.myserver import MyServer
from cdc_sync.testing.pgserver import PgServer
from tests.integration.routes import Route, execute, fetch

pytestmark = pytest.mark.integration

USER = "cdc_special"
PW = "Sx9#kq@z/Pw:1%?"
PIECES = ("Sx9", "kq@z", "Pw:1", "z/P", "1%?")  # around each special character of PW
HINT = "special characters in the user or password must be percent-encoded"
RETRY = "transient_error_retrying"
COMMANDS = (("check",), ("run", "--until-caught-up"), ("offsets", "show"), ("status",))


def _with_user(dsn: str, password: str) -> str:
    u = urlsplit(dsn)
    return u._replace(netloc=f"{USER}:{password}@{u.hostname}:{u.port}").geturl()


def _pg_scram_user(server: PgServer) -> None:
    """``USER`` with password ``PW``, checked by scram-sha-256 (the test servers trust every
    other user, whatever the password)."""
    hba = server.datadir / "pg_hba.conf"
    rules = (
        f"host all {USER} 127.0.0.1/32 scram-sha-256\n"
        f"host replication {USER} 127.0.0.1/32 scram-sha-256\n"
    )
    hba.write_text(rules + hba.read_text())  # first match wins
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {USER} LOGIN SUPERUSER REPLICATION")
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(USER), PW))
        conn.execute("SELECT pg_reload_conf()")
    wrong = _with_user(server.dsn(), "wrong")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the reload is asynchronous
        try:
            psycopg.connect(wrong, connect_timeout=2).close()
        except psycopg.OperationalError:
            return
        time.sleep(0.05)
    raise RuntimeError("pg_hba.conf still trusts the test user")


def _encoded_then_raw(route: Route, src: str, tgt: str, src_table: str, tgt_table: str) -> None:
    execute(src, "CREATE TABLE t (id int PRIMARY KEY, v varchar(20))")
    execute(src, "INSERT INTO t VALUES (1, 'one'), (2, 'two')")
    enc = quote(PW, safe="")
    route.env["SRC_DSN"], route.env["TGT_DSN"] = _with_user(src, enc), _with_user(tgt, enc)
    check = route.cli("check")
    assert check.returncode == 0, check.stdout + check.stderr
    route.drain()
    assert fetch(tgt, tgt_table) == fetch(src, src_table) == [(1, "one"), (2, "two")]

    for end, var in (("sources.src.dsn", "SRC_DSN"), ("targets.tgt.dsn", "TGT_DSN")):
        env = dict(route.env)
        route.env[var] = _with_user(src if var == "SRC_DSN" else tgt, PW)  # unencoded
        for command in COMMANDS:
            res = route.cli(*command, timeout=60)
            out = res.stdout + res.stderr
            assert res.returncode == 2, (command, out[-2000:])
            assert f"{end}: " in out and HINT in out and "%23" in out, out[-2000:]
            assert not [p for p in PIECES if p in out], out[-2000:]
        route.env = env


def test_an_encoded_special_password_works_on_postgresql_and_a_raw_one_is_refused(
    tmp_path: Path, pg_private_server: PgServer
) -> None:
    _pg_scram_user(pg_private_server)
    src = pg_private_server.create_database("dsn_src")
    tgt = pg_private_server.create_database("dsn_tgt")
    route = Route(tmp_path, src, tgt, {"public.t": "public.t"}, pipeline="dsn_pg")
    _encoded_then_raw(route, src, tgt, "public.t", "public.t")


def test_an_encoded_special_password_works_on_mariadb_and_a_raw_one_is_refused(
    tmp_path: Path,
    my_source_server: MyServer,
    my_target_server: MyServer,
    my_source_dsn: str,
    my_target_dsn: str,
) -> None:
    my_source_server.create_user(USER, PW)
    my_target_server.create_user(USER, PW)
    sdb, tdb = urlsplit(my_source_dsn).path.lstrip("/"), urlsplit(my_target_dsn).path.lstrip("/")
    route = Route(tmp_path, my_source_dsn, my_target_dsn, {f"{sdb}.t": f"{tdb}.t"}, "dsn_my")
    _encoded_then_raw(route, my_source_dsn, my_target_dsn, "t", "t")


@pytest.mark.parametrize("end", ["source", "target"])
def test_an_invalid_pg_connection_option_stops_at_once(
    tmp_path: Path, end: str, source_dsn: str, target_dsn: str
) -> None:
    execute(source_dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    route = Route(tmp_path, source_dsn, target_dsn, {"public.t": "public.t"}, f"opt_{end}")
    var, dsn = ("SRC_DSN", source_dsn) if end == "source" else ("TGT_DSN", target_dsn)
    route.env[var] = f"{dsn}?sslmode=bogus"
    for command in (("run", "--until-caught-up"), ("run",)):
        started = time.monotonic()
        res = route.cli(*command, timeout=60)
        took = time.monotonic() - started
        out = res.stdout + res.stderr
        assert res.returncode == 1, out[-2000:]
        assert took < 20 and RETRY not in out, f"{took:.1f}s: {out[-2000:]}"
        assert f"cannot connect to the {end}" in out, out[-2000:]
        assert 'invalid sslmode value: "bogus"; fix the connection options' in out, out[-2000:]
    check = route.cli("check")
    assert check.returncode == 1 and "invalid sslmode value" in check.stdout + check.stderr


def test_an_unknown_mysql_url_parameter_is_refused_at_load(
    tmp_path: Path, my_source_dsn: str, target_dsn: str
) -> None:
    db = urlsplit(my_source_dsn).path.lstrip("/")
    route = Route(tmp_path, my_source_dsn, target_dsn, {f"{db}.t": "public.t"}, "opt_my")
    for query, want in (
        ("sslmode=bogus", "unknown MySQL URL parameter 'sslmode'"),
        ("ssl_verify_cert=maybe", "ssl_verify_cert must be true or false"),
        ("connect_timeout=abc", "connect_timeout must be a whole number"),
    ):
        route.env["SRC_DSN"] = f"{my_source_dsn}?{query}"
        for command in (("check",), ("run", "--until-caught-up")):
            res = route.cli(*command, timeout=60)
            out = res.stdout + res.stderr
            assert res.returncode == 2 and "sources.src.dsn: " in out and want in out, out[-2000:]
