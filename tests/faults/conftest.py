"""The fault suite's summary: every scenario reports what it checked; the table is printed
at the end of the run (scenario, rows checked, lost, duplicated, leaked, message seen)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Outcome:
    scenario: str
    rows: int
    lost: int
    duplicated: int
    leaked: int
    message: str


RESULTS: list[Outcome] = []
Report = Callable[..., None]


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Report:
    """``report(rows=…, lost=…, duplicated=…, leaked=…, message=…, scenario=None)``: one line
    of the summary (scenario defaults to the test's id). Call it before asserting, so a
    failing scenario still shows its figures."""

    def add(
        *,
        rows: int,
        lost: int = 0,
        duplicated: int = 0,
        leaked: int = 0,
        message: str = "",
        scenario: str | None = None,
    ) -> None:
        name = scenario or request.node.name.removeprefix("test_")
        RESULTS.append(Outcome(name, rows, lost, duplicated, leaked, message))

    return add


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    tr = terminalreporter
    tr.section("fault suite summary")
    tr.write_line("| scenario | rows checked | lost | duplicated | leaked | message seen |")
    tr.write_line("|---|---:|---:|---:|---:|---|")
    for o in RESULTS:
        tr.write_line(
            f"| {o.scenario} | {o.rows} | {o.lost} | {o.duplicated} | {o.leaked} | {o.message} |"
        )


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
