"""``--mode peers``: cdc-sync routes against native replication and pg_chameleon, alternating."""

from __future__ import annotations

import dataclasses
import importlib
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.report import Figure, Result
from bench.verify import Check


@dataclass(frozen=True)
class Contender:
    key: str  # what --contenders names
    name: str  # shown in the table
    route: str
    drain: str | None  # "module:function", imported when run (peer modules are optional)
    live: str | None
    peer: str | None = None  # the contender this one's ratio is taken against
    rules: bool = False  # cdc-sync with the #4 example rule set


# Order = the order of one round: each cdc-sync route runs right after its yardstick, so both
# see the same machine state; odd rounds run the list backwards to cancel drift.
CONTENDERS: tuple[Contender, ...] = (
    Contender("native-pg", "PostgreSQL logical replication", "PG→PG",
              "bench.native:drain", "bench.native:live"),
    Contender("cdc-pg-pg", "cdc-sync", "PG→PG",
              "bench.modes:drain", "bench.modes:live", peer="native-pg"),
    Contender("cdc-pg-pg-rules", "cdc-sync, #4 rules on", "PG→PG",
              "bench.modes:drain", None, peer="cdc-pg-pg", rules=True),
    Contender("cdc-pg-my", "cdc-sync", "PG→MySQL",
              "bench.to_mysql:pg_drain", "bench.to_mysql:pg_live", peer="native-pg"),
    Contender("mariadb-native", "MariaDB replication", "MySQL→MySQL",
              "bench.mariadb_native:drain", "bench.mariadb_native:live"),
    Contender("cdc-my-my", "cdc-sync", "MySQL→MySQL",
              "bench.to_mysql:my_drain", "bench.to_mysql:my_live", peer="mariadb-native"),
    Contender("chameleon", "pg_chameleon", "MySQL→PG",
              "bench.chameleon:drain", "bench.chameleon:live"),
    Contender("cdc-my-pg", "cdc-sync", "MySQL→PG",
              "bench.modes:mysql_drain_mode", "bench.modes:mysql_live_mode", peer="chameleon"),
)  # fmt: skip
BY_KEY = {c.key: c for c in CONTENDERS}

# (what, contender key, figure, peer key or None, goal, floor, higher is better): issue #9.
TARGETS: tuple[tuple[str, str, str, str | None, float, float | None, bool], ...] = (
    ("PG→PG drain vs native logical replication", "cdc-pg-pg", "drain:rows_per_s",
     "native-pg", 1.0, 0.6, True),
    ("MySQL→PG drain vs pg_chameleon", "cdc-my-pg", "drain:rows_per_s", "chameleon",
     10.0, 5.0, True),
    ("MySQL→PG drain, rows/s", "cdc-my-pg", "drain:rows_per_s", None, 47_000, None, True),
    ("MySQL→PG live lag p99, ms", "cdc-my-pg", "live:lag_p99_ms", None, 1000, None, False),
    ("PG→PG live lag p99, ms", "cdc-pg-pg", "live:lag_p99_ms", None, 100, None, False),
    ("rules on / rules off drain (cost < 20 %)", "cdc-pg-pg-rules", "drain:rows_per_s",
     "cdc-pg-pg", 0.8, None, True),
)  # fmt: skip


def _fn(spec: str) -> Callable[[Any], Result]:
    module, _, name = spec.partition(":")
    fn: Callable[[Any], Result] = getattr(importlib.import_module(module), name)
    return fn


def _fig(r: Result, name: str) -> float | None:
    # cdc-sync live runs prefix the daemon's own figures with "daemon_"
    for key in (name, f"daemon_{name}"):
        v = r.figures.get(key)
        if isinstance(v, int | float) and v == v:  # not NaN
            return float(v)
    return None


@dataclass
class _Runs:
    results: list[Result] = dataclasses.field(default_factory=list)

    def median(self, name: str) -> float | None:
        xs = [v for r in self.results if (v := _fig(r, name)) is not None]
        return statistics.median(xs) if xs else None

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.ok for r in self.results)

    def failed(self) -> str:
        bad = [c for r in self.results for c in r.checks if not c.ok]
        return "; ".join(f"{c.name}: {c.detail}"[:200] for c in bad[:2])


def _one(c: Contender, mode: str, opts: Any) -> Result:
    spec = c.drain if mode == "drain" else c.live
    assert spec is not None
    o = dataclasses.replace(opts, rules=True) if c.rules else opts  # opts: bench.modes.Options
    t0 = time.monotonic()
    try:
        r = _fn(spec)(o)
    except Exception as e:  # one broken contender must not sink the table
        r = Result(f"{c.key}-{mode}")
        r.checks.append(Check("ran", False, f"{type(e).__name__}: {e}"[:300]))
    print(
        f"bench: peers {mode} {c.key}: {'ok' if r.ok else 'FAIL'} "
        f"rows/s={r.figures.get('rows_per_s')} p99={r.figures.get('lag_p99_ms')} "
        f"({time.monotonic() - t0:.0f} s)",
        file=sys.stderr,
        flush=True,
    )
    return r


