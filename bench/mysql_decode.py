"""Decode throughput of ``MysqlCapture.stream()`` on a throwaway MariaDB (issue #3).

Workload: 100k inserts in transactions of 100 rows, then 20k single-row UPDATE and 5k
single-row DELETE autocommit statements: 125k row changes. The stream is read from the start
position after the fact (a backlog drain), so the figure is the capture's CPU ceiling.

    .venv/bin/python -m bench.mysql_decode                      # best of 3 passes
    .venv/bin/python -m bench.mysql_decode --passes 1 --cprofile /tmp/decode.pstats
    .venv/bin/python -m bench.mysql_decode --checksum NONE --dump /tmp/records.txt

``--dump`` writes every TxBegin / ChangeRecord / TxCommit as one line (compare two
implementations on the same binlog with ``--dsn`` and ``--start``).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import hashlib
import os
import time
from collections.abc import Iterator

import pymysql

from cdc_sync.config.dsn import parse_mysql_dsn
from cdc_sync.records import BinlogPosition, ChangeRecord, Position, TableId, TxBegin, TxCommit
from cdc_sync.sources.mysql.source import MysqlCapture
from cdc_sync.testing.myserver import running_mariadb

DDL = (
    "CREATE TABLE t (id BIGINT PRIMARY KEY, name VARCHAR(100), email VARCHAR(200),"
    " phone VARCHAR(32), status TINYINT, balance DECIMAL(12,2), created_at DATETIME(6),"
    " note TEXT)"
)


def load(dsn: str, inserts: int = 100_000, updates: int = 20_000, deletes: int = 5_000) -> int:
    """Write the workload into the DSN's database; returns the number of row changes."""
    d = parse_mysql_dsn(dsn)
    conn = pymysql.connect(
        **d.connect_args(), database=d.database, charset="utf8mb4", autocommit=False
    )
    with conn, conn.cursor() as cur:
        cur.execute(DDL)
        for b in range(0, inserts, 100):
            vals = ",".join(
                f"({i},'name {i}','user{i}@example.com','+1-555-{i:07d}',{i % 5},{i}.25,"
                f"'2024-01-02 03:04:05.{i % 1000000:06d}','a note about {i}')"
                for i in range(b, min(b + 100, inserts))
            )
            cur.execute("INSERT INTO t VALUES " + vals)
            conn.commit()
        conn.autocommit(True)
        for i in range(updates):
            cur.execute(f"UPDATE t SET status = status + 1, balance = balance + 1 WHERE id = {i}")
        for i in range(deletes):
            cur.execute(f"DELETE FROM t WHERE id = {inserts - 1 - i}")
    return inserts + min(updates, inserts) + min(deletes, inserts)


def _line(ev: object) -> str | None:
    if type(ev) is ChangeRecord:
        return (
            f"R {ev.op.value} {ev.table} {ev.before!r} {ev.after!r} {ev.position} {ev.xid} "
            f"{ev.commit_time.isoformat()} {ev.schema.names}"
        )
    if type(ev) is TxBegin:
        return f"B {ev.xid} {ev.commit_time.isoformat()} {ev.final_position}"
    if type(ev) is TxCommit:
        return f"C {ev.xid} {ev.commit_time.isoformat()} {ev.end_position} {ev.row_count}"
    return None


def one_pass(
    src: MysqlCapture, start: Position, total: int, dump: str | None
) -> tuple[float, float]:
    """Wall and CPU seconds (this process) for stream() to yield ``total`` ChangeRecords."""
    lines: list[str] = []
    n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for ev in src.stream(start):
        if dump is not None:
            line = _line(ev)
            if line is not None:
                lines.append(line)
        if type(ev) is ChangeRecord:
            n += 1
            if n == total:
                break
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    src.close_stream()
    if dump is not None:
        with open(dump, "w") as f:
            f.write("\n".join(lines) + "\n")
        digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
        print(f"dumped {len(lines)} lines to {dump} (sha256 {digest})")
    return dt, cpu


@contextlib.contextmanager
def _server(args: argparse.Namespace) -> Iterator[tuple[str, Position, int]]:
    if args.dsn:
        yield args.dsn, BinlogPosition.from_body(args.start), args.rows
        return
    extra = {"binlog_checksum": args.checksum}
    with running_mariadb(extra=extra) as srv:
        dsn = srv.create_database("bench")
        src = MysqlCapture(parse_mysql_dsn(dsn), 4242, [TableId("bench", "t")])
        start = src.start_position()
        src.close()
        t0 = time.perf_counter()
        total = load(dsn)
        print(f"workload: {total} row changes written in {time.perf_counter() - t0:.1f} s")
        print(f"  (--dsn {dsn} --start '{start.body()}' --rows {total} to re-read it)")
        yield dsn, start, total


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.mysql_decode", description=__doc__)
    p.add_argument("--passes", type=int, default=3, help="timed passes; the best is reported")
    p.add_argument("--checksum", choices=["CRC32", "NONE"], default="CRC32")
    p.add_argument("--cprofile", metavar="FILE", help="profile the last pass into FILE")
    p.add_argument("--dump", metavar="FILE", help="write the records of the last pass")
    p.add_argument("--dsn", help="use this server (with --start, --rows) instead of a new one")
    p.add_argument("--start", help="binlog position to read from, file:pos[|gtid=...]")
    p.add_argument("--rows", type=int, default=125_000)
    p.add_argument("--hold", action="store_true", help="wait for Enter before tearing down")
    args = p.parse_args(argv)
    with _server(args) as (dsn, start, total):
        d = parse_mysql_dsn(dsn)
        assert d.database
        src = MysqlCapture(d, 4243, [TableId(d.database, "t")])
        src.prepare(create=False)
        times: list[tuple[float, float]] = []
        for i in range(args.passes):
            last = i == args.passes - 1
            gc.collect()
            prof = cProfile.Profile() if last and args.cprofile else None
            if prof is not None:
                prof.enable()
            dt, cpu = one_pass(src, start, total, args.dump if last else None)
            if prof is not None:
                prof.disable()
                prof.dump_stats(args.cprofile)
            times.append((dt, cpu))
            print(
                f"pass {i + 1}: {total} rows in {dt:.2f} s = {total / dt:,.0f} rows/s"
                f" (CPU {cpu:.2f} s = {total / cpu:,.0f} rows/s per CPU second)"
            )
        src.close()
        best, best_cpu = min(t for t, _ in times), min(c for _, c in times)
        print(
            f"best: {total / best:,.0f} rows/s wall, {total / best_cpu:,.0f} rows/s per CPU "
            f"second (checksum {args.checksum}; load average {os.getloadavg()[0]:.2f})"
        )
        if args.hold:
            input("server kept; Enter to stop ")


if __name__ == "__main__":
    main()
