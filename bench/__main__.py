"""``python -m bench``: run the chosen benchmarks, print a table, record the results."""

from __future__ import annotations

import argparse
import compileall
import json
import os
import subprocess
import sys
from typing import Any

import cdc_sync
from bench import report
from bench.modes import MODES, Options
from bench.peers import BY_KEY, CONTENDERS
from bench.report import Result
from cdc_sync.testing.pgserver import pg_bindir


def _batch(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in filter(None, text.split(",")):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in ("max_rows", "max_seconds", "flush_rows"):
            raise argparse.ArgumentTypeError(f"expected max_rows|max_seconds|flush_rows=N: {part}")
        out[key.strip()] = float(value) if "." in value else int(value)
    return out


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--mode", choices=[*MODES, "all"], default="drain")
    p.add_argument("--audit", choices=["row", "transaction", "off"], default="row")
    p.add_argument(
        "--scale", type=float, default=1.0, help="shrink the workloads (e.g. 0.1) for a quick run"
    )
    p.add_argument(
        "--rows",
        type=int,
        default=None,
        help="bigtx: rows in the one transaction (default 1,000,000 x scale)",
    )
    p.add_argument("--rate", type=float, default=2000.0, help="live: rows/s written")
    p.add_argument("--tx-rows", type=int, default=10, help="live: rows per transaction")
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="live: seconds of writing (default 20 x scale, at least 3)",
    )
    p.add_argument(
        "--batch",
        type=_batch,
        default=None,
        metavar="KEY=VALUE,...",
        help="pipeline batch settings, e.g. max_seconds=0.05,max_rows=5000",
    )
    p.add_argument(
        "--rules", action="store_true", help="drain: with the example rule set (bench/env.py)"
    )
    p.add_argument("--rounds", type=int, default=2, help="compare: alternating runs of each")
    p.add_argument(
        "--contenders",
        default="",
        help=f"peers: comma list of {','.join(c.key for c in CONTENDERS)} (default all)",
    )
    p.add_argument("--peer-modes", default="drain,live", help="peers: drain, live or drain,live")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per daemon run")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of markdown")
    p.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    args = p.parse_args(argv)
    if args.scale <= 0:
        p.error("--scale must be > 0")
    unknown = [k for k in filter(None, args.contenders.split(",")) if k not in BY_KEY]
    if unknown:
        p.error(f"--contenders: unknown {', '.join(unknown)}")
    if not set(filter(None, args.peer_modes.split(","))) <= {"drain", "live"}:
        p.error("--peer-modes: drain, live or drain,live")
    return args


def _postgres_version() -> str:
    try:
        out = subprocess.run(
            [str(pg_bindir() / "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except (OSError, RuntimeError):
        return "PostgreSQL ?"
    return out.strip().replace("postgres (PostgreSQL) ", "PostgreSQL ")


def options(args: argparse.Namespace) -> Options:
    duration = args.duration if args.duration is not None else max(3.0, 20.0 * args.scale)
    return Options(
        audit=args.audit,
        scale=args.scale,
        rows=args.rows,
        rate=args.rate,
        tx_rows=args.tx_rows,
        duration=duration,
        timeout=args.timeout,
        batch=args.batch,
        rounds=args.rounds,
        rules=args.rules,
        contenders=tuple(filter(None, args.contenders.split(","))),
        peer_modes=tuple(filter(None, args.peer_modes.split(","))),
    )


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    opts = options(args)
    # Bytecode for cdc_sync, as a pip install leaves it: with PYTHONDONTWRITEBYTECODE set
    # (some CI images) an editable checkout has none, and every daemon start would compile
    # the whole package again (~0.2 s of each drain), which no installed daemon pays.
    compileall.compile_dir(os.path.dirname(cdc_sync.__file__), quiet=1)
    modes = ["drain", "live", "bigtx"] if args.mode == "all" else [args.mode]
    meta: dict[str, Any] = {
        "date": report.now(),
        "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
        "machine": report.machine(),
        "commit": report.commit(),
        "postgres": _postgres_version(),
        "audit": args.audit,
        "scale": args.scale,
        "batch": args.batch or "defaults",
        "rules": "example set" if args.rules else "none",
    }
    results: list[Result] = []
    for m in modes:
        print(f"bench: {m} ...", file=sys.stderr, flush=True)
        results.append(MODES[m](opts))
    meta["loadavg_end"] = round(os.getloadavg()[0], 2)
    text = report.markdown(results, meta)
    if args.json:
        for r in results:
            print(json.dumps(report.as_json(r, meta), default=str))
    else:
        print(text)
    if not args.no_save:
        path = report.save(results, meta, text)
        print(f"bench: written {path} and {report.RESULTS / 'results.jsonl'}", file=sys.stderr)
    ok = all(r.ok for r in results)
    print(f"bench: {'PASS' if ok else 'FAIL'}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
