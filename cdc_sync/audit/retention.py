"""Audit retention: delete a pipeline's audit rows older than N days, in small batches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from cdc_sync.state.tables import state_tables

BATCH_ROWS = 5_000


def purge_batch(
    conn: sa.Connection, pipeline: str, older_than: datetime, schema: str | None = None
) -> int:
    """Delete at most ``BATCH_ROWS`` audit rows of ``pipeline`` applied before ``older_than``
    and commit: each batch holds its locks briefly, so the pipeline's own inserts never wait
    long. Returns the rows deleted (0: nothing left)."""
    t = state_tables(schema).audit
    old = sa.and_(t.c.pipeline == pipeline, t.c.applied_at < older_than)
    if conn.dialect.name in ("mysql", "mariadb"):
        # MySQL cannot LIMIT a subquery inside IN, but DELETE … ORDER BY … LIMIT works.
        stmt = sa.text(
            f"DELETE FROM {_qualified(t)} WHERE pipeline = :p AND applied_at < :cutoff "
            f"ORDER BY id LIMIT {BATCH_ROWS}"
        ).bindparams(p=pipeline, cutoff=older_than.astimezone(UTC).replace(tzinfo=None))
        done = conn.execute(stmt)
    else:
        ids = sa.select(t.c.id).where(old).order_by(t.c.id).limit(BATCH_ROWS)
        done = conn.execute(sa.delete(t).where(t.c.id.in_(ids.scalar_subquery())))
    conn.commit()
    return int(done.rowcount or 0)


def purge(conn: sa.Connection, pipeline: str, days: int, schema: str | None = None) -> int:
    """All audit rows of ``pipeline`` older than ``days`` days, batch after batch."""
    cutoff = datetime.now(UTC) - timedelta(days=days)
    total = 0
    while n := purge_batch(conn, pipeline, cutoff, schema):
        total += n
    return total


def _qualified(t: sa.Table) -> str:
    return f"`{t.schema}`.`{t.name}`" if t.schema else f"`{t.name}`"
