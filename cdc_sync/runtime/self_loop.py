"""Refuse a pipeline that would write into the tables it reads (a DSN pasted twice)."""

from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa

from cdc_sync.errors import PermanentError
from cdc_sync.records import TableId


class SelfLoopError(PermanentError):
    """The pipeline would write into tables it reads."""


def target_instance(conn: sa.Connection) -> str | None:
    """The target's server (and database) in the source's terms; None when this user may
    not ask (the check is then skipped: it only guards against a mistake)."""
    if conn.dialect.name == "postgresql":
        from cdc_sync.sources.postgres.health import INSTANCE_SQL  # noqa: PLC0415
    else:
        from cdc_sync.sources.mysql.health import INSTANCE_SQL  # noqa: PLC0415
    try:
        with conn.begin_nested():
            value = conn.exec_driver_sql(INSTANCE_SQL).scalar()
    except sa.exc.DBAPIError:
        return None
    return None if value is None else str(value)


def check_not_itself(source: str, conn: sa.Connection, targets: Mapping[TableId, TableId]) -> None:
    """Source and target the same server and database, and a target table among the
    tables read: every applied change would be captured again and applied again, for ever
    (thousands of audited updates a second, WAL / binlog and audit growing without end).
    ``source``: ``Source.instance()``, the same text for the source's server and database."""
    here = target_instance(conn)
    if here is None or here != source:
        return
    same = sorted(str(t) for t in targets.values() if t in targets)
    if same:
        raise SelfLoopError(
            f"the target is the source database itself ({here.split(':', 1)[0]}), and the "
            f"pipeline would write into the table(s) it reads: {', '.join(same)}; every "
            "change would be applied and captured again for ever. Point the target DSN at "
            "another database (or map these tables to other target tables)"
        )
