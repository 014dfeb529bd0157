"""DSN errors: no piece of the user or password in any message, the percent-encoding hint
when the URL cannot be read, and invalid connection options permanent (never retried)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from cdc_sync.config.dsn import check_postgres_dsn, parse_mysql_dsn
from cdc_sync.config.loader import load_config
from cdc_sync.errors import ConfigError, PermanentError, TransientError, refused_setting
from cdc_sync.runtime.classify import classify
from cdc_sync.sinks.sql.errors import classify_db_error

PW = "Sx9#kq@z/Pw:1%?"
# Every piece a broken parse could show: around each special character of PW, the user too.
PIECES = ("cdcpw", "Sx9", "kq", "z/P", "Pw", ":1", "1%")
HINT = "special characters in the user or password must be percent-encoded"
CODES = ("%23", "%40", "%2F", "%25", "%3F", "%3A")

CONFIG = """
sources:
  src: {type: %s, dsn: "%s"%s}
targets:
  tgt: {type: postgres, dsn: "postgresql://cdc@db2/hub"}
pipelines:
  p: {source: src, target: tgt, tables: {s.t: {}}}
"""


def _clean(text: str) -> None:
    for piece in PIECES:
        assert piece not in text, (piece, text)


RAW_MYSQL = [
    f"mysql://cdcpw:{PW}@127.0.0.1:3306/db",
    "mysql://cdcpw:Sx9#kq@127.0.0.1:3306/db",  # '#': the rest read as a fragment
    "mysql://cdcpw:Sx9/kq@127.0.0.1:3306/db",  # '/': the rest read as the database
    "mysql://cdcpw:Sx9?kq=1@127.0.0.1:3306/db",  # '?': the rest read as parameters
    "mysql://cdcpw:123#kq@127.0.0.1:3306/db",  # read as host cdcpw, port 123: silently wrong
    "mysql://cdcpw:Sx9@127.0.0.1:3306/db?ssl_ca=/x@y",  # an '@' elsewhere cannot be told apart
]
RAW_PG = [
    f"postgresql://cdcpw:{PW}@127.0.0.1:5432/db",
    "postgresql://cdcpw:Sx9@kq@127.0.0.1:5432/db",  # libpq ends the password at the first '@'
    "postgres://cdcpw:Sx9/kq@127.0.0.1:5432/db",  # and the host part at the first '/'
    "postgresql://cdcpw:Sx9%kq@127.0.0.1:5432/db",  # '%' not starting %XX
    "postgresql://cdcpw:Sx9 kq@127.0.0.1:5432/db",  # a space
    "postgresql://cdcpw:Sx9@[::1/db",  # libpq quotes the whole URL
]


@pytest.mark.parametrize("dsn", RAW_MYSQL)
def test_an_unencoded_mysql_password_is_refused_with_the_hint_and_no_piece(dsn: str) -> None:
    with pytest.raises(ValueError) as ei:
        parse_mysql_dsn(dsn)
    _clean(str(ei.value))
    assert HINT in str(ei.value) and all(code in str(ei.value) for code in CODES)


@pytest.mark.parametrize("dsn", RAW_PG)
def test_an_unencoded_pg_password_is_refused_with_the_hint_and_no_piece(dsn: str) -> None:
    with pytest.raises(ValueError) as ei:
        check_postgres_dsn(dsn)
    _clean(str(ei.value))
    assert HINT in str(ei.value) and all(code in str(ei.value) for code in CODES)


@pytest.mark.parametrize(
    "dsn",
    [
        "mysql://cdcpw:Sx9@127.0.0.1:33o6/db",  # a port that is not a number
        "mysql://cdcpw:Sx9@127.0.0.1:99999/db",
        "mysql://cdcpw:Sx9@127.0.0.1/db?kq",
        "mysql://cdcpw:Sx9@127.0.0.1/db?connect_timeout=Pw",
        "mysql://cdcpw:Sx9@127.0.0.1/db?ssl_verify_cert=Pw",
        "cdcpw:Sx9@127.0.0.1/db",  # no scheme: never echoed (it would be the user)
    ],
)
def test_other_mysql_url_errors_hold_no_piece_of_the_url(dsn: str) -> None:
    with pytest.raises(ValueError) as ei:
        parse_mysql_dsn(dsn)
    _clean(str(ei.value))


def test_mysql_parameter_values_are_checked() -> None:
    with pytest.raises(ValueError, match="connect_timeout must be a whole number"):
        parse_mysql_dsn("mysql://u@h/db?connect_timeout=0")
    with pytest.raises(ValueError, match="ssl_verify_identity must be true or false"):
        parse_mysql_dsn("mysql://u@h/db?ssl_verify_identity=maybe")
    with pytest.raises(ValueError, match="unknown MySQL URL parameter 'sslmode'"):
        parse_mysql_dsn("mysql://u@h/db?sslmode=required")
    dsn = parse_mysql_dsn("mysql://u@h/db?connect_timeout=5&ssl_verify_identity=on&")
    assert dict(dsn.params) == {"connect_timeout": 5, "ssl_verify_identity": True}


@pytest.mark.parametrize(
    "dsn",
    [
        "host=127.0.0.1 user=cdcpw password=Sx9 kq",  # a space: 'kq' read as a key
        "host=127.0.0.1 user=cdcpw password='Sx9",
        "host=127.0.0.1 user=cdcpw Pw=1",
        "postgresql://cdcpw:Sx9@127.0.0.1/db?kq",
        "postgresql://cdcpw:Sx9@127.0.0.1/db?kq=1=2",
        "mysql://cdcpw:Sx9@127.0.0.1/db",
    ],
)
def test_other_pg_dsn_errors_hold_no_piece_of_the_dsn(dsn: str) -> None:
    with pytest.raises(ValueError) as ei:
        check_postgres_dsn(dsn)
    _clean(str(ei.value))


def test_an_unknown_pg_url_parameter_is_named() -> None:
    with pytest.raises(ValueError, match="unknown URL parameter 'sslmdoe'"):
        check_postgres_dsn("postgresql://cdc@h/db?sslmdoe=require")


def test_encoded_passwords_read_back_exactly() -> None:
    enc = quote(PW, safe="")
    my = parse_mysql_dsn(f"mysql://cdcpw:{enc}@127.0.0.1:3306/db")
    assert (my.user, my.password, my.host, my.port, my.database) == (
        "cdcpw",
        PW,
        "127.0.0.1",
        3306,
        "db",
    )
    pg = f"postgresql://cdcpw:{enc}@127.0.0.1:5432/db"
    check_postgres_dsn(pg)
    assert conninfo_to_dict(pg)["password"] == PW
    # libpq reads a '#' or '?' in the password as part of it: still accepted
    check_postgres_dsn("postgresql://cdcpw:ab#c?d@127.0.0.1/db")
    check_postgres_dsn("host=127.0.0.1 password='a b#@/?%'")


@pytest.mark.parametrize("engine", ["mysql", "postgres"])
@pytest.mark.parametrize("how", ["whole", "password"])
def test_the_config_names_the_setting_also_with_a_substituted_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str, how: str
) -> None:
    scheme, extra = ("mysql", ", server_id: 7") if engine == "mysql" else ("postgresql", "")
    if how == "whole":
        monkeypatch.setenv("SRC_DSN", f"{scheme}://cdcpw:{PW}@127.0.0.1/db")
        dsn = "${SRC_DSN}"
    else:
        monkeypatch.setenv("SRC_PW", PW)
        dsn = f"{scheme}://cdcpw:${{SRC_PW}}@127.0.0.1/db"
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG % (engine, dsn, extra))
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    text = str(ei.value)
    _clean(text)
    assert text.startswith("sources.src.dsn: ") and HINT in text, text
    monkeypatch.setenv("SRC_PW", quote(PW, safe=""))
    monkeypatch.setenv("SRC_DSN", f"{scheme}://cdcpw:{quote(PW, safe='')}@127.0.0.1/db")
    assert load_config(path).sources["src"].dsn.get_secret_value().endswith("@127.0.0.1/db")


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ('connection is bad: invalid sslmode value: "bogus"', 'invalid sslmode value: "bogus"'),
        ('connection is bad: invalid "ssl_min_protocol_version" value: "x"', "ssl_min_protocol"),
        ('connection is bad: connection to server at "h", port 5432 failed: invalid integer '
         'value "x" for connection option "keepalives"', 'for connection option "keepalives"'),
        ('connection is bad: invalid port number: "x"', "invalid port number"),
        ("connection is bad: could not match 2 port numbers to 3 hosts", "could not match"),
        ('connection is bad: require_auth method "md5" cannot be mixed with negative methods',
         "require_auth method"),
        ("bad value for connect_timeout: 'abc'", "connect_timeout"),
        ('connection failed: connection to server at "h", port 5432 failed: FATAL:  invalid '
         'value for parameter "statement_timeout": "abc"', 'parameter "statement_timeout"'),
        ('connection failed: connection to server at "h", port 5432 failed: FATAL:  '
         'unrecognized configuration parameter "bogus"', 'parameter "bogus"'),
    ],
)  # fmt: skip
def test_an_invalid_pg_connection_option_is_permanent(text: str, want: str) -> None:
    for cls in (psycopg.OperationalError, psycopg.ProgrammingError):
        err = cls(text)
        for got in (classify(err, "source"), classify_db_error(err, "hub.t")):
            assert isinstance(got, PermanentError), got
            assert want in str(got) and "fix the connection options" in str(got)


def test_a_connection_failure_stays_transient() -> None:
    err = psycopg.OperationalError('connection to server at "h", port 5432 failed: refused')
    assert refused_setting(err, "source") is None
    assert isinstance(classify(err, "source"), TransientError)


@pytest.mark.parametrize("dsn", [RAW_PG[0], *RAW_PG[3:]])  # the others libpq reads, wrongly
def test_a_pg_dsn_libpq_cannot_read_stops_with_no_piece(dsn: str) -> None:
    """At connect time too: the driver's classifiers never pass libpq's quote on."""
    with pytest.raises(psycopg.Error) as ei:
        psycopg.connect(dsn, connect_timeout=1)
    for got in (classify(ei.value, "source"), classify_db_error(ei.value, "hub.t")):
        assert isinstance(got, PermanentError)
        _clean(str(got))
        assert HINT in str(got)
