"""Demo: two throwaway PostgreSQL servers, a small CRM, the daemon, live changes, results."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from cdc_sync.testing.pgserver import running_pg

SCHEMA = """
CREATE TABLE customers (
    id bigint PRIMARY KEY,
    name text NOT NULL,
    phone varchar(32),
    email text,
    do_not_call boolean NOT NULL DEFAULT false,
    balance numeric(12,2) NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE call_records (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    customer_id bigint NOT NULL REFERENCES customers(id),
    started_at timestamptz NOT NULL,
    duration interval NOT NULL,
    outcome text NOT NULL,
    notes jsonb
);
INSERT INTO customers (id, name, phone, email, balance) VALUES
  (1, 'Ada Lovelace',  '+44 20 7946 0001', 'ada@example.com',  120.50),
  (2, 'Alan Turing',   '+44 20 7946 0002', 'alan@example.com',   0),
  (3, 'Grace Hopper',  '+1 202 555 0103',  'grace@example.com', 75.25);
INSERT INTO call_records (customer_id, started_at, duration, outcome, notes) VALUES
  (1, '2026-11-20 09:00:00+00', '4 min 10 s', 'answered', '{"agent": "a17"}'),
  (2, '2026-11-20 09:05:00+00', '35 s', 'voicemail', null);
"""

LIVE = [
    (
        "INSERT INTO customers (id, name, phone, email) VALUES "
        "(4, 'Katherine Johnson', '+1 757 555 0104', 'kj@example.com')"
    ),
    "UPDATE customers SET do_not_call = true, updated_at = now() WHERE id = 2",
    (
        "INSERT INTO call_records (customer_id, started_at, duration, outcome) "
        "VALUES (4, now(), '2 min', 'answered')"
    ),
    "UPDATE customers SET balance = balance + 10 WHERE id IN (1, 3)",
    "DELETE FROM call_records WHERE outcome = 'voicemail'",
    # Not a valid phone number: the phone rule refuses it, it becomes a dead letter.
    (
        "INSERT INTO customers (id, name, phone, email) VALUES "
        "(5, 'Edsger Dijkstra', '12345', 'EWD@example.com')"
    ),
]

_COPIED = 5  # rows in SCHEMA's INSERTs: audited with op 'snapshot'

CONFIG = """
sources:
  crm: {type: postgres, dsn: "${CRM_DSN}"}
targets:
  hub: {type: postgres, dsn: "${HUB_DSN}"}
pipelines:
  crm_to_hub:
    source: crm
    target: hub
    tables:
      public.customers:
        columns:                        # rules (docs/rules.md): normalise, then mask
          phone:
            transforms:
              - phone: {region: GB, format: e164}
              - mask: {keep_first: 3, keep_last: 4}
          email: {transforms: [lower, trim, {validate: email}]}
      public.call_records: {target: public.calls}
logging: {format: console}
"""


def _print(conn: psycopg.Connection[tuple[object, ...]], title: str, sql: str) -> None:
    cur = conn.execute(sql)
    names = [d.name for d in cur.description or []]
    rows = [[("" if v is None else str(v)) for v in r] for r in cur.fetchall()]
    widths = [
        max(len(n), *(len(r[i]) for r in rows)) if rows else len(n) for i, n in enumerate(names)
    ]
    print(f"\n== {title} ({len(rows)} rows)")
    print("  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


def _wait_for(conn: psycopg.Connection[tuple[object, ...]], sql: str, want: object) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            row = conn.execute(sql).fetchone()
            if row and row[0] == want:
                return
        except psycopg.errors.UndefinedTable:
            pass
        time.sleep(0.2)
    raise SystemExit(f"demo: timed out waiting for {sql!r} = {want!r}")


def main() -> None:
    with running_pg() as src, running_pg() as tgt, tempfile.TemporaryDirectory() as tmp:
        src.create_database("crm")
        tgt.create_database("hub")
        with psycopg.connect(src.dsn("crm"), autocommit=True) as c:
            c.execute(SCHEMA)
        cfg = Path(tmp) / "demo.yaml"
        cfg.write_text(CONFIG)
        env = {**os.environ, "CRM_DSN": src.dsn("crm"), "HUB_DSN": tgt.dsn("hub")}
        cli = [sys.executable, "-m", "cdc_sync"]
        print("== cdc-sync check")
        subprocess.run([*cli, "check", "-c", str(cfg)], env=env, check=True)
        print("\n== starting the daemon (its log follows)")
        daemon = subprocess.Popen([*cli, "run", "-c", str(cfg)], env=env)
        try:
            with psycopg.connect(src.dsn("crm"), autocommit=True) as c:
                with psycopg.connect(tgt.dsn("hub"), autocommit=True) as t:
                    # The first start copies the existing rows (snapshot: initial), then
                    # streams from exactly that point: live changes after it.
                    done = "SELECT count(*) FROM cdc_sync_snapshots WHERE status = 'done'"
                    _wait_for(t, done, 2)
                for sql in LIVE:
                    c.execute(sql)
            with psycopg.connect(tgt.dsn("hub"), autocommit=True) as t:
                _wait_for(t, "SELECT count(*) FROM cdc_sync_audit", _COPIED + len(LIVE) + 1)
                _print(
                    t,
                    "target public.customers",
                    "SELECT id, name, phone, email, do_not_call, balance FROM customers "
                    "ORDER BY id",
                )
                _print(
                    t,
                    "target public.calls",
                    "SELECT customer_id, duration, outcome FROM calls ORDER BY started_at",
                )
                _print(
                    t,
                    "target cdc_sync_audit",
                    "SELECT id, source_table, target_table, op, pk, source_position, "
                    "outcome FROM cdc_sync_audit ORDER BY id",
                )
                _print(
                    t,
                    "target cdc_sync_dead_letters",
                    "SELECT id, source_table, pk, rule, column_name, reason, row_masked "
                    "FROM cdc_sync_dead_letters ORDER BY id",
                )
                _print(
                    t,
                    "target cdc_sync_checkpoints",
                    "SELECT pipeline, position, committed_at FROM cdc_sync_checkpoints",
                )
        finally:
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(timeout=30)
        print(f"\n== daemon stopped on SIGTERM with exit code {code}")
        subprocess.run([*cli, "offsets", "show", "-c", str(cfg)], env=env, check=True)
        print("\n== cdc-sync verify: source (after the masking rules) vs target, row by row")
        subprocess.run([*cli, "verify", "-c", str(cfg), "-p", "crm_to_hub"], env=env, check=False)


if __name__ == "__main__":
    main()
