"""``cdc-sync replay``: re-apply a range of source changes, audited, checkpoint untouched."""

from __future__ import annotations

import json

import click

from cdc_sync.cli_common import EXIT_CONFIG, EXIT_FAILED, _fail, _load, config_option
from cdc_sync.errors import CdcSyncError, ConfigError


@click.command()
@config_option
@click.option("-p", "--pipeline", "pipeline", required=True, help="The pipeline to replay.")
@click.option("--from", "start", required=True, help="Replay transactions ending after this.")
@click.option("--to", "end", help="…and at or before this (default: the checkpoint).")
@click.option("--table", help="Only this source or target table (schema.name).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def replay(  # noqa: PLR0917  (click passes options positionally)
    config_path: str | None,
    pipeline: str,
    start: str,
    end: str | None,
    table: str | None,
    as_json: bool,
) -> None:
    """Re-apply already-applied changes through the rules and the sink (idempotent upserts),
    one target transaction per batch, audited with outcome 'replay'; the checkpoint stays.

    \b
    PostgreSQL: read from the pipeline's slot without consuming it, so only changes after
    the slot's confirmed point can be replayed (a logical slot cannot rewind).
    MySQL/MariaDB: a binlog stream from --from (server_id + 1), while the binlog is retained.
    Refused while a daemon holds the lease. Rows changed again after --to keep the replayed
    value until their next change: replay up to the checkpoint (the default) to converge."""
    from cdc_sync.runtime import dlq as dead  # noqa: PLC0415
    from cdc_sync.runtime.replay import parse_position  # noqa: PLC0415
    from cdc_sync.runtime.replay import replay as run_replay  # noqa: PLC0415

    cfg = _load(config_path)
    if pipeline not in cfg.pipelines:
        _fail(EXIT_CONFIG, [f"--pipeline: no pipeline named {pipeline!r}"])
    try:  # parsing reads only the config: a failure here is an invalid argument, exit 2
        first = parse_position(cfg, pipeline, start, "--from")
        last = parse_position(cfg, pipeline, end, "--to") if end is not None else None
    except CdcSyncError as e:
        _fail(EXIT_CONFIG, [f"pipeline {pipeline}: {e}"])
    try:
        report = run_replay(cfg, pipeline, first, last, table, dead.who())
    except ConfigError as e:
        _fail(EXIT_CONFIG, [f"pipeline {pipeline}: {p}" for p in e.problems])
    except CdcSyncError as e:
        _fail(EXIT_FAILED, [f"pipeline {pipeline}: {e}"])
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, default=str))
        return
    click.echo(
        f"pipeline {pipeline}: replayed {report.rows} row(s) in {report.transactions} "
        f"transaction(s) from {report.start} to {report.end} (checkpoint {report.checkpoint} "
        "unchanged)"
    )
    for name, n in sorted(report.tables.items()):
        click.echo(f"  {name}: {n}")
    if report.refused or report.filtered:
        click.echo(f"  refused by a rule: {report.refused}, filtered: {report.filtered}")
