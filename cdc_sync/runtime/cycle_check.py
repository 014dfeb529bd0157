"""Refuse pipelines of one config that pass every change round a cycle (a → b → a)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import psycopg
import pymysql
import sqlalchemy.exc

from cdc_sync import logs
from cdc_sync.config.models import Config
from cdc_sync.errors import CdcSyncError, PermanentError
from cdc_sync.runtime.classify import classify
from cdc_sync.runtime.cycles import Cycle, Edge, Node, find_cycles
from cdc_sync.runtime.self_loop import target_instance
from cdc_sync.runtime.wiring import build_source, table_map, target_engine

Endpoint = tuple[str, str]  # ("source" | "target", its name in the config)

# What asking a server may meet (as `check` meets them): classified, logged, skipped.
_ASK_ERRORS = (
    CdcSyncError,
    psycopg.Error,
    pymysql.err.MySQLError,
    sqlalchemy.exc.SQLAlchemyError,
    OSError,
)
_SHOWN = 3  # cycles spelt out per set of pipelines; the others are counted
_FIX = (
    "every change would be applied and captured again for ever (WAL / binlog and audit "
    "growing without end). Fix: for two-way sync use a `links:` entry (docs/two-way.md), "
    "whose loop prevention stops the echo; otherwise remove one direction"
)


class CycleError(PermanentError):
    """Pipelines of the config would pass every change round a cycle for ever."""


def _ask_source(config: Config, pipeline: str) -> str | None:
    source = build_source(config, pipeline)
    try:
        return source.instance()
    finally:
        source.close()


def _ask_target(config: Config, pipeline: str) -> str | None:
    engine = target_engine(config, pipeline)
    try:
        with engine.connect() as conn:
            return target_instance(conn)
    finally:
        engine.dispose()


def _asked(ask: Callable[[], str | None], endpoint: Endpoint) -> str | None:
    try:
        return ask()
    except _ASK_ERRORS as e:  # never fails a start: what it cannot ask is left out
        err = classify(e, f"cannot ask {endpoint[0]} {endpoint[1]} which server it is")
        logs.get().debug("cycle_check_skipped", endpoint=" ".join(endpoint), error=str(err))
        return None


def endpoint_instances(config: Config) -> dict[Endpoint, str]:
    """The server and database of every source and target the pipelines use: one short
    connection and query per distinct DSN, all at once. An endpoint that cannot be reached
    (or whose user may not ask) is left out, with a debug log: its edges are skipped."""
    asks: dict[tuple[str, str], tuple[Endpoint, Callable[[], str | None]]] = {}
    members: dict[tuple[str, str], list[Endpoint]] = {}
    for name, pc in config.pipelines.items():
        sides = (
            (("source", pc.source), config.sources[pc.source], _ask_source),
            (("target", pc.target), config.targets[pc.target], _ask_target),
        )
        for endpoint, conf, ask in sides:
            key: tuple[str, str] = (conf.type, conf.dsn.get_secret_value())  # same DSN, same answer
            asks.setdefault(key, (endpoint, partial(ask, config, name)))
            if endpoint not in members.setdefault(key, []):
                members[key].append(endpoint)
    if not asks:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(asks))) as pool:
        answers = pool.map(lambda kv: _asked(kv[1][1], kv[1][0]), asks.items())
        out: dict[Endpoint, str] = {}
        for key, answer in zip(asks, answers, strict=True):
            if answer is not None:
                out.update(dict.fromkeys(members[key], answer))
    return out


def pipeline_edges(config: Config, instances: Mapping[Endpoint, str]) -> list[Edge]:
    """Each table mapping of each pipeline (after renames) as an edge between (instance,
    table) nodes; a pipeline whose source or target is not in ``instances`` adds none."""
    edges: list[Edge] = []
    for name, pc in config.pipelines.items():
        src, tgt = instances.get(("source", pc.source)), instances.get(("target", pc.target))
        if src is None or tgt is None:
            continue
        role = config.link_role(name)
        link = role.link if role is not None else None
        for s, t in table_map(config, name).items():
            edges.append(Edge(name, Node(src, s), Node(tgt, t), link))
    return edges


def _step(config: Config, e: Edge) -> str:
    pc = config.pipelines[e.pipeline]
    via = f" (link {e.link})" if e.link else ""
    s, t = e.source.table, e.target.table
    return f"{e.pipeline}{via} copies {s} (source {pc.source}) to {t} (target {pc.target})"


def describe(config: Config, cycles: list[Cycle]) -> str:
    """One problem line for the cycles through one set of pipelines: pipeline, source and
    target names of the config and tables only (never a DSN, host or instance)."""
    names = list(dict.fromkeys(e.pipeline for e in cycles[0]))
    rounds = [", ".join(_step(config, e) for e in c) + ", and round again" for c in cycles]
    more = len(rounds) - _SHOWN
    shown = "; ".join(rounds[:_SHOWN]) + (f"; and {more} more such cycle(s)" if more > 0 else "")
    note = ""
    if any(e.link for c in cycles for e in c):
        note = (
            " (a link's loop prevention drops only what its own other direction wrote, not "
            "a change that comes round through other pipelines)"
        )
    return f"pipelines {', '.join(names)} form a replication cycle: {shown}{note}; {_FIX}"


def cycle_problems(
    config: Config, instances: Mapping[Endpoint, str] | None = None
) -> dict[str, list[str]]:
    """Pipeline → one line per set of pipelines it forms a cycle with. Every pipeline of the
    config is looked at, whatever is started: the other direction may run in another process
    with the same config (``run -p``). ``instances``: asked here when not given."""
    if len(config.pipelines) < 2:
        return {}  # one pipeline into its own tables is runtime.self_loop's
    if instances is None:
        instances = endpoint_instances(config)
    groups: dict[frozenset[str], list[Cycle]] = {}
    for cycle in find_cycles(pipeline_edges(config, instances)):
        groups.setdefault(frozenset(e.pipeline for e in cycle), []).append(cycle)
    out: dict[str, list[str]] = {}
    for names, cycles in groups.items():
        line = describe(config, cycles)
        for name in sorted(names):
            out.setdefault(name, []).append(line)
    return out


def refused(config: Config, names: list[str]) -> dict[str, CycleError]:
    """The pipelines among ``names`` that are on a cycle, each with its error; asked once at
    ``run`` start, before any slot, publication or state table is made."""
    problems = cycle_problems(config)
    return {n: CycleError(" Also: ".join(problems[n])) for n in names if n in problems}
