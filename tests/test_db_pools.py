"""The services' database sessions notice a vanished peer (TCP keepalives, tcp_user_timeout), on real PostgreSQL."""

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
    """A statement waiting on a database host that vanished without a FIN fails within ~25 s, not 2 hours."""
    params = session_parameters(pg.url)
    assert {key: params.get(key) for key in DEAD_PEER_DETECTION} == {
        key: str(value) for key, value in DEAD_PEER_DETECTION.items()}


def test_the_urls_own_keepalive_settings_win(pg):
    url = f"{pg.url}{'&' if '?' in pg.url else '?'}keepalives_idle=3&tcp_user_timeout=9000"
    params = session_parameters(url)
    assert (params["keepalives_idle"], params["tcp_user_timeout"]) == ("3", "9000")
    assert params["keepalives_count"] == str(DEAD_PEER_DETECTION["keepalives_count"])
