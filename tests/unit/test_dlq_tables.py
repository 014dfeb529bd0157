"""``dlq --table``: resolved from the config as ``verify`` resolves it (no server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdc_sync.config import Config, load_config
from cdc_sync.errors import ConfigError
from cdc_sync.runtime.dlq import table_names

CONFIG = """
sources:
  crm: {type: postgres, dsn: "postgresql://u@h/crm"}
targets:
  hub: {type: postgres, dsn: "postgresql://u@h/hub"}
pipelines:
  p:
    source: crm
    target: hub
    tables:
      public.customers: {}
      sales.orders: {target: crm.orders}
"""


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    return load_config(path)


def test_a_name_without_schema_is_the_public_table(cfg: Config) -> None:
    expected = frozenset({"public.customers"})
    assert table_names(cfg, "p", "customers") == table_names(cfg, "p", "public.customers")
    assert table_names(cfg, "p", "customers") == expected


def test_a_source_or_target_name_gives_both(cfg: Config) -> None:
    both = frozenset({"sales.orders", "crm.orders"})
    assert table_names(cfg, "p", "sales.orders") == both
    assert table_names(cfg, "p", "crm.orders") == both


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ("orders", "--table: orders is not a table of pipeline p"),
        ("other.customers", "--table: other.customers is not a table of pipeline p"),
        ("a.b.c", "--table: not a table name (expected schema.table): 'a.b.c'"),
    ],
)
def test_a_table_not_in_the_pipeline_is_a_config_error(
    cfg: Config, table: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as e:
        table_names(cfg, "p", table)
    assert e.value.problems == [problem]
