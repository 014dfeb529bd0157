"""The fault suite: every test here is marked ``faults``; the long scenarios run only when
asked for. The summary table (``report`` fixture) lives in tests/conftest.py."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The long scenarios run only when asked for: the default run stays within CI's budget."""
    asked = (
        "faults_full" in (config.getoption("-m") or "")
        or os.environ.get("CDC_SYNC_FAULTS_FULL") == "1"
    )
    for item in items:
        item.add_marker(pytest.mark.faults)
        if not asked and item.get_closest_marker("faults_full") is not None:
            item.add_marker(pytest.mark.skip(reason="long fault scenario: -m faults_full"))
