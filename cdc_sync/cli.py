"""Command line: parses arguments, loads config, calls the runtime; the only place that exits."""

from __future__ import annotations

import importlib
import json
import sys
from typing import TYPE_CHECKING

import click

from cdc_sync.cli_common import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    _fail,
    _load,
    _pipelines,
    config_option,
    pipeline_option,
)
from cdc_sync.config import Config
from cdc_sync.errors import CdcSyncError, ConfigError
from cdc_sync.runtime.stop import StopFlag

if TYPE_CHECKING:
    from cdc_sync.runtime.snapshot import Progress

# Commands defined in their own modules, imported only when invoked (or listed by --help):
# every command's imports at start-up cost `run` ~0.3 s, a tenth of a 125k-row drain.
_LAZY = {
    "conflicts": "cdc_sync.cli_conflicts:conflicts",
    "migrate": "cdc_sync.cli_migrate:migrate",
    "replay": "cdc_sync.cli_replay:replay",
    "status": "cdc_sync.cli_status:status",
    "verify": "cdc_sync.cli_verify:verify",
}


class _LazyGroup(click.Group):
    """click's documented pattern for lazily loaded subcommands."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *_LAZY])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _LAZY:
            module, _, attr = _LAZY[cmd_name].partition(":")
            cmd: click.Command = getattr(importlib.import_module(module), attr)
            return cmd
        return super().get_command(ctx, cmd_name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cdc-sync")
def main() -> None:
    """cdc-sync: change-data-capture replication with exactly-once effect."""


@main.command()
@config_option
@pipeline_option
def check(config_path: str | None, pipelines: tuple[str, ...]) -> None:
    """Validate the config and every server prerequisite; print the SQL that fixes each gap."""
    from cdc_sync.runtime.checks import check_pipeline  # noqa: PLC0415  (see _LAZY)
    from cdc_sync.runtime.cycle_check import cycle_problems  # noqa: PLC0415

    cfg = _load(config_path)
    failed = False
    names = _pipelines(cfg, pipelines)
    cycles = cycle_problems(cfg)  # over every pipeline of the config, whatever -p says
    for name in names:
        warnings: list[str] = []
        problems = check_pipeline(cfg, name, warn=warnings.append)
        problems += [f"cycle: {c}" for c in cycles.get(name, [])]
        if problems:
            failed = True
            click.echo(f"pipeline {name}: {len(problems)} problem(s)")
            for p in problems:
                click.echo(f"  - {p}")
        else:
            click.echo(f"pipeline {name}: ok")
        for w in warnings:  # do not fail check: TLS off for a remote host may be deliberate
            click.echo(f"  warning: {w}")
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
    from cdc_sync.runtime.observers import observing  # noqa: PLC0415  (see _LAZY)
    from cdc_sync.runtime.runner import run_all  # noqa: PLC0415

    cfg = _load(config_path)
    names = _pipelines(cfg, pipelines)
    stop = StopFlag()
    stop.install()
    try:
        # Starting the observers may fail too (metrics.listen port in use): one line, exit 1.
        with observing(cfg, names, stop, daemon=not until_caught_up):
            outcomes = run_all(cfg, names, stop, until_caught_up)
    except CdcSyncError as e:
        _fail(EXIT_CONFIG if isinstance(e, ConfigError) else EXIT_FAILED, [str(e)])
    failed = [o for o in outcomes if o.result == "failed"]
    if failed:
        # Rules naming what the source does not have are a config problem, found only once
        # connected: exit 2 like every other one, so scripts tell "fix the file" from "failed".
        config = all(isinstance(o.error, ConfigError) for o in failed)
        lines = []
        for o in failed:
            text, prefix = str(o.error), f"pipeline {o.pipeline}: "
            lines.append(text if text.startswith(prefix) else prefix + text)
        _fail(EXIT_CONFIG if config else EXIT_FAILED, lines)
    sys.exit(EXIT_OK)


def _progress_line(p: Progress) -> None:
    est = f"/{p.estimate:,}" if p.estimate else ""
    eta = f"  ETA {p.eta_seconds:,.0f} s" if p.eta_seconds is not None and not p.done else ""
    line = f"{p.table}: {p.rows_done:,}{est} rows  {p.rows_per_second:,.0f} rows/s{eta}"
    if sys.stderr.isatty():
        click.echo(f"\r\033[K{line}", nl=p.done, err=True)
    elif p.done:
        click.echo(line, err=True)


@main.command()
@config_option
@pipeline_option
@click.option("--table", help="Re-snapshot this table while the daemon streams (DBLog).")
@click.option("--where", "where", help="Only rows matching this SQL condition (with --table).")
@click.option("--wait", is_flag=True, help="With --table: follow the copy until it ends.")
@click.option("--status", "status", is_flag=True, help="List snapshot tasks and progress.")
def snapshot(  # noqa: PLR0917  (click passes options positionally)
    config_path: str | None,
    pipelines: tuple[str, ...],
    table: str | None,
    where: str | None,
    wait: bool,
    status: bool,
) -> None:
    """Copy existing rows: the initial snapshot (foreground, with progress), or with --table a
    re-snapshot that the running daemon performs without locking the source."""
    from cdc_sync.runtime import snapshot_admin  # noqa: PLC0415  (see _LAZY)

    cfg = _load(config_path)
    names = _pipelines(cfg, pipelines)
    if where is not None and table is None:
        _fail(EXIT_CONFIG, ["--where needs --table"])
    stop = StopFlag()
    stop.install()
    try:
        if status:
            for name in names:
                for task in snapshot_admin.tasks(cfg, name):
                    click.echo(f"{name}: {snapshot_admin.describe(task)}")
            sys.exit(EXIT_OK)
        if table is not None:
            for name in names:
                task_id = snapshot_admin.request(cfg, name, table, where)
                click.echo(f"{name}: re-snapshot #{task_id} of {table} queued for the daemon")
                if wait:
                    end = snapshot_admin.wait(
                        cfg, name, task_id, stop,
                        lambda t: click.echo(snapshot_admin.describe(t), err=True),
                        on_note=lambda m: click.echo(m, err=True),
                    )  # fmt: skip
                    # Anything but done fails: failed, cancelled (e.g. by hand in the state
                    # table), or still active when a stop (Ctrl-C) ended the wait.
                    if end.status != "done":
                        _fail(EXIT_FAILED, [snapshot_admin.describe(end)])
            sys.exit(EXIT_OK)
        for name in names:
            result = snapshot_admin.initial(cfg, name, stop, _progress_line)
            if result == "nothing_to_copy":
                click.echo(
                    f"{name}: nothing to copy (snapshot: {cfg.pipelines[name].snapshot}, "
                    "already done); use --table T to re-snapshot a table"
                )
            else:
                click.echo(f"{name}: {result}")
    except CdcSyncError as e:
        _fail(EXIT_FAILED, [str(e)])
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
    from cdc_sync.runtime.offsets import describe  # noqa: PLC0415  (see _LAZY)

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
        health = r.get("source_health") or {}
        shown = {k: v for k, v in health.items() if v is not None and k != "kind"}
        if shown:
            click.echo("  source: " + "  ".join(f"{k}={v}" for k, v in shown.items()))
        for warning in r.get("warnings") or ():
            click.echo(f"  warning: {warning}")


@offsets.command("reset")
@config_option
@click.option("-p", "--pipeline", "pipeline", required=True, help="The pipeline to reset.")
@click.option(
    "--to",
    "to",
    required=True,
    help="latest | earliest | an LSN (PostgreSQL) | file:pos | a GTID set | an ISO 8601 time.",
)
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def offsets_reset(
    *, config_path: str | None, pipeline: str, to: str, dry_run: bool, yes: bool
) -> None:
    """Move a stopped pipeline's checkpoint; the daemon then resumes after it.

    \b
    latest    the source's head now: changes until now are skipped.
    earliest  the oldest still available: PostgreSQL the slot's confirmed point (a logical
              slot cannot go back before it); MySQL/MariaDB the start of the oldest
              binlog file (with GTIDs, the GTID state there).
    position  PostgreSQL LSN (0/16B3748), binlog file:pos (a transaction boundary, e.g. as
              offsets show prints it), or a GTID set (the first point that contains it).
    time      MySQL/MariaDB: before the first transaction of the pipeline's tables at or
              after it (UTC without a zone; reads the binlog from its oldest file).
              PostgreSQL: refused (WAL has no timestamp index).

    Refused while a daemon holds the pipeline's lease. PostgreSQL: moving past the slot's
    confirmed point also advances the slot, releasing the WAL before it. Audited (op
    offsets_reset) with who, when, from and to."""
    from cdc_sync.runtime import dlq as dead  # noqa: PLC0415
    from cdc_sync.runtime.offsets import apply_reset, plan_reset  # noqa: PLC0415

    cfg = _load(config_path)
    if pipeline not in cfg.pipelines:
        _fail(EXIT_CONFIG, [f"--pipeline: no pipeline named {pipeline!r}"])
    try:
        plan = plan_reset(cfg, pipeline, to)
        if dry_run:
            click.echo(f"dry run: {plan.describe()}")
            return
        if not yes:
            click.confirm(f"{plan.describe()}?", abort=True)
        apply_reset(cfg, plan, dead.who())
    except ConfigError as e:  # an unusable --to: invalid arguments, exit 2 (README)
        _fail(EXIT_CONFIG, [f"pipeline {pipeline}: {p}" for p in e.problems])
    except CdcSyncError as e:
        _fail(EXIT_FAILED, [f"pipeline {pipeline}: {e}"])
    click.echo(f"reset: {plan.describe()}")


@main.group()
def dlq() -> None:
    """Dead letters: rows a rule or the target refused (masked copies, reasons)."""


_STATUSES = click.Choice(["open", "retried", "discarded", "all"])
table_option = click.option(
    "--table", help="Only this source or target table ([schema.]name, as verify takes it)."
)
id_option = click.option(
    "--id", "ids", type=int, multiple=True, help="Dead letter id (repeatable)."
)


def _scopes(
    cfg: Config, pipelines: tuple[str, ...], table: str | None
) -> dict[str, frozenset[str]]:
    """The pipelines to read and, with --table, that table's names in each. Pipelines without
    the table are left out; none having it exits 2 (a typo must not read "no dead letters")."""
    from cdc_sync.runtime import dlq as dead  # noqa: PLC0415  (only dlq commands need it)

    names = _pipelines(cfg, pipelines)
    if table is None:
        return dict.fromkeys(names, frozenset())
    scopes: dict[str, frozenset[str]] = {}
    problems: list[str] = []
    for name in names:
        try:
            scopes[name] = dead.table_names(cfg, name, table)
        except ConfigError as e:
            problems += e.problems
    if not scopes:
        _fail(EXIT_CONFIG, problems)
    return scopes


def _by_id(
    cfg: Config, pipelines: tuple[str, ...], table: str | None, ids: tuple[int, ...]
) -> dict[int, dict[str, object]]:
    """Each --id's letter, whatever its status. Ids are numbered per target table, so two
    pipelines writing to different targets both have an id 1: such an id exits 2 unless
    --pipeline says which one is meant (acting on both is never what was asked)."""
    from cdc_sync.runtime import dlq as dead  # noqa: PLC0415

    owners: dict[int, list[dict[str, object]]] = {}
    for name, tables in _scopes(cfg, pipelines, table).items():
        try:
            rows = dead.select(cfg, name, tables=tables, ids=ids, status=None)
        except CdcSyncError as e:
            _fail(EXIT_FAILED, [f"pipeline {name}: {e}"])
        for r in rows:
            owners.setdefault(int(str(r["id"])), []).append(r)
    ambiguous = [
        f"--id {dl_id}: dead letters of pipelines "
        f"{', '.join(sorted(str(r['pipeline']) for r in rs))} have this id (ids are numbered "
        "per target); add --pipeline to choose one"
        for dl_id, rs in sorted(owners.items())
        if len(rs) > 1
    ]
    if ambiguous:
        _fail(EXIT_CONFIG, ambiguous)
    return {dl_id: rs[0] for dl_id, rs in owners.items()}


def _missing(dl_id: int, pipelines: tuple[str, ...], table: str | None) -> str:
    scope = f" in pipeline {', '.join(pipelines)}" if pipelines else ""
    scope += f" for table {table}" if table else ""
    return f"no dead letter with id {dl_id}{scope} (dlq list --status all lists every id)"


@dlq.command("list")
@config_option
@pipeline_option
@table_option
@click.option("--status", type=_STATUSES, default="open", show_default=True)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="At most this many per pipeline, oldest first (0: all).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def dlq_list(
    *,
    config_path: str | None,
    pipelines: tuple[str, ...],
    table: str | None,
    status: str,
    limit: int,
    as_json: bool,
) -> None:
    """One line per dead letter: id, pipeline, table, key (masked), why. Ids are numbered per
    target, so with several targets the pipeline tells letters with the same id apart."""
    from cdc_sync.runtime import dlq as dead  # noqa: PLC0415

    cfg = _load(config_path)
    chosen = None if status == "all" else status
    rows: list[dict[str, object]] = []
    notes: list[str] = []
    for name, tables in _scopes(cfg, pipelines, table).items():
        try:
            found = dead.page(cfg, name, tables=tables, status=chosen, limit=limit)
        except CdcSyncError as e:
            _fail(EXIT_FAILED, [f"pipeline {name}: {e}"])
        rows += found.rows
        if found.total > len(found.rows):
            what = f"{chosen} dead letters" if chosen else "dead letters"
            notes.append(
                f"pipeline {name}: showing {len(found.rows)} of {found.total} {what}; "
                "use --limit N (0: all)"
            )
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        for note in notes:  # stdout stays one JSON document
            click.echo(note, err=True)
        return
    if not rows:
        click.echo("no dead letters")
        return
    for r in rows:
        why = r["rule"] or r["error_code"] or "-"
        col = f" column={r['column_name']}" if r["column_name"] else ""
        click.echo(
            f"{r['id']}  {r['pipeline']}  {r['source_table']}  {r['op']}  pk={r['pk']}  "
            f"{r['stage']}:{why}{col}  {r['status']}  {r['created_at']}  {r['reason']}"
        )
    for note in notes:
        click.echo(note)


@dlq.command("show")
@config_option
@pipeline_option
@id_option
def dlq_show(config_path: str | None, pipelines: tuple[str, ...], ids: tuple[int, ...]) -> None:
    """Everything stored for the given dead letters (masked row included), as JSON."""
    cfg = _load(config_path)
    if not ids:
        _fail(EXIT_CONFIG, ["--id: give at least one dead letter id"])
    letters = _by_id(cfg, pipelines, None, ids)
    wanted = list(dict.fromkeys(ids))
    if letters:
        click.echo(json.dumps([letters[i] for i in wanted if i in letters], indent=2, default=str))
    missing = [_missing(i, pipelines, None) for i in wanted if i not in letters]
    if missing:
        _fail(EXIT_FAILED, missing)


def _chosen(
    cfg: Config, pipelines: tuple[str, ...], table: str | None, ids: tuple[int, ...], all_: bool
) -> dict[str, list[int]]:
    """The open letters to act on, per pipeline. An --id that does not exist or is already
    closed fails the whole command before anything changes (exit 1, like show)."""
    if not ids and not all_:
        _fail(EXIT_CONFIG, ["give --id N (repeatable) or --all (with --pipeline / --table)"])
    chosen: dict[str, list[int]] = {}
    if not ids:
        for r in _letters(cfg, pipelines, table=table, status="open"):
            chosen.setdefault(str(r["pipeline"]), []).append(int(str(r["id"])))
        return chosen
    letters = _by_id(cfg, pipelines, table, ids)
    problems: list[str] = []
    for dl_id in dict.fromkeys(ids):
        letter = letters.get(dl_id)
        if letter is None:
            problems.append(_missing(dl_id, pipelines, table))
        elif letter["status"] != "open":
            problems.append(
                f"dead letter {dl_id} of pipeline {letter['pipeline']} is already "
                f"{letter['status']} (at {letter['resolved_at']}); nothing to do "
                f"(dlq show --id {dl_id} has who and when)"
            )
        else:
            chosen.setdefault(str(letter["pipeline"]), []).append(dl_id)
    if problems:
        _fail(EXIT_FAILED, problems)
    return chosen


def _letters(
    cfg: Config, pipelines: tuple[str, ...], *, table: str | None, status: str | None
) -> list[dict[str, object]]:
    from cdc_sync.runtime import dlq as dead  # noqa: PLC0415

    out: list[dict[str, object]] = []
    for name, tables in _scopes(cfg, pipelines, table).items():
        try:
            out += dead.select(cfg, name, tables=tables, status=status)
        except CdcSyncError as e:
            _fail(EXIT_FAILED, [f"pipeline {name}: {e}"])
    return out


@dlq.command("retry")
@config_option
@pipeline_option
@table_option
@id_option
@click.option("--all", "all_", is_flag=True, help="Every open letter (of --pipeline / --table).")
def dlq_retry(
    config_path: str | None,
    pipelines: tuple[str, ...],
    table: str | None,
    ids: tuple[int, ...],
    all_: bool,
) -> None:
    """Re-read each row's current version from the source, apply today's rules, write it."""
    from cdc_sync.runtime import dlq as dead  # noqa: PLC0415

    cfg = _load(config_path)
    failed = False
    todo = _chosen(cfg, pipelines, table, ids, all_)
    if not todo:
        click.echo("no open dead letters match")
    for name, chosen in todo.items():
        try:
            report = dead.retry(cfg, name, chosen, dead.who())
        except CdcSyncError as e:
            _fail(EXIT_FAILED, [f"pipeline {name}: {e}"])
        for dl_id in report.retried:
            click.echo(f"{dl_id}: retried, applied")
        for dl_id, why in {**report.failed, **report.skipped}.items():
            failed = True
            click.echo(f"{dl_id}: still open: {why}")
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


@dlq.command("discard")
@config_option
@pipeline_option
@table_option
@id_option
@click.option("--all", "all_", is_flag=True, help="Every open letter (of --pipeline / --table).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def dlq_discard(
    *,
    config_path: str | None,
    pipelines: tuple[str, ...],
    table: str | None,
    ids: tuple[int, ...],
    all_: bool,
    yes: bool,
) -> None:
    """Close dead letters without applying them; who and when go into the audit."""
    from cdc_sync.runtime import dlq as dead  # noqa: PLC0415

    cfg = _load(config_path)
    chosen = _chosen(cfg, pipelines, table, ids, all_)
    total = sum(len(v) for v in chosen.values())
    if not total:
        click.echo("no open dead letters match")
        return
    if not yes:
        click.confirm(f"discard {total} dead letter(s)?", abort=True)
    for name, dl_ids in chosen.items():
        try:
            done = dead.discard(cfg, name, dl_ids, dead.who())
        except CdcSyncError as e:
            _fail(EXIT_FAILED, [f"pipeline {name}: {e}"])
        click.echo(f"pipeline {name}: discarded {', '.join(map(str, done)) or 'none'}")
