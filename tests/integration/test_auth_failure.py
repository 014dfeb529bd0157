"""A wrong password or an unknown user at either end: the daemon stops at once (no retry loop)
with exit 1 and a message naming the end and the fix; the secret never appears."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.integration.routes import Route, execute

pytestmark = pytest.mark.integration

SECRET = "Wr0ng-pa55-7731"
RIGHT = "R1ght-pa55-0042"


def _as_user(dsn: str, user: str, password: str | None) -> str:
    u = urlsplit(dsn)
    auth = f"{user}:{password}" if password else user
    return urlunsplit(u._replace(netloc=f"{auth}@{u.hostname}:{u.port}"))


def _mysql_user(dsn: str) -> None:
    db = urlsplit(dsn).path.lstrip("/")
    execute(
        dsn,
        f"CREATE USER IF NOT EXISTS 'cdc_auth'@'%' IDENTIFIED BY '{RIGHT}'",
        f"GRANT ALL ON `{db}`.* TO 'cdc_auth'@'%'",
        "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'cdc_auth'@'%'",
    )


@pytest.mark.parametrize("end", ["source", "target"])
@pytest.mark.parametrize("engine", ["mysql", "pg"])
def test_bad_credentials_stop_at_once_with_a_clear_message(
    tmp_path: Path,
    end: str,
    engine: str,
    source_dsn: str,
    target_dsn: str,
    my_source_dsn: str,
    my_target_dsn: str,
) -> None:
    src = my_source_dsn if engine == "mysql" else source_dsn
    tgt = my_target_dsn if engine == "mysql" else target_dsn
    bad_of = {"source": src, "target": tgt}[end]
    if engine == "mysql":
        _mysql_user(bad_of)
        bad = _as_user(bad_of, "cdc_auth", SECRET)  # a real user, a wrong password
    else:
        bad = _as_user(bad_of, "no_such_role", SECRET)  # the test servers trust any password
    execute(src, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    src_table = f"{urlsplit(src).path.lstrip('/')}.t" if engine == "mysql" else "public.t"
    tgt_table = f"{urlsplit(tgt).path.lstrip('/')}.t" if engine == "mysql" else "public.t"
    r = Route(tmp_path, src, tgt, {src_table: tgt_table}, pipeline=f"auth_{engine}_{end}")
    r.env["SRC_DSN" if end == "source" else "TGT_DSN"] = bad

    started = time.monotonic()
    res = r.cli("run", timeout=60)  # the daemon itself, not --until-caught-up
    took = time.monotonic() - started
    out = res.stdout + res.stderr
    assert res.returncode == 1, out[-2000:]
    assert took < 20, f"{took:.1f}s: an authentication failure must not be retried"
    assert SECRET not in out
    low = out.lower()
    assert "access denied" in low or "authentication" in low or "does not exist" in low, out
    assert ("cdc_auth" if engine == "mysql" else "no_such_role") in out, out[-2000:]
    assert f"cannot connect to the {end}" in out, out[-2000:]
    if engine == "mysql":
        assert "password" in low  # the fix: check the user and password
    check = r.cli("check")
    assert check.returncode != 0 and SECRET not in check.stdout + check.stderr
