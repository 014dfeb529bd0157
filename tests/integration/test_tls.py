"""TLS to the sources (issue #8), against servers serving a certificate of a test CA.

A. ``sslmode=verify-full`` (PostgreSQL) and ``ssl_ca`` + ``ssl_verify_identity`` (MariaDB)
   with the right CA and the host name ``localhost``: rows replicate, and the server says the
   daemon's sessions are encrypted (its user is refused without TLS, too).
B. The wrong CA, or a host name the certificate does not bear (``127.0.0.2``, where the
   server listens as well): ``run`` refuses with one clear line naming the source and the
   certificate problem, never the DSN's password.
C. ``check`` passes with verified TLS and no warning; TLS off for a (seemingly) remote host
   is a warning, never a problem.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
from structlog.testing import capture_logs

from cdc_sync.config import load_config
from cdc_sync.config.dsn import parse_mysql_dsn
from cdc_sync.runtime import checks
from cdc_sync.testing.myserver import MyServer, running_mariadb
from cdc_sync.testing.pgserver import PgServer, running_pg
from tests.conftest import Report, drop_slots
from tests.faults.checks import CANARY_PASSWORD
from tests.integration.harness import kill, wait_until
from tests.integration.routes import Route, execute, fetch
from tests.integration.tls_ca import UNNAMED_HOST, TestCa, make_test_ca

pytestmark = pytest.mark.integration

USER = "cdc_tls"  # on the TLS servers: refused without TLS
LISTEN = f"127.0.0.1,{UNNAMED_HOST}"
ROWS = 50
RETRY = "transient_error_retrying"
_ids = itertools.count()


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCa:
    return make_test_ca(tmp_path_factory.mktemp("tls-ca"))


@pytest.fixture(scope="module")
def pg_tls(test_ca: TestCa) -> Iterator[PgServer]:
    with running_pg(tls=test_ca.server, extra={"listen_addresses": f"'{LISTEN}'"}) as server:
        server.create_user(USER, require_ssl=True)
        yield server


@pytest.fixture(scope="module")
def my_tls(test_ca: TestCa) -> Iterator[MyServer]:
    with running_mariadb(extra={"bind_address": LISTEN}, tls=test_ca.server) as server:
        server.create_user(USER, CANARY_PASSWORD, require_ssl=True)
        yield server


def pg_tls_dsn(server: PgServer, db: str, ca: Path, host: str = "localhost") -> str:
    """Trust authentication: the canary password is sent, never checked, never shown."""
    return (
        f"postgresql://{USER}:{CANARY_PASSWORD}@{host}:{server.port}/{db}"
        f"?sslmode=verify-full&sslrootcert={ca}"
    )


def my_tls_dsn(server: MyServer, db: str, ca: Path, host: str = "localhost") -> str:
    return (
        f"mysql://{USER}:{CANARY_PASSWORD}@{host}:{server.port}/{db}"
        f"?ssl_ca={ca}&ssl_verify_identity=true"
    )


@dataclass
class Source:
    """A fresh database with a table ``items`` of ``ROWS`` rows on a TLS server."""

    engine: str  # postgres | mysql
    admin_dsn: str  # the fixtures' own connection (superuser, TLS not verified)
    db: str
    dsn: Callable[[Path, str], str]  # (CA file, host) → the daemon's DSN

    @property
    def table(self) -> str:
        return "public.items" if self.engine == "postgres" else f"{self.db}.items"

    def insert(self, first: int, count: int) -> None:
        values = ", ".join(f"({i}, 'item {i}')" for i in range(first, first + count))
        execute(self.admin_dsn, f"INSERT INTO items VALUES {values}")


@pytest.fixture(params=["postgres", "mysql"])
def source(request: pytest.FixtureRequest) -> Iterator[Source]:
    engine = request.param
    db = f"tls_{next(_ids)}"
    if engine == "postgres":
        pg: PgServer = request.getfixturevalue("pg_tls")
        src = Source(engine, pg.create_database(db), db, lambda ca, h: pg_tls_dsn(pg, db, ca, h))
    else:
        my: MyServer = request.getfixturevalue("my_tls")
        src = Source(engine, my.create_database(db), db, lambda ca, h: my_tls_dsn(my, db, ca, h))
    execute(src.admin_dsn, "CREATE TABLE items (id int PRIMARY KEY, label text NOT NULL)")
    src.insert(1, ROWS)
    yield src
    if engine == "postgres":
        drop_slots(request.getfixturevalue("pg_tls"), db)


def route(tmp: Path, src: Source, dsn: str, target_dsn: str) -> Route:
    # Slots are per cluster: one pipeline name per source database.
    return Route(tmp, dsn, target_dsn, {src.table: "public.items"}, pipeline=f"p_{src.db}")


def _events(text: str, name: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and ev.get("event") == name:
            out.append(ev)
    return out


# -- A: verified TLS replicates ---------------------------------------------------------------


def _pg_sessions_encrypted(src: Source) -> list[tuple[str, bool]]:
    with psycopg.connect(src.admin_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT a.backend_type, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s "
            "USING (pid) WHERE a.usename = %s AND a.datname = %s",
            (USER, src.db),
        ).fetchall()
    return [(str(t), bool(ssl)) for t, ssl in rows]


def _refused_without_tls(src: Source, test_ca: TestCa) -> bool:
    """The server itself refuses the daemon's user a session without TLS."""
    if src.engine == "postgres":
        plain = src.dsn(test_ca.ca, "127.0.0.1").split("?")[0] + "?sslmode=disable"
        try:
            psycopg.connect(plain, connect_timeout=5).close()
        except psycopg.OperationalError as e:
            return "no encryption" in str(e)
        return False
    args = parse_mysql_dsn(src.dsn(test_ca.ca, "localhost")).connect_args()
    args = {k: v for k, v in args.items() if not k.startswith("ssl_")}
    try:
        pymysql.connect(**args, ssl_disabled=True, connect_timeout=5).close()
    except pymysql.err.OperationalError as e:
        return e.args[0] == 1045  # access denied: the user REQUIRE SSL
    return False


