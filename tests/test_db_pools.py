"""The services' database sessions ask for dead-peer detection (TCP keepalives, tcp_user_timeout): what libpq
connected with, on real PostgreSQL. That the kernel then notices a vanished host is the kernel's part."""

from __future__ import annotations

from app.db import DEAD_PEER_DETECTION, sync_pool
from app.settings import DatabaseSettings


def session_parameters(url: str) -> dict[str, str]:
    pool = sync_pool(DatabaseSettings(async_database_url=url))
    try:
        with pool.connection() as conn:
            return conn.info.get_parameters()  # what libpq connected with, past its defaults
    finally:
        pool.close()


def test_pooled_sessions_probe_for_a_dead_peer(pg):
    """Probes after 10 s of silence, 3 of them 5 s apart, and unacknowledged data given up after 25 s."""
    params = session_parameters(pg.url)
    assert {key: params.get(key) for key in DEAD_PEER_DETECTION} == {
        key: str(value) for key, value in DEAD_PEER_DETECTION.items()}


def test_a_url_that_sets_any_of_them_owns_dead_peer_detection(pg):
    url = f"{pg.url}{'&' if '?' in pg.url else '?'}keepalives=0"
    params = session_parameters(url)
    assert params["keepalives"] == "0"
    assert not {"keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout"} & params.keys()
    url = f"{pg.url}{'&' if '?' in pg.url else '?'}keepalives_idle=3"
    assert session_parameters(url)["keepalives_idle"] == "3"
