"""``cdc-sync conflicts``: list and show the conflicts two-way links resolved, read-only."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

import click
import sqlalchemy as sa

from cdc_sync.audit.conflicts import ConflictStore, ConflictSummary
from cdc_sync.cli_common import (
    EXIT_CONFIG,
    EXIT_FAILED,
    _fail,
    _load,
    _pipelines,
    config_option,
    pipeline_option,
)
from cdc_sync.config import Config
from cdc_sync.errors import CdcSyncError
from cdc_sync.runtime.classify import classify
from cdc_sync.runtime.wiring import target_engine
from cdc_sync.state.tables import CONFLICTS

_ROWS = ("before", "incoming", "current", "resolved")


@contextmanager
def _target(cfg: Config, pipeline: str) -> Iterator[tuple[sa.Connection, ConflictStore] | None]:
    """The pipeline's target and its conflict store. No migration here (a read-only
    command): a target whose tables predate the conflict log has no conflicts (None)."""
    schema = cfg.targets[cfg.pipelines[pipeline].target].state_schema
    engine = target_engine(cfg, pipeline)
    try:
        with engine.connect() as conn:
            found = sa.inspect(conn).has_table(CONFLICTS, schema=schema)
            yield (conn, ConflictStore(schema)) if found else None
    except CdcSyncError:
        raise
    except Exception as e:  # classified here: the CLI shows one clear line
        raise classify(e, "target") from e
    finally:
        engine.dispose()


def _plain(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value


def _dumps(value: object, indent: int | None = None) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=False, default=_plain)


def _summary_json(s: ConflictSummary) -> dict[str, object]:
    return {
        "id": s.id,
        "detected_at": s.detected_at.isoformat(),
        "pipeline": s.pipeline,
        "table": s.target_table,
        "pk": s.pk,
        "kind": s.kind,
        "rule": s.rule,
        "winner": s.winner,
        "outcome": s.outcome,
    }


def _grid(lines: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in lines) for i in range(len(lines[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in lines]


@click.group()
def conflicts() -> None:
    """Two-way links: conflicts detected on apply, and how each was resolved."""


@conflicts.command("list")
@config_option
@pipeline_option
@click.option("--table", help="Only this source or target table (schema.name).")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def conflicts_list(
    *,
    config_path: str | None,
    pipelines: tuple[str, ...],
    table: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Newest first: id, when, pipeline, target table, key, kind, rule, winner, outcome."""
    cfg = _load(config_path)
    rows: list[ConflictSummary] = []
    for name in _pipelines(cfg, pipelines):
        try:
            with _target(cfg, name) as found:
                if found is not None:
                    conn, store = found
                    rows += store.list(conn, pipeline=name, table=table, limit=limit)
        except CdcSyncError as e:
            _fail(EXIT_FAILED, [f"pipeline {name}: {e}"])
    rows.sort(key=lambda s: (s.detected_at, s.id), reverse=True)
    if limit > 0:
        rows = rows[:limit]
    if as_json:
        click.echo(_dumps([_summary_json(s) for s in rows], indent=2))
        return
    if not rows:
        click.echo("no conflicts")
        return
    head = ("id", "detected_at", "pipeline", "table", "pk", "kind", "rule", "winner", "outcome")
    body = [tuple("" if v is None else str(v) for v in _summary_json(s).values()) for s in rows]
    for line in _grid([head, *body]):
        click.echo(line)


@conflicts.command("show")
@config_option
@click.option("-p", "--pipeline", "pipeline", required=True, help="The pipeline it happened in.")
@click.argument("conflict_id", metavar="ID", type=int)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def conflicts_show(config_path: str | None, pipeline: str, conflict_id: int, as_json: bool) -> None:
    """Everything stored for one conflict; the old, incoming, current and resolved rows
    side by side, one line per column (values as JSON; '*' marks incoming != current)."""
    cfg = _load(config_path)
    if pipeline not in cfg.pipelines:
        _fail(EXIT_CONFIG, [f"--pipeline: no pipeline named {pipeline!r}"])
    row = None
    try:
        with _target(cfg, pipeline) as found:
            if found is not None:
                row = found[1].get(found[0], conflict_id)
    except CdcSyncError as e:
        _fail(EXIT_FAILED, [f"pipeline {pipeline}: {e}"])
    if row is None:
        _fail(EXIT_FAILED, [f"pipeline {pipeline}: no conflict with id {conflict_id}"])
    if as_json:
        click.echo(_dumps(row, indent=2))
        return
    for line in _grid([(f"{k}:", _text(row[k])) for k in row if k not in _ROWS]):
        click.echo(line)
    click.echo("")
    images = {k: _image(row[k]) for k in _ROWS}
    columns: dict[str, None] = {}
    for image in images.values():
        columns.update(dict.fromkeys(image or {}))
    if not columns:
        return
    lines: list[tuple[str, ...]] = [("", "column", *_ROWS)]
    for col in columns:
        cells = [_cell(images[k], col) for k in _ROWS]
        differs = _cell(images["incoming"], col) != _cell(images["current"], col)
        lines.append(("*" if differs else "", col, *cells))
    for line in _grid(lines):
        click.echo(line)


def _text(value: object) -> str:
    if value is None:
        return "-"
    return str(_plain(value))


def _image(value: object) -> dict[str, object] | None:
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else None


def _cell(image: dict[str, object] | None, column: str) -> str:
    if image is None:
        return "-"  # no such row (an insert's old row, a missing current row, …)
    if column not in image:
        return "(absent)"  # not sent (unchanged TOAST, key-only old row) or left as it was
    return _dumps(image[column])
