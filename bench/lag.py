"""End-to-end lag: a probe polling the target, and (when the audit has the columns) the audit."""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

import psycopg
import pymysql

from bench.env import TABLE

# Column pairs (source commit time, applied time) looked for in cdc_sync_audit, first match wins.
_AUDIT_TIME_COLUMNS = (
    ("source_commit_at", "applied_at"),
    ("source_committed_at", "applied_at"),
    ("committed_at", "applied_at"),
    ("source_commit_time", "applied_at"),
    ("commit_time", "applied_at"),
)


def percentiles(values: Sequence[float], ps: Sequence[float] = (50, 99)) -> dict[str, float]:
    """Nearest-rank percentiles plus max and count; empty input gives NaN."""
    xs = sorted(values)
    out: dict[str, float] = {}
    for p in ps:
        out[f"p{p:g}"] = xs[max(0, math.ceil(p / 100 * len(xs)) - 1)] if xs else math.nan
    out["max"] = xs[-1] if xs else math.nan
    out["n"] = float(len(xs))
    return out


class _PgMax:
    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)

    def max_id(self, table: str) -> int:
        row = self.conn.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()
        return int(row[0]) if row else 0

    def __enter__(self) -> _PgMax:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


class _MyMax(_PgMax):
    """MySQL/MariaDB target: autocommit, so each poll reads a fresh snapshot."""

    def __init__(self, dsn: str) -> None:
        u = urlsplit(dsn)
        self.conn = pymysql.connect(
            host=u.hostname or "127.0.0.1",
            port=u.port or 3306,
            user=u.username or "root",
            password=u.password or "",
            database=u.path.lstrip("/") or None,
            autocommit=True,
        )

    def max_id(self, table: str) -> int:
        with self.conn.cursor() as cur:
            cur.execute(f"SELECT coalesce(max(id), 0) FROM {table}")
            row = cur.fetchone()
        return int(row[0]) if row else 0


def _connect(dsn: str) -> _PgMax:
    return _MyMax(dsn) if dsn.startswith(("mysql:", "mariadb:")) else _PgMax(dsn)


class Probe(threading.Thread):
    """Polls ``max(id)`` on the target (PostgreSQL, or MariaDB/MySQL for a ``mysql://`` DSN);
    ``samples`` keeps (query start time, max id) on change.

    A row visible to a query was committed before that query's snapshot, so the query start
    time is an upper bound of when it became visible; the poll interval bounds the error.
    """

    def __init__(self, dsn: str, interval: float = 0.01, table: str = TABLE) -> None:
        super().__init__(daemon=True, name="lag-probe")
        self.dsn, self.interval, self.table = dsn, interval, table
        self.samples: list[tuple[float, int]] = []
        self.halt = threading.Event()
        self.errors: list[BaseException] = []
        self.polls = 0

    def run(self) -> None:
        try:
            with _connect(self.dsn) as conn:
                last = -1
                while not self.halt.is_set():
                    t = time.time()
                    row = conn.max_id(self.table)
                    self.polls += 1
                    top = row
                    if top != last:
                        self.samples.append((t, top))
                        last = top
                    self.halt.wait(self.interval)
        except BaseException as e:  # reported by the caller
            self.errors.append(e)

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)

    def lags_ms(self, commits: Sequence[tuple[int, float]]) -> tuple[list[float], int]:
        """Per source transaction (last id, commit time): ms until the probe first saw it.
        Returns the lags and how many transactions the probe never saw."""
        tops = [top for _, top in self.samples]
        out: list[float] = []
        unseen = 0
        for last_id, committed in commits:
            k = bisect.bisect_left(tops, last_id)
            if k == len(tops):
                unseen += 1
                continue
            out.append(max(0.0, (self.samples[k][0] - committed) * 1000))
        return out, unseen


def audit_lag_ms(
    target_dsn: str, pipeline: str, since: float
) -> tuple[dict[str, float], str] | None:
    """Percentiles of applied time - source commit time over the pipeline's audit rows, when the
    audit table has such columns (source commits at or after ``since``, epoch seconds);
    ``None`` otherwise. Returns the figures and the expression used."""
    with psycopg.connect(target_dsn) as conn:
        cols = {
            str(r[0])
            for r in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass('cdc_sync_audit') "
                "AND attnum > 0 AND NOT attisdropped"
            )
        }
        pair = next(((c, a) for c, a in _AUDIT_TIME_COLUMNS if c in cols and a in cols), None)
        if pair is None:
            return None
        committed, applied = pair
        expr = f"extract(epoch FROM {applied} - {committed}) * 1000"
        row = conn.execute(
            f"SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY {expr}), "
            f"percentile_disc(0.99) WITHIN GROUP (ORDER BY {expr}), max({expr}), count(*) "
            f"FROM cdc_sync_audit WHERE pipeline = %s AND {committed} >= to_timestamp(%s)",
            (pipeline, since),
        ).fetchone()
    if row is None or not row[3]:
        return None
    p50, p99, mx, n = (float(v) for v in row)
    return {"p50": p50, "p99": p99, "max": mx, "n": n}, f"{applied} - {committed}"
