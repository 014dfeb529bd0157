"""Helpers every CLI command shares: exit codes, config loading, common options."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from cdc_sync import logs
from cdc_sync.config import Config, load_config
from cdc_sync.errors import ConfigError

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
