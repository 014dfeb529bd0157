"""MySQL sources and targets in the config: required server_id, DSN checks, the examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdc_sync.config import load_config
from cdc_sync.config.dsn import parse_mysql_dsn
from cdc_sync.config.models import MysqlSource, MysqlTarget
from cdc_sync.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"

MYSQL = """
sources:
  dialer: {type: mysql, dsn: "${DIALER_DSN}"%s}
targets:
  copy: {type: mysql, dsn: "${COPY_DSN}"}
pipelines:
  p:
    source: dialer
    target: copy
    tables:
      dialer.calls: {target: copy.calls}
"""


def _load(tmp_path: Path, text: str) -> object:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return load_config(p)


def test_mysql_source_and_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("a CA")  # the file must exist (checked at load)
    monkeypatch.setenv("DIALER_DSN", f"mysql://cdc:pw@db3:3307/dialer?ssl_ca={ca}")
    monkeypatch.setenv("COPY_DSN", "mysql://cdc@db4/copy")
    cfg = _load(tmp_path, MYSQL % ", server_id: 4242")
    src = cfg.sources["dialer"]  # type: ignore[attr-defined]
    assert isinstance(src, MysqlSource) and src.server_id == 4242
    assert src.position_mode == "auto"
    assert isinstance(cfg.targets["copy"], MysqlTarget)  # type: ignore[attr-defined]
    dsn = parse_mysql_dsn(src.dsn.get_secret_value())
    assert (dsn.host, dsn.port, dsn.user, dsn.database) == ("db3", 3307, "cdc", "dialer")
    assert dict(dsn.params) == {"ssl_ca": str(ca)}
    assert "pw" not in repr(dsn) and "pw" not in dsn.safe()


def test_server_id_is_required(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIALER_DSN", "mysql://cdc@db3/dialer")
    monkeypatch.setenv("COPY_DSN", "mysql://cdc@db4/copy")
    with pytest.raises(ConfigError) as ei:
        _load(tmp_path, MYSQL % "")
    assert "sources.dialer.server_id: Field required" in ei.value.problems


def test_mysql_target_needs_a_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIALER_DSN", "mysql://cdc@db3/dialer")
    monkeypatch.setenv("COPY_DSN", "mysql://cdc@db4")
    with pytest.raises(ConfigError) as ei:
        _load(tmp_path, MYSQL % ", server_id: 1")
    assert any(p.startswith("targets.copy.dsn: ") and "database" in p for p in ei.value.problems)


def test_literal_mysql_password_refused(tmp_path: Path) -> None:
    text = (MYSQL % ", server_id: 1").replace("${DIALER_DSN}", "mysql://cdc:hunter2@db3/d")
    with pytest.raises(ConfigError) as ei:
        _load(tmp_path, text)
    assert any("literal password" in p for p in ei.value.problems)
    assert not any("hunter2" in p for p in ei.value.problems)


def test_bad_mysql_url_parameter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIALER_DSN", "mysql://cdc@db3/dialer?sslmode=require")
    monkeypatch.setenv("COPY_DSN", "mysql://cdc@db4/copy")
    with pytest.raises(ConfigError) as ei:
        _load(tmp_path, MYSQL % ", server_id: 1")
    assert any("unknown MySQL URL parameter 'sslmode'" in p for p in ei.value.problems)


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_examples_load(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var, value in {
        "CRM_DSN": "postgresql://cdc@db1/crm",
        "HUB_DSN": "postgresql://cdc@db2/hub",
        "DIALER_DSN": "mysql://cdc@db3:3306/dialer",
        "COPY_DSN": "mysql://cdc@db4:3306/dialer_copy",
    }.items():
        monkeypatch.setenv(var, value)
    # The rules example reads its HMAC key from /run/secrets; here from a file of the test's.
    key = tmp_path / "hash_key"
    key.write_text("0123456789abcdef0123456789abcdef\n")
    copy = tmp_path / name
    copy.write_text((EXAMPLES / name).read_text().replace("/run/secrets/hash_key", str(key)))
    load_config(copy)
