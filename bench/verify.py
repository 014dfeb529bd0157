"""Correctness: exact source/target comparison (all columns, ordered by key) and the audit count."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import psycopg

from bench.env import TABLE

_SESSION = (
    "SET TimeZone = 'UTC'",
    "SET extra_float_digits = 3",
    "SET IntervalStyle = 'postgres'",
    "SET DateStyle = 'ISO, YMD'",
)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Comparison:
    source_rows: int = 0
    target_rows: int = 0
    missing: int = 0  # in the source, not in the target
    extra: int = 0  # in the target, not in the source
    different: int = 0
    source_sha256: str = ""
    target_sha256: str = ""
    examples: list[str] = field(default_factory=list)
    column_problem: str = ""

    @property
    def equal(self) -> bool:
        return not (self.missing or self.extra or self.different or self.column_problem)


def _columns(dsn: str, table: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (table,),
        )
        return [(str(r[0]), str(r[1])) for r in cur.fetchall()]


def _stream(
    dsn: str, table: str, key: str, update: Callable[[bytes], object]
) -> Iterator[tuple[int, str]]:
    """(key, the row as PostgreSQL's own text) in key order, through a server-side cursor."""
    with psycopg.connect(dsn) as conn:
        for s in _SESSION:
            conn.execute(s)
        with conn.cursor(name="bench_compare") as cur:
            cur.itersize = 20_000
            cur.execute(f"SELECT {key}, t::text FROM {table} t ORDER BY {key}")
            for k, text in cur:
                update(str(text).encode() + b"\n")
                yield int(k), str(text)


def compare_tables(
    source_dsn: str, target_dsn: str, table: str = TABLE, key: str = "id", examples: int = 5
) -> Comparison:
    """Merge-join both tables by key; memory stays flat however many rows there are."""
    out = Comparison()
    src_cols, tgt_cols = _columns(source_dsn, table), _columns(target_dsn, table)
    if src_cols != tgt_cols:
        out.column_problem = f"columns differ: source {src_cols} target {tgt_cols}"
    hs, ht = hashlib.sha256(), hashlib.sha256()
    src, tgt = (
        _stream(source_dsn, table, key, hs.update),
        _stream(target_dsn, table, key, ht.update),
    )
    a, b = next(src, None), next(tgt, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            assert a is not None
            out.missing += 1
            out.source_rows += 1
            _note(out, examples, f"missing in target: {a[1]}")
            a = next(src, None)
        elif a is None or b[0] < a[0]:
            out.extra += 1
            out.target_rows += 1
            _note(out, examples, f"extra in target: {b[1]}")
            b = next(tgt, None)
        else:
            if a[1] != b[1]:
                out.different += 1
                _note(out, examples, f"differs: source {a[1]} target {b[1]}")
            out.source_rows += 1
            out.target_rows += 1
            a, b = next(src, None), next(tgt, None)
    out.source_sha256, out.target_sha256 = hs.hexdigest(), ht.hexdigest()
    return out


def _note(out: Comparison, limit: int, text: str) -> None:
    if len(out.examples) < limit:
        out.examples.append(text)


def content_check(cmp: Comparison) -> Check:
    if cmp.equal:
        return Check(
            "content",
            True,
            f"{cmp.source_rows} rows identical (sha256 {cmp.source_sha256[:16]})",
        )
    parts = [
        f"source {cmp.source_rows} rows, target {cmp.target_rows}",
        f"missing {cmp.missing}, extra {cmp.extra}, different {cmp.different}",
    ]
    if cmp.column_problem:
        parts.append(cmp.column_problem)
    parts += cmp.examples
    return Check("content", False, "; ".join(parts))


def audit_counts(target_dsn: str, pipeline: str) -> dict[str, int]:
    """Audit rows of the pipeline by ``op/outcome`` (empty when there is no audit table)."""
    with psycopg.connect(target_dsn) as conn:
        exists = conn.execute("SELECT to_regclass('cdc_sync_audit') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return {}
        cur = conn.execute(
            "SELECT op::text, outcome::text, count(*) FROM cdc_sync_audit WHERE pipeline = %s "
            "GROUP BY 1, 2 ORDER BY 1, 2",
            (pipeline,),
        )
        return {f"{op}/{outcome}": int(n) for op, outcome, n in cur.fetchall()}


def audit_check(counts: dict[str, int], audit: str, changes: int, transactions: int) -> Check:
    """row: one 'applied' row per source row change; transaction: one per source transaction;
    off: none at all."""
    applied = sum(n for k, n in counts.items() if k.endswith("/applied"))
    total = sum(counts.values())
    detail = ", ".join(f"{k}={n}" for k, n in counts.items()) or "no audit rows"
    if audit == "row":
        ok = applied == changes == total
        return Check("audit", ok, f"applied {applied}, expected {changes} ({detail})")
    if audit == "transaction":
        ok = total == transactions
        return Check("audit", ok, f"{total} rows, expected {transactions} ({detail})")
    return Check("audit", total == 0, f"audit off: {detail}")