def _n(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "n/a"
    return f"{v:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _drain_table(chosen: Sequence[Contender], runs: dict[tuple[str, str], _Runs]) -> str:
    lines = [
        "| route | contender | rows/s | wall s | CPU s | peak RSS MB | cdc-sync / peer | checks |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for c in chosen:
        got = runs.get((c.key, "drain"))
        if got is None:
            continue
        rate = got.median("rows_per_s")
        peer = runs.get((c.peer, "drain")) if c.peer else None
        ratio = _ratio(rate, peer.median("rows_per_s")) if peer else None
        vs = f"{ratio:.2f}x {BY_KEY[c.peer].name}" if ratio is not None and c.peer else ""
        rss = got.median("peak_rss_mb")
        lines.append(
            f"| {c.route} | {c.name} | {_n(rate)} | {_n(got.median('wall_s'), 2)} | "
            f"{_n(got.median('cpu_s'), 2)} | {_n(rss, 0) if rss else 'n/a'} | {vs} | "
            f"{'PASS' if got.ok else 'FAIL: ' + got.failed().replace('|', '/')} |"
        )
    return "\n".join(lines)


def _live_table(chosen: Sequence[Contender], runs: dict[tuple[str, str], _Runs]) -> str:
    lines = [
        "| route | contender | lag p50 ms | lag p99 ms | lag max ms | CPU s | peak RSS MB | "
        "p99: cdc-sync / peer | checks |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in chosen:
        got = runs.get((c.key, "live"))
        if got is None:
            continue
        p99 = got.median("lag_p99_ms")
        peer = runs.get((c.peer, "live")) if c.peer else None
        ratio = _ratio(p99, peer.median("lag_p99_ms")) if peer else None
        vs = f"{ratio:.2f}x {BY_KEY[c.peer].name}" if ratio is not None and c.peer else ""
        rss = got.median("peak_rss_mb")
        lines.append(
            f"| {c.route} | {c.name} | {_n(got.median('lag_p50_ms'), 1)} | {_n(p99, 1)} | "
            f"{_n(got.median('lag_max_ms'), 1)} | {_n(got.median('cpu_s'), 2)} | "
            f"{_n(rss, 0) if rss else 'n/a'} | {vs} | "
            f"{'PASS' if got.ok else 'FAIL: ' + got.failed().replace('|', '/')} |"
        )
    return "\n".join(lines)


def _targets_table(runs: dict[tuple[str, str], _Runs]) -> str:
    lines = ["| target (#9) | measured | goal | floor | result |", "|---|---:|---:|---:|---|"]
    for what, key, fig, peer, goal, floor, higher in TARGETS:
        mode, _, name = fig.partition(":")
        got = runs.get((key, mode))
        if got is None or (peer is not None and (peer, mode) not in runs):
            continue
        v = got.median(name)
        if peer is not None:
            v = _ratio(v, runs[(peer, mode)].median(name))
        if v is None:
            verdict = "not measured"
        elif (v >= goal) if higher else (v <= goal):
            verdict = "goal met"
        elif floor is not None and v >= floor:
            verdict = "floor met"
        else:
            verdict = "missed"
        shown = f"{v:.2f}x" if peer is not None and v is not None else _n(v)
        fl = "" if floor is None else f"{floor:g}x"
        lines.append(f"| {what} | {shown} | {goal:g}{'x' if peer else ''} | {fl} | {verdict} |")
    return "\n".join(lines)


def peers(opts: Any) -> Result:
    """``opts.contenders`` (keys) x ``opts.peer_modes`` (drain, live), ``opts.rounds`` rounds."""
    keys = getattr(opts, "contenders", None) or [c.key for c in CONTENDERS]
    chosen = [BY_KEY[k] for k in keys]
    modes = getattr(opts, "peer_modes", None) or ("drain", "live")
    runs: dict[tuple[str, str], _Runs] = {}
    for i in range(opts.rounds):
        order = chosen if i % 2 == 0 else chosen[::-1]
        for mode in modes:
            for c in order:
                if (c.drain if mode == "drain" else c.live) is None:
                    continue
                runs.setdefault((c.key, mode), _Runs()).results.append(_one(c, mode, opts))
    r = Result("peers")
    r.tables.append(f"### drain: backlog of row changes, median of {opts.rounds} round(s)")
    r.tables.append(_drain_table(chosen, runs))
    if "live" in modes:
        r.tables.append(
            f"### live: {opts.rate:g} rows/s in transactions of {opts.tx_rows} for "
            f"{opts.duration:g} s; commit-to-visible lag, median of {opts.rounds} round(s)"
        )
        r.tables.append(_live_table(chosen, runs))
    r.tables.append("### targets")
    r.tables.append(_targets_table(runs))
    for (key, mode), got in runs.items():
        for name in ("rows_per_s", "lag_p50_ms", "lag_p99_ms", "cpu_s", "peak_rss_mb"):
            v = got.median(name)
            if v is not None:
                fig: Figure = round(v, 1)
                r.figures[f"{key} {mode} {name}"] = fig
        for k, one in enumerate(got.results, 1):
            r.checks += [Check(f"{key} {mode} {k}: {c.name}", c.ok, c.detail) for c in one.checks]
    r.notes.append(
        "CPU s and peak RSS: the replicator's own process (cdc-sync daemon, pg_chameleon); "
        "for native replication the servers' CPU over the run (no separate process to measure)"
    )
    r.notes.append(
        "PG→MySQL has no native peer; its ratio is against PostgreSQL logical replication "
        "(PG→PG) as the yardstick"
    )
    return r
