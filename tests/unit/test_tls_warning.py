"""`cdc-sync check` warns when TLS is off or unverified for a non-loopback host (issue #8):
the pure part, from DSNs and configs alone."""

from __future__ import annotations

import pytest

from cdc_sync.config.models import Config
from cdc_sync.runtime.checks import is_local_host, mysql_tls_warning, pg_tls_warning, tls_warnings

CANARY = "Canary-Pw-5f3e9a"
OFF = "TLS is off or unverified for"
NO_HOST_CHECK = "TLS does not verify the server's host name for"
CA = "sslrootcert=/etc/cdc/ca.pem"
PG = "postgresql://cdc@db.example.com/crm"
MY = "mysql://cdc@db.example.com/crm"
HOST = "db.example.com"


@pytest.fixture(autouse=True)
def _no_libpq_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PGHOST", "PGHOSTADDR", "PGSSLMODE"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("localhost", True),
        ("LOCALHOST", True),
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("/var/run/postgresql", True),
        ("", True),
        ("db.example.com", False),
        ("10.0.0.5", False),
        ("localhost.example.com", False),
        ("::ffff:10.0.0.5", False),
    ],
)
def test_is_local_host(host: str, local: bool) -> None:
    assert is_local_host(host) is local


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        (PG, f"{OFF} {HOST} (no sslmode, i.e. prefer)"),
        (f"{PG}?sslmode=disable", f"{OFF} {HOST} (sslmode=disable)"),
        (f"{PG}?sslmode=allow", f"{OFF} {HOST} (sslmode=allow)"),
        ("postgresql://cdc@10.0.0.5/crm?sslmode=prefer", f"{OFF} 10.0.0.5 (sslmode=prefer)"),
        (f"{PG}?sslmode=require", f"{NO_HOST_CHECK} {HOST} (sslmode=require)"),
        (f"{PG}?sslmode=verify-ca&{CA}", f"{NO_HOST_CHECK} {HOST} (sslmode=verify-ca)"),
        (f"{PG}?sslmode=verify-full&{CA}", None),
        (f"host=db.example.com dbname=crm sslmode=verify-full {CA}", None),
        ("host=db.example.com dbname=crm", f"{OFF} db.example.com"),
        # Loopback or a Unix socket: nothing leaves the machine.
        ("postgresql://cdc@localhost/crm", None),
        ("postgresql://cdc@127.0.0.1:5433/crm?sslmode=disable", None),
        ("postgresql://cdc@[::1]/crm", None),
        ("postgresql:///crm", None),
        ("host=/var/run/postgresql dbname=crm", None),
        # Several hosts: the remote ones are named.
        ("postgresql://cdc@localhost,db2.example.com/crm", f"{OFF} db2.example.com ("),
        # hostaddr is where libpq connects; host is then only the name the certificate must bear.
        ("host=db.example.com hostaddr=127.0.0.1 dbname=crm", None),
        ("host=localhost hostaddr=10.0.0.5 dbname=crm", f"{OFF} 10.0.0.5 ("),
    ],
)  # fmt: skip
def test_pg_tls_warning(dsn: str, expected: str | None) -> None:
    got = pg_tls_warning(dsn)
    if expected is None:
        assert got is None
    else:
        assert got is not None and got.startswith(expected), got
        assert "fix: add sslmode=verify-full&sslrootcert=/path/to/ca.pem to the DSN" in got


def test_pg_tls_warning_follows_the_libpq_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGSSLMODE", "verify-full")
    assert pg_tls_warning("postgresql://cdc@db.example.com/crm") is None
    monkeypatch.setenv("PGSSLMODE", "require")
    assert NO_HOST_CHECK in (pg_tls_warning("postgresql://cdc@db.example.com/crm") or "")
    monkeypatch.setenv("PGHOST", "db.example.com")
    assert pg_tls_warning("postgresql:///crm") is not None


def test_pg_tls_warning_ignores_what_it_cannot_parse() -> None:
    assert pg_tls_warning("postgresql://cdc@db.example.com/crm?bogus=1") is None


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        (MY, f"{OFF} {HOST} (no ssl_ca)"),
        (f"{MY}?ssl_ca=/ca.pem", "(ssl_ca without ssl_verify_cert / ssl_verify_identity: "
                                 "the certificate is not checked)"),
        (f"{MY}?ssl_ca=/ca.pem&ssl_verify_identity=false", "the certificate is not checked"),
        (f"{MY}?ssl_ca=/ca.pem&ssl_verify_cert=true",
         "(ssl_verify_cert without ssl_verify_identity: the host name is not checked)"),
        (f"{MY}?ssl_verify_identity=true", "(no ssl_ca: the host name is not checked)"),
        (f"{MY}?ssl_ca=/ca.pem&ssl_verify_identity=true", None),
        (f"{MY}?ssl_ca=/ca.pem&ssl_verify_cert=1&ssl_verify_identity=1", None),
        ("mysql://cdc@localhost/crm", None),
        ("mariadb://cdc@127.0.0.1:3307/crm", None),
    ],
)  # fmt: skip
def test_mysql_tls_warning(dsn: str, expected: str | None) -> None:
    got = mysql_tls_warning(dsn)
    if expected is None:
        assert got is None
    else:
        assert got is not None and expected in got, got
        assert "fix: add ssl_ca=/path/to/ca.pem&ssl_verify_identity=true to the DSN" in got


@pytest.mark.parametrize("dsn", [f"postgresql://cdc:{CANARY}@db.example.com/crm",
                                 f"mysql://cdc:{CANARY}@db.example.com/crm"])  # fmt: skip
def test_a_warning_never_shows_the_password(dsn: str) -> None:
    got = pg_tls_warning(dsn) if dsn.startswith("postgresql") else mysql_tls_warning(dsn)
    assert got is not None and "db.example.com" in got
    assert CANARY not in got and "cdc:" not in got


def _config(source: dict[str, object], target: dict[str, object]) -> Config:
    return Config.model_validate(
        {
            "sources": {"src": source},
            "targets": {"tgt": target},
            "pipelines": {"p": {"source": "src", "target": "tgt", "tables": {"public.t": {}}}},
        }
    )


def test_tls_warnings_name_the_side() -> None:
    cfg = _config(
        {"type": "postgres", "dsn": "postgresql://cdc@db1.example.com/crm?sslmode=require"},
        {"type": "mysql", "dsn": "mysql://cdc@db2.example.com/hub"},
    )
    got = tls_warnings(cfg, "p")
    assert [w.split(":", 1)[0] for w in got] == ["source", "target"]
    assert f"source: {NO_HOST_CHECK} db1.example.com" in got[0]
    assert f"target: {OFF} db2.example.com (no ssl_ca)" in got[1]


def test_no_tls_warning_when_verified_or_local() -> None:
    cfg = _config(
        {
            "type": "mysql",
            "server_id": 7,
            "dsn": "mysql://cdc@db1.example.com/crm?ssl_ca=/ca.pem&ssl_verify_identity=true",
        },
        {"type": "postgres", "dsn": "postgresql://cdc@localhost/hub"},
    )
    assert tls_warnings(cfg, "p") == []