def _my_cipher(dsn: str) -> str:
    """``Ssl_cipher`` of a session opened with the daemon's DSN, as PyMySQL gets it."""
    parsed = parse_mysql_dsn(dsn)
    conn = pymysql.connect(**parsed.connect_args(), database=parsed.database)
    with conn as c, c.cursor() as cur:
        cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        row = cur.fetchone()
    return str(row[1]) if row else ""


def test_verified_tls_replicates(
    tmp_path: Path, source: Source, test_ca: TestCa, target_dsn: str, report: Report
) -> None:
    dsn = source.dsn(test_ca.ca, "localhost")
    r = route(tmp_path, source, dsn, target_dsn)
    check = r.cli("check")
    first = r.cli("run", "--until-caught-up")
    # Streamed, not copied: the stream's own connection (walsender / binlog dump) is TLS too.
    source.insert(ROWS + 1, ROWS)
    outputs = [check.stdout, check.stderr, first.stdout, first.stderr]
    encrypted: list[tuple[str, bool]] = []
    if source.engine == "postgres":
        daemon = r.start()
        try:
            wait_until(lambda: len(fetch_or_none(target_dsn)) == 2 * ROWS, timeout=30)
            encrypted = _pg_sessions_encrypted(source)
        finally:
            stopped = kill(daemon, signal.SIGTERM)
        cipher = ""
    else:
        second = r.cli("run", "--until-caught-up")
        stopped = second.returncode
        outputs.append(second.stdout + second.stderr)
        cipher = _my_cipher(dsn)
    copied = fetch(target_dsn, "public.items", "id, label")
    expected = fetch(source.admin_dsn, "items", "id, label")
    outputs.append(r.log.read_text() if r.log.exists() else "")
    leaked = int(any(CANARY_PASSWORD in out for out in outputs))
    report(
        rows=len(copied),
        lost=len(set(expected) - set(copied)),
        leaked=leaked,
        message=f"{source.engine}: encrypted sessions {encrypted or cipher}",
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "check_warning" not in check.stderr, check.stderr
    assert first.returncode == 0, first.stderr[-3000:]
    assert stopped == 0, outputs[-1][-3000:]
    assert copied == expected and len(copied) == 2 * ROWS
    if source.engine == "postgres":
        assert encrypted, "no session of the daemon's user on the source"
        assert ("walsender", True) in encrypted, encrypted
        assert all(ssl for _, ssl in encrypted), encrypted
    else:
        assert cipher, "the DSN's session is not encrypted"
    assert _refused_without_tls(source, test_ca)
    assert not leaked


# -- B: the wrong CA, the wrong host name ----------------------------------------------------


@dataclass
class Verdict:
    code: int | None  # None: still retrying when given up on
    errors: list[str]  # the "error: …" lines, or what each retry logged
    output: str
    seconds: float


def run_to_verdict(r: Route, retries: int = 3, timeout: float = 60) -> Verdict:
    """``run --until-caught-up`` until it exits, or until it has logged ``retries`` retries
    (a transient classification: it would retry forever), or ``timeout``."""
    out, err = r.log.with_suffix(".out"), r.log
    start = time.monotonic()
    with out.open("wb") as fo, err.open("wb") as fe:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cdc_sync", "run", "--until-caught-up", "-c", str(r.config)],
            env=r.env,
            stdout=fo,
            stderr=fe,
        )
        try:
            while proc.poll() is None and time.monotonic() - start < timeout:
                if len(_events(err.read_text(errors="replace"), RETRY)) >= retries:
                    break
                time.sleep(0.1)
        finally:
            code = proc.poll()
            if code is None:
                proc.kill()
                proc.wait(30)
    seconds = time.monotonic() - start
    text = err.read_text(errors="replace")
    output = out.read_text(errors="replace") + text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    if code is None:
        errors = [f"(retrying) {ev.get('error')}" for ev in _events(text, RETRY)]
    return Verdict(code, errors, output, seconds)


