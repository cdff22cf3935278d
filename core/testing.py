"""Plugboard's pytest plugin (the ``plugboard`` pytest11 entry point).

Installed with Plugboard, so third-party plugin tests get the same fixtures as
the core's own. Fixtures are grouped in blocks, one per concern; nothing runs
at import time, and servers start only when a test asks for them.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from plugboard.testing_servers import PostgresServer, RedisServer


# ---------------------------------------------------------------------------
# Real servers: Redis and PostgreSQL on free loopback ports.
#
# One server per test session (start-up costs ~0.1 s for Redis, ~1 s for
# PostgreSQL); tests isolate themselves by flushing (``redis_url``) or by
# creating their own database (``postgres_server.create_database(name)``).
# A missing binary fails the test with the apt-get command: never a skip.
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A ``redis-server`` for the whole session (no persistence)."""
    server = RedisServer()
    try:
        # Inside the try: a failed start still deletes what it created.
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster for the whole session; ``.url`` is its ``plugboard`` database."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The session server's URL, with every database emptied first."""
    # Imported here so that merely loading the plugin costs nothing.
    import redis

    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    yield redis_server.url


# --- end of the real-servers block -----------------------------------------
