"""A row larger than a MySQL / MariaDB target's max_allowed_packet: the server drops the
connection instead of refusing the row, and the daemon retried that for ever (27 times in
40 s, "InterfaceError (MySQL error 0)"). It is a dead letter now, with the setting to raise,
and applies once the setting is raised."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdc_sync.testing.myserver import running_mariadb
from tests.integration.routes import Route, execute, fetch

pytestmark = pytest.mark.integration


def test_row_over_max_allowed_packet_is_a_dead_letter(source_dsn: str, tmp_path: Path) -> None:
    with running_mariadb(extra={"max_allowed_packet": "1M"}) as server:
        tgt = server.create_database("hub")
        execute(source_dsn, "CREATE TABLE docs (id int PRIMARY KEY, body bytea, note text)")
        r = Route(tmp_path, source_dsn, tgt, {"public.docs": "hub.docs"})
        r.drain()
        execute(
            source_dsn,
            "INSERT INTO docs VALUES (1, 'small', 'a')",
            "INSERT INTO docs VALUES (2, decode(repeat('ab', 1500000), 'hex'), 'b')",  # 1.5 MB
            "INSERT INTO docs VALUES (3, 'small', 'c')",
        )
        res = r.cli("run", "--until-caught-up", timeout=60)
        assert res.returncode == 0, res.stderr[-2000:]
        assert "transient_error_retrying" not in res.stderr
        assert [row[0] for row in fetch(tgt, "hub.docs", "id")] == [1, 3]
        letters = r.cli("dlq", "list").stdout
        assert "max_allowed_packet" in letters, letters
        execute(tgt, "SET GLOBAL max_allowed_packet = 8388608")
        retry = r.cli("dlq", "retry", "--all")
        assert retry.returncode == 0, retry.stdout + retry.stderr
        got = fetch(tgt, "hub.docs", "id, length(body), note")
        assert got == [(1, 5, "a"), (2, 1_500_000, "b"), (3, 5, "c")]
