"""A PostgreSQL enum gains a label while the daemon streams, used through an array or a domain:
pgoutput announces only the column's own type again (the array, the domain), and the enum
behind it must be read again too, or the rows using the new label become dead letters."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.integration.harness import kill, wait_until
from tests.integration.routes import Route, execute, fetch, kind

pytestmark = pytest.mark.integration

COLUMN = {
    "plain": ("outcome", "'busy'", "'voicemail'"),
    "array": ("outcome[]", "'{busy}'", "'{voicemail,busy}'"),
    "domain": ("outcome_d", "'busy'", "'voicemail'"),
    "domain array": ("outcome_d[]", "'{busy}'", "'{busy,voicemail}'"),
}


@pytest.mark.parametrize(
    ("shape", "engine"),
    [(shape, "pg") for shape in COLUMN]
    + [("plain", "mysql"), ("domain", "mysql")],  # MariaDB has no arrays
)
def test_a_label_added_while_streaming_reaches_the_target(
    tmp_path: Path,
    shape: str,
    engine: str,
    source_dsn: str,
    target_dsn: str,
    my_target_dsn: str,
) -> None:
    tgt = target_dsn if engine == "pg" else my_target_dsn
    ttable = f"{tgt.rsplit('/', 1)[-1]}.calls" if kind(tgt) == "mysql" else "public.calls"
    typ, old, new = COLUMN[shape]
    execute(
        source_dsn,
        "CREATE TYPE outcome AS ENUM ('answered', 'busy')",
        "CREATE DOMAIN outcome_d AS outcome",
        f"CREATE TABLE calls (id int PRIMARY KEY, o {typ})",
        f"INSERT INTO calls VALUES (1, {old})",
    )
    r = Route(tmp_path, source_dsn, tgt, {"public.calls": ttable}, pipeline="el", max_seconds=0.05)
    r.drain()
    proc = r.start()
    try:
        execute(source_dsn, f"INSERT INTO calls VALUES (2, {old})")
        wait_until(lambda: len(fetch(tgt, "calls", "id")) == 2 or proc.poll() is not None)
        execute(
            source_dsn,
            "ALTER TYPE outcome ADD VALUE 'voicemail'",
            f"INSERT INTO calls VALUES (3, {new})",
            "UPDATE calls SET o = " + new + " WHERE id = 1",
        )
        wait_until(lambda: len(fetch(tgt, "calls", "id")) == 3 or proc.poll() is not None)
        execute(source_dsn, "INSERT INTO calls VALUES (4, NULL)")  # after the update
        wait_until(lambda: len(fetch(tgt, "calls", "id")) == 4 or proc.poll() is not None)
    finally:
        assert kill(proc, signal.SIGTERM) == 0, r.log.read_text()[-2000:]
    want = [(1, "voicemail"), (2, "busy"), (3, "voicemail"), (4, None)]
    got = [(i, _labels(v)) for i, v in fetch(tgt, "calls", "id, o")]
    assert got == [(i, _labels(v)) for i, v in fetch(source_dsn, "calls", "id, o::text")]
    assert [(i, None if v is None else ("voicemail" if "voicemail" in v else "busy"))
            for i, v in got] == want  # fmt: skip
    log = r.log.read_text()
    assert "dead_letter" not in log
    assert "source_column_type_changed" not in log  # a label added rewrites no value


def _labels(v: object) -> str | None:
    """An enum, its array as PostgreSQL's text or a MariaDB JSON / text column: the labels."""
    if v is None:
        return None
    if isinstance(v, list):
        return ",".join(str(x) for x in v)
    s = str(v)
    for ch in '{}[]" ':
        s = s.replace(ch, "")
    return s
