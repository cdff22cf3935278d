"""The shared Redis client and the RedisServer test helper, against a real redis-server."""

from __future__ import annotations

import socket
import time

import pytest
import redis

from plugboard.errors import ProviderError
from plugboard.providers.redis import RedisConfig, close_redis, connect_redis, mask_url
from plugboard.testing_servers import RedisServer, free_port


async def test_no_url_means_no_client() -> None:
    assert await connect_redis(RedisConfig()) is None
    await close_redis(None)


async def test_connects_to_real_server(redis_url: str) -> None:
    client = await connect_redis(RedisConfig(url=redis_url))
    assert client is not None
    try:
        assert await client.ping() is True
        await client.set("k", "v")
        assert await client.get("k") == b"v"
    finally:
        await close_redis(client)


async def test_redis_url_fixture_flushes(redis_url: str) -> None:
    client = await connect_redis(RedisConfig(url=redis_url))
    try:
        # test_connects_to_real_server left "k" behind on the session server.
        assert await client.dbsize() == 0
    finally:
        await close_redis(client)


async def test_unreachable_fails_fast_with_masked_password() -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(ProviderError) as info:
        await connect_redis(RedisConfig(url=f"redis://:s3cret@127.0.0.1:{port}/0"))
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert message.startswith(f"redis: cannot reach redis://:***@127.0.0.1:{port}/0 (from redis.url): ")
    assert "s3cret" not in message


async def test_silent_server_times_out() -> None:
    # Accepts TCP connections (the kernel's backlog) but never answers PING.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ProviderError, match="timed out"):
            await connect_redis(RedisConfig(url=f"redis://127.0.0.1:{port}/0", connect_timeout=0.5))
        assert time.monotonic() - started < 3


async def test_invalid_url() -> None:
    with pytest.raises(ProviderError, match="invalid url"):
        await connect_redis(RedisConfig(url="http://:pw@example.com/"))


def test_mask_url() -> None:
    assert mask_url("redis://user:pw@h:1/2") == "redis://user:***@h:1/2"
    assert mask_url("redis://h:1/0") == "redis://h:1/0"
    assert mask_url("unix:///tmp/r.sock?db=1&password=pw") == "unix:///tmp/r.sock?db=1&password=***"


def test_restart_keeps_data_with_appendonly() -> None:
    with RedisServer(options={"appendonly": "yes"}) as server:
        port = server.port
        with redis.Redis.from_url(server.url) as client:
            client.set("survivor", "yes")
        server.restart()
        assert server.port == port
        with redis.Redis.from_url(server.url) as client:
            assert client.get("survivor") == b"yes"


def test_restart_without_persistence_loses_data() -> None:
    with RedisServer() as server:
        with redis.Redis.from_url(server.url) as client:
            client.set("gone", "1")
        server.restart()
        with redis.Redis.from_url(server.url) as client:
            assert client.get("gone") is None


def test_stop_reaps_process_and_removes_dir() -> None:
    server = RedisServer()
    server.start()
    proc, directory = server.process, server.dir
    assert proc is not None and directory is not None and directory.is_dir()
    server.stop()
    assert proc.returncode is not None
    assert not directory.exists()
    server.stop()  # twice is fine


def test_missing_binary_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(RuntimeError, match="apt-get install redis-server"):
        RedisServer(binary=str(tmp_path / "no-such-redis-server")).start()
