"""``cdc-sync verify``: compare a pipeline's source and target tables, optionally repair."""

from __future__ import annotations

import json
import sys

import click

from cdc_sync.cli_common import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, _fail, _load, config_option
from cdc_sync.errors import CdcSyncError, ConfigError
from cdc_sync.runtime.verify import TableReport, VerifyReport

_SHOWN = 20  # refused keys listed per table (--json lists more)
_COLUMNS = ("table", "mode", "rows", "missing", "extra", "different", "repaired", "seconds")


def _table(report: VerifyReport) -> str:
    rows: list[tuple[str, ...]] = [_COLUMNS]
    for t in report.tables:
        cells = (t.table, t.mode, t.rows_checked, t.missing, t.extra, t.different)
        rows.append(tuple(map(str, (*cells, t.repaired, f"{t.seconds:.1f}"))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.append(f"pipeline {report.pipeline}: {report.status} (source position {report.position})")
    if not report.settled:
        lines.append(
            # Said so it is true without a daemon too: --settle 0, or a budget shorter than
            # the quiet period, ends the wait before any checkpoint could be seen to move.
            "note: differences were re-checked before the pipeline's checkpoint was seen to "
            "reach the source position (within --settle seconds); if a daemon is running, "
            "some may be replication lag: run verify again (with a longer --settle)"
        )
    for t in report.tables:
        if t.refused:
            lines.append(f"{t.table}: {t.refused} key(s) refused by a rule (see cdc-sync dlq)")
        if t.unchecked:
            lines.append(f"{t.table}: {t.unchecked} more differing key(s) were not re-checked")
        if t.repair_refused:
            lines += _refusals(t)
    return "\n".join(lines)


def _refusals(t: TableReport) -> list[str]:
    """The keys the target refused to take; the key as dead letters show it (masked)."""
    lines = [f"{t.table}: {t.repair_refused} key(s) not repaired: the target refuses the row"]
    letter = {"new": "dead letter written", "open": "a dead letter is open already"}
    for r in t.refusals[:_SHOWN]:
        code = r.code or "?"
        why = [f"SQLSTATE {code}" if len(code) == 5 else f"MySQL error {code}"]
        why += [f"constraint {r.constraint}"] if r.constraint else []
        why += [f"column {r.column}"] if r.column else []
        why.append(letter.get(r.dead_letter, "no dead letter: on_error is stop"))
        lines.append(f"  key {r.key}: {r.reason} ({'; '.join(why)})")
    if t.repair_refused > _SHOWN:
        lines.append(f"  ... and {t.repair_refused - _SHOWN} more (--json, cdc-sync dlq list)")
    return lines


@click.command()
@config_option
@click.option("-p", "--pipeline", "pipeline", required=True, help="The pipeline to verify.")
@click.option("--table", help="Only this source or target table (schema.name).")
@click.option("--repair", is_flag=True, help="Write exactly the differing keys from the source.")
@click.option(
    "--settle",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds to wait for the daemon to catch up before re-checking differences.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def verify(
    *,
    config_path: str | None,
    pipeline: str,
    table: str | None,
    repair: bool,
    settle: float,
    as_json: bool,
) -> None:
    """Compare source and target row by row (after the rules); exit 0 equal, 1 differences,
    2 error."""
    from cdc_sync.runtime.verify import verify as run_verify  # noqa: PLC0415

    cfg = _load(config_path)
    if pipeline not in cfg.pipelines:
        _fail(EXIT_CONFIG, [f"--pipeline: no pipeline named {pipeline!r}"])
    try:
        report = run_verify(cfg, pipeline, table=table, fix=repair, settle=settle)
    except ConfigError as e:
        _fail(EXIT_CONFIG, e.problems)
    except CdcSyncError as e:
        _fail(EXIT_CONFIG, [f"pipeline {pipeline}: {e}"])
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, default=str))
    else:
        click.echo(_table(report))
    # Repaired differences still exit 1: the run found them (the audit shows what was fixed).
    sys.exit(EXIT_OK if report.status == "equal" else EXIT_FAILED)
