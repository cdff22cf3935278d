"""The Redis command batcher: shared round trips, raw replies, errors per command, the lean packer."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio
import redis.exceptions

from plugboard.providers.batching import Batcher, pack


@pytest.fixture
async def client(redis_url):
    c = redis.asyncio.Redis.from_url(redis_url)
    yield c
    await c.aclose()


async def test_concurrent_calls_share_a_batch_and_get_their_own_replies(client):
    batcher = Batcher(client)
    try:
        replies = await asyncio.gather(
            batcher.call("SET", "k", "v"), batcher.call("INCR", "n"), batcher.call("GET", "k"), batcher.call("INCR", "n")
        )
        assert replies == [True, 1, b"v", 2] or replies == [b"OK", 1, b"v", 2]
        # An error reply fails its own call only.
        ok, bad = await asyncio.gather(batcher.call("INCR", "n"), batcher.call("INCR", "k"), return_exceptions=True)
        assert ok == 3 and isinstance(bad, redis.exceptions.ResponseError)
        with pytest.raises(redis.exceptions.NoScriptError):
            await batcher.call("EVALSHA", "0" * 40, 0)
    finally:
        await batcher.aclose()
    # Closed, then used again: it reconnects.
    assert await batcher.call("GET", "k") == b"v"
    await batcher.aclose()


async def test_a_dropped_connection_is_retried_with_the_client_policy(redis_url, client):
    from plugboard.providers.redis import reconnecting

    retrying = redis.asyncio.Redis.from_url(redis_url, retry=reconnecting())
    batcher = Batcher(retrying)
    try:
        assert await batcher.call("PING") in (True, b"PONG")
        # The batcher's connection goes stale (as after a Redis restart).
        await client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        assert await batcher.call("SET", "k", "again") in (True, b"OK")
        assert await client.get("k") == b"again"
    finally:
        await batcher.aclose()
        await retrying.aclose()


def test_pack_matches_redis_py_and_declines_what_it_does_not_encode():
    conn = redis.asyncio.Connection()
    commands = [("EVALSHA", "abc", 1, "k", "x", b"\x00\xff", 3.5, "é", -7), ("PUBLISH", "t", '{"a":1}'), ("XACK", "s", "g", b"1-0")]
    assert pack(commands) == b"".join(conn.pack_commands(commands))
    assert pack([("SCRIPT LOAD", "return 1")]) is None  # redis-py splits two-word names
    assert pack([("SET", "k", True)]) is None
    assert pack([("SET", "k", None)]) is None
    assert pack([("SET", "k", memoryview(b"v"))]) is None
