"""How long a silent PostgreSQL peer is waited for, and the libpq settings derived from it."""

from __future__ import annotations

from cdc_sync.sources.postgres.liveness import DEAD_PEER_SECONDS, dead_peer_seconds, network_params


def test_the_dsn_tcp_user_timeout_sets_the_dead_peer_time() -> None:
    assert dead_peer_seconds("postgresql://u@h/db") == DEAD_PEER_SECONDS
    assert dead_peer_seconds("postgresql://u@h/db?tcp_user_timeout=5000") == 5.0
    assert dead_peer_seconds("postgresql://u@h/db?tcp_user_timeout=nonsense") == DEAD_PEER_SECONDS


def test_keepalives_fit_in_the_dead_peer_time_and_the_dsn_wins() -> None:
    p = network_params("postgresql://u@h/db?tcp_user_timeout=6000")
    idle, every, count = p["keepalives_idle"], p["keepalives_interval"], p["keepalives_count"]
    assert p["keepalives"] == 1 and idle + every * count <= 6 and p["connect_timeout"] == 6
    given = network_params("postgresql://u@h/db?keepalives_idle=99&connect_timeout=3")
    assert "keepalives_idle" not in given and "connect_timeout" not in given
