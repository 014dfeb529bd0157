"""Results: machine and commit facts, a markdown table, results.jsonl and a per-run .md file."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.verify import Check

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent

Figure = int | float | str | None


@dataclass
class Result:
    mode: str
    figures: dict[str, Figure] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)  # ready-made markdown, shown first

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


def _git(*args: str) -> str:
    try:
        res = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return ""
    return res.stdout.strip()


def machine() -> dict[str, Any]:
    mem_kib = 0
    cpu = platform.processor()
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_1m": round(os.getloadavg()[0], 2),  # other work on the box skews the figures
    }


def commit() -> dict[str, Any]:
    return {"sha": _git("rev-parse", "--short=12", "HEAD"), "dirty": bool(_git("status", "-s"))}


def _fmt(v: Figure) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:,.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return "n/a" if v is None else str(v)


def markdown(results: list[Result], meta: dict[str, Any]) -> str:
    m, c = meta["machine"], meta["commit"]
    lines = [
        f"# cdc-sync benchmark {meta['date']}",
        "",
        f"- command: `{meta['command']}`",
        f"- commit: {c['sha']}{' (dirty tree)' if c['dirty'] else ''}",
        f"- machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB RAM, "
        f"Linux {m['kernel']}, Python {m['python']}, {meta.get('postgres', '?')}, "
        f"load average at start {m.get('loadavg_1m', '?')}, at end {meta.get('loadavg_end', '?')}",
        f"- audit: {meta['audit']}, scale: {meta['scale']}, batch: {meta.get('batch', 'defaults')}",
    ]
    for r in results:
        lines += [
            "",
            f"## {r.mode}: {'PASS' if r.ok else 'FAIL'}",
            "",
            *[line for t in r.tables for line in (t, "")],
            "| figure | value |",
            "|---|---:|",
        ]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in r.figures.items()]
        lines += ["", "| check | result | detail |", "|---|---|---|"]
        lines += [
            f"| {ch.name} | {'PASS' if ch.ok else 'FAIL'} | {ch.detail.replace('|', '/')} |"
            for ch in r.checks
        ]
        if r.notes:
            lines += ["", *[f"- {n}" for n in r.notes]]
    return "\n".join(lines) + "\n"


def as_json(r: Result, meta: dict[str, Any]) -> dict[str, Any]:
    figs = {
        k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.figures.items()
    }
    return {
        **meta,
        "mode": r.mode,
        "ok": r.ok,
        "figures": figs,
        "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in r.checks],
        "notes": r.notes,
    }


def save(results: list[Result], meta: dict[str, Any], text: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with (RESULTS / "results.jsonl").open("a") as f:
        for r in results:
            f.write(json.dumps(as_json(r, meta), default=str) + "\n")
    mode = "-".join(r.mode for r in results)
    scale = "" if meta["scale"] == 1 else f"-scale{meta['scale']:g}"
    batch = meta.get("batch")
    tuned = (
        "" if not isinstance(batch, dict) else "-" + "-".join(f"{k}{v:g}" for k, v in batch.items())
    )
    audit = "" if meta.get("audit", "row") == "row" else f"-audit-{meta['audit']}"
    path = RESULTS / f"{meta['date'][:10]}-{mode}{audit}{scale}{tuned}.md"
    path.write_text(text)
    return path


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
