"""Audit retention: only this pipeline's rows older than the limit go, in batches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from cdc_sync.audit.retention import BATCH_ROWS, purge
from cdc_sync.config.models import MysqlTarget, PipelineConfig
from cdc_sync.runtime.wiring import _mysql_engine
from cdc_sync.state.migrate import upgrade
from cdc_sync.state.tables import state_tables

pytestmark = pytest.mark.integration


def _engine(dsn: str) -> sa.Engine:
    if dsn.startswith("mysql"):  # the daemon's own engine: UTC session, strict mode
        return _mysql_engine(MysqlTarget(type="mysql", dsn=SecretStr(dsn)), "test")
    return sa.create_engine(dsn.replace("postgresql://", "postgresql+psycopg://"))


@pytest.mark.parametrize("engine_kind", ["postgres", "mysql"])
def test_purge_keeps_recent_rows_and_other_pipelines(
    engine_kind: str, request: pytest.FixtureRequest
) -> None:
    dsn = request.getfixturevalue("target_dsn" if engine_kind == "postgres" else "my_target_dsn")
    eng = _engine(dsn)
    t = state_tables().audit
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=200), now - timedelta(days=10)

    def rows(pipeline: str, at: datetime, n: int) -> list[dict[str, object]]:
        return [
            {
                "pipeline": pipeline,
                "op": "insert",
                "outcome": "applied",
                "applied_at": at,
                "pk": f'{{"id":{i}}}',
            }
            for i in range(n)
        ]

    try:
        with eng.connect() as conn:
            upgrade(conn)
            conn.commit()
            conn.execute(sa.insert(t), rows("p", old, 2 * BATCH_ROWS + 7))
            conn.execute(sa.insert(t), rows("p", recent, 5))
            conn.execute(sa.insert(t), rows("other", old, 3))
            conn.commit()
            assert purge(conn, "p", 190) == 2 * BATCH_ROWS + 7
            left = conn.execute(
                sa.select(t.c.pipeline, sa.func.count())
                .group_by(t.c.pipeline)
                .order_by(t.c.pipeline)
            ).all()
            assert [tuple(r) for r in left] == [("other", 3), ("p", 5)]
            assert purge(conn, "p", 190) == 0
    finally:
        eng.dispose()


def test_audit_long_form_config() -> None:
    base = {"source": "s", "target": "t", "tables": {"public.a": {}}}
    pc = PipelineConfig.model_validate(
        {**base, "audit": {"level": "transaction", "retention_days": 190}}
    )
    assert pc.audit == "transaction" and pc.audit_retention_days == 190
    assert PipelineConfig.model_validate({**base, "audit": "row"}).audit_retention_days is None
    with pytest.raises(ValueError, match="unknown keys"):
        PipelineConfig.model_validate({**base, "audit": {"keep": 3}})
