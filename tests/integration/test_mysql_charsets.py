"""MariaDB text in other character sets than utf8mb4, read from the binlog's raw bytes: each
charset decoded as the server stores it. latin1's five bytes that Windows-1252 leaves
undefined (0x81, 0x8D, 0x8F, 0x90, 0x9D) stopped the pipeline for good; utf16 / ucs2 / utf32
were decoded as UTF-8. Compared with the source read through a utf8mb4 connection."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.integration.harness import kill, wait_until
from tests.integration.routes import Route, execute, fetch, kind

pytestmark = pytest.mark.integration

DDL = (
    "CREATE TABLE t (id int PRIMARY KEY, "
    "l1 varchar(20) CHARACTER SET latin1, "
    "l1t text CHARACTER SET latin1, "
    "u16 varchar(20) CHARACTER SET utf16, "
    "u16le text CHARACTER SET utf16le, "
    "uc2 char(10) CHARACTER SET ucs2, "
    "u32 varchar(20) CHARACTER SET utf32, "
    "cyr varchar(20) CHARACTER SET cp1251)"
)
# latin1 bytes: 0x81 0x8D 0x8F 0x90 0x9D (C1 controls in MySQL's latin1), € (0x80), é (0xE9).
LATIN1 = "CONVERT(UNHEX('818D8F909D80E941') USING latin1)"


def _row(i: int) -> str:
    return (
        f"({i}, {LATIN1}, CONCAT({LATIN1}, 'x{i}'), 'zoë 😀 {i}', 'naïve {i}', 'ñ{i}', "
        f"'𝄞 clef {i}', 'Привет {i}')"
    )


@pytest.mark.parametrize("engine", ["pg", "mysql"])
def test_text_in_other_character_sets_arrives_exactly(
    tmp_path: Path, engine: str, my_source_dsn: str, target_dsn: str, my_target_dsn: str
) -> None:
    src = my_source_dsn
    tgt = target_dsn if engine == "pg" else my_target_dsn
    sdb, tdb = src.rsplit("/", 1)[-1], tgt.rsplit("/", 1)[-1]
    ttable = f"{tdb}.t" if kind(tgt) == "mysql" else "public.t"
    execute(src, DDL, f"INSERT INTO t VALUES {_row(1)}")  # copied by the snapshot
    r = Route(tmp_path, src, tgt, {f"{sdb}.t": ttable}, pipeline="cs", max_seconds=0.05)
    r.drain()
    proc = r.start()
    try:
        execute(src, f"INSERT INTO t VALUES {_row(2)}", f"INSERT INTO t VALUES {_row(3)}",
                "UPDATE t SET l1 = CONCAT(l1, 'u'), u16 = 'upd 😀' WHERE id = 1")  # fmt: skip
        wait_until(lambda: len(fetch(tgt, "t", "id")) == 3 or proc.poll() is not None)
        execute(src, "UPDATE t SET cyr = 'Пока' WHERE id = 3")
        wait_until(lambda: fetch(tgt, "t", "id, cyr")[-1][1] == "Пока" or proc.poll() is not None)
    finally:
        assert kill(proc, signal.SIGTERM) == 0, r.log.read_text()[-2000:]
    cols = "id, l1, l1t, u16, u16le, uc2, u32, cyr"
    got = [tuple(_text(v) for v in row) for row in fetch(tgt, "t", cols)]
    want = [tuple(_text(v) for v in row) for row in fetch(src, "t", cols)]
    assert got == want
    assert want[1][1] == "\x81\x8d\x8f\x90\x9d€éA"
    assert "dead_letter" not in r.log.read_text()


def _text(v: object) -> object:
    return v.rstrip(" ") if isinstance(v, str) else v  # char(10): PostgreSQL keeps the padding


def test_a_character_set_without_an_exact_decoder_is_refused_by_name(
    tmp_path: Path, my_source_dsn: str, target_dsn: str
) -> None:
    src = my_source_dsn
    sdb = src.rsplit("/", 1)[-1]
    execute(src, "CREATE TABLE t (id int PRIMARY KEY, v varchar(10) CHARACTER SET swe7)")
    r = Route(tmp_path, src, target_dsn, {f"{sdb}.t": "public.t"}, pipeline="cs2")
    res = r.cli("check")
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "column 'v'" in out and "swe7" in out and "CONVERT TO CHARACTER SET utf8mb4" in out, out
