"""The benchmark's pure pieces: percentiles, probe lag, audit check, log parsing, report."""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench import logstats
from bench.__main__ import options, parse
from bench.lag import Probe, percentiles
from bench.report import Result, as_json, markdown
from bench.verify import Check, audit_check
from bench.workload import BacklogSpec


def test_percentiles_nearest_rank() -> None:
    p = percentiles([float(x) for x in range(1, 101)])
    assert (p["p50"], p["p99"], p["max"], p["n"]) == (50.0, 99.0, 100.0, 100.0)
    assert math.isnan(percentiles([])["p50"])


def test_probe_lag_is_first_sample_that_covers_the_last_id() -> None:
    probe = Probe("postgresql://unused")
    probe.samples = [(10.0, 0), (10.5, 20), (11.0, 40)]
    lags, unseen = probe.lags_ms([(10, 10.1), (20, 10.2), (30, 10.3), (50, 10.4)])
    assert [round(x) for x in lags] == [400, 300, 700]
    assert unseen == 1


def test_audit_check_per_level() -> None:
    row = {"insert/applied": 100, "update/applied": 20, "delete/applied": 5}
    assert audit_check(row, "row", 125, 13).ok
    assert not audit_check({**row, "delete/applied": 4}, "row", 125, 13).ok
    assert not audit_check({**row, "update/failed": 1}, "row", 125, 13).ok
    assert audit_check({"transaction/applied": 13}, "transaction", 125, 13).ok
    assert audit_check({}, "off", 125, 13).ok
    assert not audit_check({"insert/applied": 1}, "off", 125, 13).ok


def test_backlog_scaling_keeps_transaction_size() -> None:
    s = BacklogSpec().scaled(0.02)
    assert (s.inserts, s.updates, s.deletes, s.tx_rows, s.changes) == (2000, 400, 100, 100, 2500)
    assert BacklogSpec().changes == 125_000


def test_logstats_reads_batches_and_errors(tmp_path: Path) -> None:
    log = tmp_path / "d.log"
    events = [
        {"event": "pipeline_started", "timestamp": "2026-01-01T00:00:00Z"},
        {
            "event": "batch_applied",
            "rows": 10,
            "lag_seconds": 0.5,
            "timestamp": "2026-01-01T00:00:01Z",
        },
        {"event": "transient_error_retrying", "error": "boom", "level": "warning"},
        {
            "event": "batch_applied",
            "rows": 5,
            "lag_seconds": 0.2,
            "timestamp": "2026-01-01T00:00:02.5Z",
        },
    ]
    log.write_text("not json\n" + "\n".join(json.dumps(e) for e in events) + "\n")
    st = logstats.read(log)
    assert (st.batches, st.rows, st.max_lag_s, st.last_lag_s, st.stream_s) == (2, 15, 0.5, 0.2, 2.5)
    assert st.errors == 1 and "boom" in st.first_error


def test_report_marks_failures_and_drops_nan() -> None:
    r = Result(
        "drain",
        {"rows_per_s": 12345.6, "lag": math.nan},
        [Check("content", True), Check("audit", False, "a|b")],
    )
    meta = {
        "date": "2026-01-01T00:00:00+00:00",
        "command": "python -m bench",
        "machine": {"nproc": 2, "cpu": "x", "memory_gib": 1.0, "kernel": "k", "python": "3"},
        "commit": {"sha": "abc", "dirty": False},
        "audit": "row",
        "scale": 1.0,
    }
    text = markdown([r], meta)
    assert "## drain: FAIL" in text and "| rows_per_s | 12,346 |" in text and "a/b" in text
    assert as_json(r, meta)["figures"]["lag"] is None and not r.ok


def test_command_line_reaches_the_options() -> None:
    o = options(
        parse(["--scale", "0.1", "--audit", "off", "--batch", "max_seconds=0.05,max_rows=7"])
    )
    assert (o.audit, o.scale, o.duration) == ("off", 0.1, 3.0)
    assert o.batch == {"max_seconds": 0.05, "max_rows": 7}
    assert options(parse([])).duration == 20.0 and options(parse([])).batch is None
