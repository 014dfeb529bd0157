"""The fault suite: every test here is marked ``faults``. The summary table (``report``
fixture) and the skipping of long scenarios live in tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test of this folder is marked ``faults`` (the hook sees the whole session's
    items). Long scenarios, here and elsewhere, are skipped in tests/conftest.py."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.faults)
