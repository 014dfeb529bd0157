"""Rule config: short forms, key-path errors, secrets for hash keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdc_sync.config import load_config
from cdc_sync.config.rules import Cast, Hash, Lower, Mask, Phone, Validate, ValueMap
from cdc_sync.errors import ConfigError

BASE = """
sources:
  crm: {type: postgres, dsn: "postgresql://cdc@db1/crm"}
targets:
  hub: {type: postgres, dsn: "postgresql://cdc@db2/hub"}
pipelines:
  p:
    source: crm
    target: hub
    tables:
      public.customers:
%s
"""


def _load(tmp_path: Path, body: str) -> object:
    p = tmp_path / "c.yaml"
    p.write_text(BASE % "\n".join("        " + line for line in body.strip("\n").splitlines()))
    return load_config(p)


def _problems(tmp_path: Path, body: str) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        _load(tmp_path, body)
    return ei.value.problems


def test_the_issue_example_parses_into_ordered_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HASH_KEY", "0123456789abcdef-key")
    cfg = _load(
        tmp_path,
        """
target: crm.contacts
filter: "status != 'deleted'"
columns:
  name: contact_name
  phone:
    target: contact_phone
    transforms:
      - phone: {region: CN, format: e164}
      - mask: {keep_first: 3, keep_last: 4, char: "*"}
  email:
    transforms: [lower, trim, {validate: email}]
  national_id: {transforms: [{hash: {key: "${HASH_KEY}"}}]}
  status: {map: {1: active, 2: dormant, 3: do_not_call}, default: unknown}
  amount: {cast: "decimal(12,2)"}
  internal_note: {drop: true}
  source_system: {value: crm}
""",
    )
    tc = cfg.pipelines["p"].tables["public.customers"]  # type: ignore[attr-defined]
    cols = tc.columns
    assert cols["name"].target == "contact_name"
    assert [type(s) for s in cols["phone"].steps()] == [Phone, Mask]
    assert isinstance(cols["email"].steps()[0], Lower)
    assert isinstance(cols["email"].steps()[2], Validate)
    (h,) = cols["national_id"].steps()
    assert isinstance(h, Hash) and h.key.get_secret_value() == "0123456789abcdef-key"
    assert "0123456789abcdef-key" not in repr(cfg)
    (m,) = cols["status"].steps()
    assert isinstance(m, ValueMap) and m.on_unmapped == "default" and m.default == "unknown"
    (c,) = cols["amount"].steps()
    assert isinstance(c, Cast) and c.to == "decimal(12,2)"
    assert cols["internal_note"].drop
    assert cols["source_system"].has_value and cols["source_system"].value == "crm"
    assert tc.filter == "status != 'deleted'" and tc.has_rules


def test_literal_hash_key_is_refused(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path, "columns:\n  nid: {transforms: [{hash: {key: 'literal-secret-key-123'}}]}"
    )
    assert any(".hash.key: a literal hash key" in p for p in problems), problems
    assert not any("literal-secret-key-123" in p for p in problems)


def test_hash_without_key_and_short_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    problems = _problems(tmp_path, "columns:\n  nid: {transforms: [{hash: {}}]}")
    assert any(
        "columns.nid.transforms.0.hash.key" in p and "required" in p.lower() for p in problems
    ), problems
    monkeypatch.setenv("SHORT", "abc")
    problems = _problems(tmp_path, "columns:\n  nid: {transforms: [{hash: {key: '${SHORT}'}}]}")
    assert any("at least 16 characters" in p for p in problems), problems


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        ("columns:\n  a: {transforms: [shout]}", "unknown transform 'shout'"),
        ("columns:\n  a: {transforms: [{frobnicate: {}}]}", "unknown transform 'frobnicate'"),
        ("columns:\n  a: {transforms: [{regex: {pattern: '(unclosed'}}]}", "bad regex"),
        (
            "columns:\n  a: {transforms: [{phone: {region: china}}]}",
            "columns.a.transforms.0.phone.region",
        ),
        ("columns:\n  a: {cast: 'decimal(12)'}", "columns.a.cast"),
        ("columns:\n  a: {drop: true, target: b}", "drop: true excludes"),
        ("columns:\n  a: {on_unmapped: keep}", "on_unmapped needs a map"),
        ("columns:\n  a: {value: 1, map: {1: x}}", "value (a constant) excludes"),
        ("columns:\n  a: {mask: {keep_first: 3}}", "columns.a.mask: unknown key"),
        ("include: []", "include: an empty list"),
        ("custom: not-a-ref", "expected 'package.module:function'"),
        ("columns:\n  a: {transforms: [{lower: {}}]}", "takes no options"),
    ],
)
def test_rule_config_errors_name_the_key_path(tmp_path: Path, body: str, expect: str) -> None:
    problems = _problems(tmp_path, body)
    assert any(expect in p for p in problems), problems
    assert all(p.startswith("pipelines.p.tables") for p in problems), problems


def test_on_error_setting(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "columns: {}")
    assert cfg.pipelines["p"].on_error == "dead_letter"  # type: ignore[attr-defined]
