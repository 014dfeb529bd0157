"""``cdc-sync status``: a human summary of every pipeline (or ``--json``), read-only."""

from __future__ import annotations

import json
from typing import Any

import click

from cdc_sync.cli_common import _load, _pipelines, config_option, pipeline_option
from cdc_sync.runtime.status import pipeline_status


def _lag(s: dict[str, Any]) -> str:
    parts = []
    if s.get("lag_bytes") is not None:
        parts.append(f"{s['lag_bytes']:,} bytes")
    if s.get("lag_seconds") is not None:
        parts.append(f"{s['lag_seconds']:,.1f} s")
    return " / ".join(parts) or "unknown"


def _verify(v: dict[str, Any] | None) -> str:
    if v is None:
        return "never"
    found = ", ".join(f"{k} {v[k]:,}" for k in ("missing", "extra", "different") if v[k])
    return (
        f"{v['status']} at {v['finished_at'] or v['started_at']}: {v['rows_checked']:,} rows"
        + (f" ({found})" if found else "")
        + (f", {v['repaired']:,} repaired" if v["repaired"] else "")
    )


def _lines(s: dict[str, Any]) -> list[str]:
    if "lease_held" not in s:
        return _unread(s)
    lease = "none"
    if s.get("lease_owner"):
        held = "held" if s["lease_held"] else "lapsed"
        lease = f"{s['lease_owner']} ({held}, expires {s['lease_expires_at']})"
    letters = s.get("dead_letters") or {}
    others = "".join(f"; {n:,} {k}" for k, n in sorted(letters.items()) if k != "open")
    tasks = s.get("snapshot_tasks") or {}
    rows = [
        ("position", s.get("position") or "none yet"),
        ("source head", s.get("source_head") or "unknown"),
        ("lag", _lag(s)),
        ("last batch", f"{s.get('last_applied_at')} (source commit {s.get('last_source_commit')})"),
        ("lease", lease),
        ("dead letters", f"{s.get('dead_letters_open', 0):,} open{others}"),
        ("snapshots", ", ".join(f"{n} {k}" for k, n in sorted(tasks.items())) or "none"),
        ("last verify", _verify(s.get("last_verify"))),
    ]  # fmt: skip
    out = [f"pipeline {s['pipeline']}"]
    out += [f"  {label:<13} {text}" for label, text in rows]
    out += [f"    {t['summary']}" for t in s.get("snapshots_active") or []]
    out += [f"  error: {e}" for e in s["errors"]]
    return out


def _unread(s: dict[str, Any]) -> list[str]:
    """The target could not be read: what it holds is unknown, not 'none' or '0' (the
    source head may still be known)."""
    unknown = "unknown (target unreachable)"
    rows = [(label, unknown) for label in ("position", "lag", "last batch", "lease")]
    rows.insert(1, ("source head", s.get("source_head") or "unknown"))
    rows += [(label, unknown) for label in ("dead letters", "snapshots", "last verify")]
    out = [f"pipeline {s['pipeline']}"]
    out += [f"  {label:<13} {text}" for label, text in rows]
    return out + [f"  error: {e}" for e in s["errors"]]


@click.command()
@config_option
@pipeline_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(config_path: str | None, pipelines: tuple[str, ...], as_json: bool) -> None:
    """Per pipeline: checkpoint, source head, lag, lease, last batch, open dead letters,
    snapshot tasks and the last verify run. Servers that cannot be reached are reported in
    the output; the exit code is 0 either way (this is what one runs when things break)."""
    cfg = _load(config_path)
    report = [pipeline_status(cfg, name) for name in _pipelines(cfg, pipelines)]
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    click.echo("\n\n".join("\n".join(_lines(s)) for s in report))
