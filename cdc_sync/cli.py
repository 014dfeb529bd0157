"""Command line: parses arguments, loads config, calls the runtime; the only place that exits."""

from __future__ import annotations

import json
import sys
from typing import NoReturn

import click

from cdc_sync import logs
from cdc_sync.config import Config, load_config
from cdc_sync.errors import CdcSyncError, ConfigError
from cdc_sync.runtime.checks import check_pipeline
from cdc_sync.runtime.offsets import describe
from cdc_sync.runtime.runner import run_all
from cdc_sync.runtime.stop import StopFlag

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def _fail(code: int, lines: list[str]) -> NoReturn:
    for line in lines:
        click.echo(f"error: {line}", err=True)
    sys.exit(code)


def _load(path: str | None) -> Config:
    if not path:
        _fail(EXIT_CONFIG, ["no config given: use -c/--config or set CDC_SYNC_CONFIG"])
    try:
        cfg = load_config(path)
    except ConfigError as e:
        _fail(EXIT_CONFIG, e.problems)
    logs.setup(cfg.logging.level, cfg.logging.format)
    return cfg


def _pipelines(cfg: Config, chosen: tuple[str, ...]) -> list[str]:
    unknown = [p for p in chosen if p not in cfg.pipelines]
    if unknown:
        _fail(EXIT_CONFIG, [f"--pipeline: no pipeline named {p!r}" for p in unknown])
    return list(chosen) or list(cfg.pipelines)


config_option = click.option(
    "-c",
    "--config",
    "config_path",
    envvar="CDC_SYNC_CONFIG",
    type=click.Path(dir_okay=False),
    help="YAML config file (or CDC_SYNC_CONFIG).",
)
pipeline_option = click.option(
    "-p", "--pipeline", "pipelines", multiple=True, help="Only this pipeline (repeatable)."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cdc-sync")
def main() -> None:
    """cdc-sync: change-data-capture replication with exactly-once effect."""


@main.command()
@config_option
@pipeline_option
def check(config_path: str | None, pipelines: tuple[str, ...]) -> None:
    """Validate the config and every server prerequisite; print the SQL that fixes each gap."""
    cfg = _load(config_path)
    failed = False
    for name in _pipelines(cfg, pipelines):
        problems = check_pipeline(cfg, name)
        if problems:
            failed = True
            click.echo(f"pipeline {name}: {len(problems)} problem(s)")
            for p in problems:
                click.echo(f"  - {p}")
        else:
            click.echo(f"pipeline {name}: ok")
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


@main.command()
@config_option
@pipeline_option
@click.option(
    "--until-caught-up",
    is_flag=True,
    help="Apply what is pending at start, then exit 0 (for cron / batch runs).",
)
def run(config_path: str | None, pipelines: tuple[str, ...], until_caught_up: bool) -> None:
    """Run the pipelines as a daemon (SIGTERM/SIGINT drain and exit; a second one exits now)."""
    cfg = _load(config_path)
    names = _pipelines(cfg, pipelines)
    stop = StopFlag()
    stop.install()
    outcomes = run_all(cfg, names, stop, until_caught_up)
    failed = [o for o in outcomes if o.result == "failed"]
    if failed:
        _fail(EXIT_FAILED, [f"pipeline {o.pipeline}: {o.error}" for o in failed])
    sys.exit(EXIT_OK)


@main.group()
def offsets() -> None:
    """Inspect checkpointed positions."""


@offsets.command("show")
@config_option
@pipeline_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def offsets_show(config_path: str | None, pipelines: tuple[str, ...], as_json: bool) -> None:
    """Per pipeline: checkpointed position, source head, lag, last applied time."""
    cfg = _load(config_path)
    rows = []
    for name in _pipelines(cfg, pipelines):
        try:
            rows.append(describe(cfg, name))
        except CdcSyncError as e:
            rows.append({"pipeline": name, "error": str(e)})
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    cols = [
        "pipeline",
        "position",
        "source_head",
        "lag_bytes",
        "lag_seconds",
        "last_applied_at",
        "last_source_commit",
    ]
    for r in rows:
        if "error" in r:
            click.echo(f"{r['pipeline']}: error: {r['error']}")
            continue
        click.echo("  ".join(f"{c}={r.get(c)}" for c in cols))
