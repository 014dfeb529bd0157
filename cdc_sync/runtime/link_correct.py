"""Corrections: a conflict resolved on one side of a link can leave the other side holding
a value that lost (a column it does not own, a merged row); the winning values are written
back to that side, so that both converge."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from cdc_sync.audit.keys import json_safe
from cdc_sync.records import TableId
from cdc_sync.state.tables import state_tables


@dataclass(frozen=True)
class Correction:
    table: TableId  # the other side's table
    pk: dict[str, object]  # by the other side's column names
    values: dict[str, object]  # column: the winning value
    expected: dict[str, object]  # column: the value that lost (still there, or skip)


class Corrections:
    """Pending corrections live in this side's ``cdc_sync_corrections``, written in the same
    transaction as the resolution; after that commit they are applied to the other side
    (only where it still holds the losing values: a newer change there travels back and is
    resolved in turn) and deleted. A crash in between applies them at the next start."""

    def __init__(self, pipeline: str, schema: str | None, other: sa.Engine, log: Any) -> None:
        self.pipeline, self.other, self.log = pipeline, other, log
        self.table = state_tables(schema).corrections
        self.pending = True  # check once at start: a crash may have left some

    def write(self, conn: sa.Connection, rows: Sequence[Correction]) -> None:
        if not rows:
            return
        now = datetime.now(UTC)
        conn.execute(
            self.table.insert(),
            [
                {"pipeline": self.pipeline, "table_name": str(c.table),
                 "pk": _safe(c.pk), "set_values": _safe(c.values),
                 "expected": _safe(c.expected), "created_at": now}
                for c in rows
            ],
        )  # fmt: skip
        self.pending = True

    def apply(self, conn: sa.Connection) -> None:
        """After this side's commit: write the pending ones to the other side."""
        if not self.pending:
            return
        t = self.table
        rows = conn.execute(
            sa.select(t.c.id, t.c.table_name, t.c.pk, t.c.set_values, t.c.expected)
            .where(t.c.pipeline == self.pipeline)
            .order_by(t.c.id)
            .limit(1000)
        ).all()
        conn.commit()
        if not rows:
            self.pending = False
            return
        try:
            with self.other.begin() as other:
                mysql = other.dialect.name in ("mysql", "mariadb")
                # Short lock waits: the other direction may hold these rows while it waits
                # for this pipeline; the corrections stay pending and go after a later commit.
                other.exec_driver_sql(
                    "SET SESSION innodb_lock_wait_timeout = 2"
                    if mysql
                    else "SET LOCAL lock_timeout = '2s'"
                )
                for _, table, pk, values, expected in rows:
                    _correct(other, TableId.parse(str(table)), pk, values, expected, mysql)
        except sa.exc.OperationalError as e:
            if not _lock_trouble(e):
                raise
            self.log.info("conflict_corrections_postponed", count=len(rows))
            return
        conn.execute(t.delete().where(t.c.id.in_([r[0] for r in rows])))
        conn.commit()
        self.log.info("conflict_corrections_applied", count=len(rows))
        self.pending = len(rows) == 1000

    def close(self) -> None:
        self.other.dispose()


def _safe(d: dict[str, object]) -> dict[str, object]:
    return {k: json_safe(v) for k, v in d.items()}


def _correct(  # noqa: PLR0917
    conn: sa.Connection,
    table: TableId,
    pk: dict[str, object],
    values: dict[str, object],
    expected: dict[str, object],
    mysql: bool,
) -> None:
    q = (lambda n: f"`{n}`") if mysql else (lambda n: '"' + n.replace('"', '""') + '"')
    same = "<=>" if mysql else "IS NOT DISTINCT FROM"
    params: dict[str, object] = {}
    sets, where = [], []
    for i, (c, v) in enumerate(values.items()):
        sets.append(f"{q(c)} = :s{i}")
        params[f"s{i}"] = v
    for i, (c, v) in enumerate(pk.items()):
        where.append(f"{q(c)} = :k{i}")
        params[f"k{i}"] = v
    for i, (c, v) in enumerate(expected.items()):
        where.append(f"{q(c)} {same} :e{i}")
        params[f"e{i}"] = v
    conn.execute(
        sa.text(
            f"UPDATE {q(table.schema)}.{q(table.name)} SET {', '.join(sets)} "
            f"WHERE {' AND '.join(where)}"
        ),
        params,
    )


def _lock_trouble(e: sa.exc.OperationalError) -> bool:
    """Lock wait timeout or deadlock (MySQL 1205 / 1213, PostgreSQL 55P03 / 40P01)."""
    orig = e.orig
    code = getattr(orig, "sqlstate", None)
    if code in ("55P03", "40P01"):
        return True
    args: tuple[object, ...] = tuple(getattr(orig, "args", ()))
    return len(args) > 0 and args[0] in (1205, 1213)