class NotRefused(AssertionError):
    """``run`` was still retrying (or still running) instead of refusing the server."""


CASES = ["wrong_ca", "wrong_host"]


@pytest.mark.parametrize("case", CASES)
def test_unverifiable_server_is_refused(
    tmp_path: Path, source: Source, test_ca: TestCa, target_dsn: str, case: str, report: Report
) -> None:
    if case == "wrong_ca":
        dsn, expected = source.dsn(test_ca.wrong_ca, "localhost"), ("certificate", "verif")
    else:
        dsn, expected = source.dsn(test_ca.ca, UNNAMED_HOST), ("certificate", UNNAMED_HOST)
    r = route(tmp_path, source, dsn, target_dsn)
    v = run_to_verdict(r)
    leaked = int(CANARY_PASSWORD in v.output)
    first = v.errors[0] if v.errors else "(nothing)"
    report(
        rows=0,
        leaked=leaked,
        message=f"{source.engine}: exit {v.code} in {v.seconds:.1f} s: {first[:160]}",
    )
    assert not leaked, "the DSN's password was printed"
    assert not fetch_or_none(target_dsn), "rows arrived from an unverified server"
    if v.code is None:
        raise NotRefused(f"not refused after {v.seconds:.1f} s: {v.errors[-1:]}\n{v.output}")
    assert v.code in (1, 2), v.output
    assert len(v.errors) == 1, v.errors
    message = v.errors[0].lower()
    assert "source" in message, message
    for word in expected:
        assert word in message, message


@pytest.mark.parametrize("case", ["wrong_ca", "wrong_host"])
def test_check_reports_an_unverifiable_server(
    tmp_path: Path, source: Source, test_ca: TestCa, target_dsn: str, case: str, report: Report
) -> None:
    """``check`` makes it a problem (exit 1), naming the source and the certificate."""
    if case == "wrong_ca":
        dsn, expected = source.dsn(test_ca.wrong_ca, "localhost"), "certificate verify failed"
    else:
        dsn, expected = source.dsn(test_ca.ca, UNNAMED_HOST), UNNAMED_HOST
    res = route(tmp_path, source, dsn, target_dsn).cli("check", timeout=60)
    out = res.stdout + res.stderr
    lines = [line.strip() for line in res.stdout.splitlines() if line.startswith("  - ")]
    leaked = int(CANARY_PASSWORD in out)
    report(rows=0, leaked=leaked, message=f"{source.engine}: exit {res.returncode}: {lines[:1]}")
    assert res.returncode == 1, out
    assert len(lines) == 1 and lines[0].startswith("- source: "), out
    assert "certificate" in lines[0].lower() and expected in lines[0], lines[0]
    assert not leaked


def fetch_or_none(target_dsn: str) -> list[tuple[Any, ...]]:
    try:
        return fetch(target_dsn, "public.items")
    except psycopg.errors.UndefinedTable:
        return []


# -- C: check --------------------------------------------------------------------------------


def test_check_warns_but_passes_when_tls_is_off_for_a_remote_host(
    tmp_path: Path,
    source: Source,
    test_ca: TestCa,
    target_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    report: Report,
) -> None:
    """The servers listen on loopback only: "remote" is every host here, by patching the
    locality test. TLS stays on (the user requires it), only unverified."""
    if source.engine == "postgres":
        dsn = source.dsn(test_ca.ca, "localhost").replace("verify-full", "require")
    else:
        dsn = source.dsn(test_ca.ca, "localhost").replace("&ssl_verify_identity=true", "")
    r = route(tmp_path, source, dsn, target_dsn)
    monkeypatch.setenv("SRC_DSN", dsn)
    monkeypatch.setenv("TGT_DSN", target_dsn)
    cfg = load_config(r.config)
    monkeypatch.setattr(checks, "is_local_host", lambda host: False)
    warnings: list[str] = []
    problems = checks.check_pipeline(cfg, r.pipeline, warn=warnings.append)
    with capture_logs() as logged:
        checks.check_pipeline(cfg, r.pipeline)
    text = "\n".join(warnings + [json.dumps(e) for e in logged])
    leaked = int(CANARY_PASSWORD in text)
    report(rows=0, leaked=leaked, message=f"{source.engine}: {warnings[0][:140]}")
    assert problems == [], problems
    assert [w.split(":", 1)[0] for w in warnings] == ["source", "target"], warnings
    assert "does not verify the server" in warnings[0] and "localhost" in warnings[0]
    assert "TLS is off or unverified for 127.0.0.1" in warnings[1], warnings[1]
    events = [e for e in logged if e["event"] == "check_warning"]
    assert [e["warning"] for e in events] == warnings
    assert all(e["log_level"] == "warning" for e in events)
    assert not leaked
