"""The wire layer against real servers: checksum off, a > 16 MB row, other tables skipped."""

from __future__ import annotations

import pytest

from cdc_sync.records import ChangeRecord, Heartbeat, Op
from cdc_sync.testing.myserver import running_mariadb
from tests.integration.test_mysql_source import capture, changes, collect, commits, sql

pytestmark = pytest.mark.integration


# binlog_checksum=NONE is refused at start (see test_mysql_check_cli): the library loses
# table-map keys without a checksum.
@pytest.mark.parametrize("checksum", ["CRC32"])
def test_checksum_setting_and_big_row(checksum: str) -> None:
    extra = {"binlog_checksum": checksum, "max_allowed_packet": "64M"}
    with running_mariadb(extra=extra) as srv:
        dsn = srv.create_database("w")
        sql(
            srv, dsn, "CREATE TABLE b (id INT PRIMARY KEY, v LONGBLOB, s VARCHAR(10))",
            "CREATE TABLE other (id INT PRIMARY KEY, v LONGBLOB)",
        )  # fmt: skip
        src = capture(dsn, "b")
        try:
            src.prepare(create=False)
            start = src.start_position()
            big = 17 * 1024 * 1024  # the rows event is > 0xFFFFFF bytes: a split packet
            sql(
                srv, dsn, f"INSERT INTO other VALUES (1, REPEAT('o', {big}))",
                f"INSERT INTO b VALUES (1, REPEAT('x', {big}), 'one')",
                "UPDATE b SET s = 'two' WHERE id = 1", "DELETE FROM b",
                "INSERT INTO b VALUES (2, 'small', 'three')",
            )  # fmt: skip
            evs = collect(src.stream(start), commits(4), timeout=60)
            head = src.head()
            evs += collect(
                src.stream(evs[-1].end_position),  # type: ignore[union-attr]
                lambda e: isinstance(e[-1], Heartbeat) and e[-1].position >= head,
            )
        finally:
            src.close()
    recs: list[ChangeRecord] = changes(evs)
    assert [r.op for r in recs] == [Op.INSERT, Op.UPDATE, Op.DELETE, Op.INSERT]
    assert recs[0].after is not None and recs[0].after[1] == b"x" * big
    assert recs[1].after is not None and recs[1].after[2] == "two"
    assert recs[3].after == (2, b"small", "three")
