"""Config loading: substitution, secrets refused, one clear line per problem with its key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdc_sync.config import load_config
from cdc_sync.errors import ConfigError

GOOD = """
sources:
  crm:
    type: postgres
    dsn: ${CRM_DSN}
targets:
  hub:
    type: postgres
    dsn: ${file:%s}
pipelines:
  crm_to_hub:
    source: crm
    target: hub
    tables:
      public.customers: {}
      public.call_records: {target: public.calls}
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    return ei.value.problems


def test_good_config_substitutes_env_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "hub_dsn"
    secret.write_text("postgresql://cdc:s3cret@db2/hub\n")
    monkeypatch.setenv("CRM_DSN", "postgresql://cdc@db1/crm")
    cfg = load_config(_write(tmp_path, GOOD % secret))
    assert cfg.sources["crm"].dsn.get_secret_value() == "postgresql://cdc@db1/crm"
    assert cfg.targets["hub"].dsn.get_secret_value() == "postgresql://cdc:s3cret@db2/hub"
    assert "s3cret" not in repr(cfg)
    assert cfg.slot_for("crm_to_hub") == "cdc_sync_crm_to_hub"
    assert cfg.pipelines["crm_to_hub"].tables["public.call_records"].target == "public.calls"


def test_every_problem_reported_with_key_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOPE_DSN", raising=False)
    text = """
sources:
  crm: {type: postgres, dsn: "postgresql://cdc:hunter2@db1/crm", bogus: 1}
targets:
  hub: {type: postgres, dsn: "${NOPE_DSN}"}
pipelines:
  crm_to_hub:
    source: crmm
    target: hub
    batch: {max_rows: many}
    tables: {call_records: {}}
"""
    problems = _problems(_write(tmp_path, text))
    assert "pipelines.crm_to_hub.source: no source named 'crmm'" in problems
    assert "targets.hub.dsn: environment variable NOPE_DSN is not set" in problems
    assert "sources.crm.bogus: unknown key" in problems
    assert any(p.startswith("sources.crm.dsn: a literal password") for p in problems)
    assert any(p.startswith("pipelines.crm_to_hub.batch.max_rows:") for p in problems)
    assert any(p.startswith("pipelines.crm_to_hub.tables:") for p in problems)
    assert not any("hunter2" in p for p in problems)


@pytest.mark.parametrize(
    "dsn",
    ["postgresql://cdc:${PW}@db1/crm", "host=db1 user=cdc password=${PW}", "${CRM_DSN}"],
)
def test_password_by_reference_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dsn: str
) -> None:
    monkeypatch.setenv("PW", "pw")
    monkeypatch.setenv("CRM_DSN", "postgresql://cdc:pw@db1/crm")
    text = GOOD.replace("${CRM_DSN}", dsn).replace("${file:%s}", "postgresql://cdc@db2/hub")
    assert load_config(_write(tmp_path, text)).sources["crm"].dsn.get_secret_value()


def test_keyvalue_literal_password_refused(tmp_path: Path) -> None:
    text = GOOD.replace("${CRM_DSN}", "'host=db1 password=abc'").replace(
        "${file:%s}", "postgresql://cdc@db2/hub"
    )
    (line,) = _problems(_write(tmp_path, text))
    assert line.startswith("sources.crm.dsn: a literal password")


def test_unknown_target_and_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_DSN", "postgresql://cdc@db1/crm")
    text = (GOOD % (tmp_path / "missing")).replace("target: hub\n", "target: hubb\n")
    problems = _problems(_write(tmp_path, text))
    assert "pipelines.crm_to_hub.target: no target named 'hubb'" in problems
    assert any(p.startswith("targets.hub.dsn: cannot read") for p in problems)


def test_shared_slot_name_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_DSN", "postgresql://cdc@db1/crm")
    text = (GOOD % "x").replace("${file:x}", "postgresql://cdc@db2/hub")
    text = text.replace("dsn: ${CRM_DSN}", "dsn: ${CRM_DSN}\n    slot: one")
    text += "  second:\n    source: crm\n    target: hub\n    tables: {public.x: {}}\n"
    problems = _problems(_write(tmp_path, text))
    assert any(p.startswith("sources.crm.slot: source feeds pipelines") for p in problems)


def test_not_yaml(tmp_path: Path) -> None:
    (line,) = _problems(_write(tmp_path, "sources: [unclosed"))
    assert "not valid YAML" in line


def test_bare_yaml_off_means_audit_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """YAML 1.1 reads `audit: off` as false; the user meant the audit level 'off'."""
    monkeypatch.setenv("CRM_DSN", "postgresql://cdc@db1/crm")
    secret = tmp_path / "hub_dsn"
    secret.write_text("postgresql://cdc@db2/hub\n")
    text = (GOOD % secret).replace("    source: crm\n", "    source: crm\n    audit: off\n")
    assert load_config(_write(tmp_path, text)).pipelines["crm_to_hub"].audit == "off"
    bad = text.replace("audit: off", "audit: yes")
    assert any("pipelines.crm_to_hub.audit" in p for p in _problems(_write(tmp_path, bad)))
