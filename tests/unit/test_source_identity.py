"""Source identity comparison and retention warnings: pure functions, no server."""

from __future__ import annotations

import pytest

from cdc_sync.errors import PermanentError
from cdc_sync.runtime.source_identity import check_source_identity
from cdc_sync.sources.base import SourceHealth
from cdc_sync.sources.health import retention_warnings
from cdc_sync.sources.mysql.health import retention_seconds

MB = 1024 * 1024


def test_same_or_unknown_identity_passes() -> None:
    check_source_identity(None, "postgres:7711428507020261926")
    check_source_identity("postgres:1", "postgres:1")


def test_changed_identity_is_refused_with_the_fix() -> None:
    with pytest.raises(PermanentError) as exc:
        check_source_identity("postgres:1", "postgres:2")
    msg = str(exc.value)
    assert "postgres:1" in msg and "postgres:2" in msg
    assert "cdc-sync offsets reset" in msg and "snapshot: initial" in msg


def test_changed_flavour_is_refused() -> None:
    with pytest.raises(PermanentError):
        check_source_identity("mysql:3e11fa47-71ca-11e1-9e33-c80aa9429562", "mariadb:server_id=1")


def test_slot_within_half_its_limit_is_quiet() -> None:
    h = SourceHealth("postgres", "reserved", 10 * MB, 100 * MB, 90 * MB)
    assert retention_warnings(h, 5.0) == []


def test_unlimited_slot_never_warns_on_size() -> None:
    h = SourceHealth("postgres", "reserved", 50_000 * MB, None, None)
    assert retention_warnings(h, None) == []


def test_slot_past_half_its_limit_warns() -> None:
    h = SourceHealth("postgres", "extended", 70 * MB, 100 * MB, 30 * MB)
    (w,) = retention_warnings(h, 1.0)
    assert "70 MB" in w and "100 MB" in w and "30 MB to go" in w


def test_source_warnings_come_first() -> None:
    h = SourceHealth("postgres", "lost", None, 100 * MB, None, warnings=("slot lost",))
    assert retention_warnings(h, 1.0) == ["slot lost"]


def test_binlog_lag_against_expiry() -> None:
    h = SourceHealth("mysql", binlog_oldest_file="b.000001", binlog_retention_seconds=3600)
    assert retention_warnings(h, 60) == []
    assert retention_warnings(h, None) == []
    (w,) = retention_warnings(h, 2000)
    assert "2000 s" in w and "3600 s" in w


def test_binlogs_that_never_expire_never_warn() -> None:
    h = SourceHealth("mysql", binlog_oldest_file="b.000001", binlog_retention_seconds=None)
    assert retention_warnings(h, 10**7) == []


def test_lag_beyond_the_oldest_binlog() -> None:
    h = SourceHealth(
        "mysql", binlog_oldest_file="b.000009", binlog_retention_seconds=10**6,
        oldest_binlog_age_seconds=100,
    )  # fmt: skip
    (w,) = retention_warnings(h, 500)
    assert "b.000009" in w


@pytest.mark.parametrize(
    ("vars_", "want"),
    [
        ({"binlog_expire_logs_seconds": "0", "expire_logs_days": "0.000000"}, None),
        ({"binlog_expire_logs_seconds": "2592000", "expire_logs_days": "0"}, 2592000.0),
        ({"binlog_expire_logs_seconds": "0", "expire_logs_days": "1.500000"}, 129600.0),
        ({}, None),
    ],
)
def test_binlog_retention_setting(vars_: dict[str, str], want: float | None) -> None:
    assert retention_seconds(vars_) == want
