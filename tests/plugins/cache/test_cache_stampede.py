"""Stampede protection across instances: one computation for N concurrent identical misses on two servers sharing Redis."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio

from plugboard import keys
from plugboard.plugins.cache.providers.redis import RedisCache, RedisCacheConfig
from plugboard.plugins.cache.stampede import CacheLock
from plugboard.testing import clean_env

PLUGINS = Path(__file__).resolve().parent / "plugins"


async def _redis_cache(url: str, **options) -> tuple[RedisCache, redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(url)
    cache = RedisCache(RedisCacheConfig(**options), app={keys.REDIS: client})
    await cache.start()
    return cache, client


async def test_redis_lock_one_holder_waiters_get_the_entry(redis_url):
    a, client = await _redis_cache(redis_url)
    b, _ = await _redis_cache(redis_url)
    try:
        assert isinstance(a, CacheLock)
        assert await a.acquire("k", ttl=5) is True
        assert await b.acquire("k", ttl=5) is False
        waiter = asyncio.create_task(b.wait("k", timeout=5))
        await asyncio.sleep(0.05)
        await a.set("k", b"value", ttl=30)
        await a.release("k")
        assert await waiter == b"value"
        assert await client.exists("plugboard:cache:lock:k") == 0
    finally:
        await client.aclose()


async def test_redis_lock_released_without_entry_or_expired_or_timeout(redis_url):
    a, client = await _redis_cache(redis_url)
    b, _ = await _redis_cache(redis_url)
    try:
        # The holder stored nothing (errors, uncacheable): waiters compute at once.
        assert await a.acquire("k", ttl=5)
        waiter = asyncio.create_task(b.wait("k", timeout=5))
        await asyncio.sleep(0.05)
        await a.release("k")
        started = time.monotonic()
        assert await waiter is None and time.monotonic() - started < 0.2
        # A holder that died: its lock expires with its ttl.
        assert await a.acquire("gone", ttl=0.2)
        assert await b.acquire("gone", ttl=5) is False
        await asyncio.sleep(0.3)
        assert await b.acquire("gone", ttl=5) is True
        # A holder that takes too long: the wait is bounded.
        assert await a.acquire("slow", ttl=30)
        started = time.monotonic()
        assert await b.wait("slow", timeout=0.3) is None
        assert 0.25 < time.monotonic() - started < 1.0
        # Only the holder's token releases the lock.
        await b.release("slow")
        assert await client.exists("plugboard:cache:lock:slow") == 1
    finally:
        await client.aclose()


async def test_redis_lock_when_redis_is_down_says_compute():
    cache, client = await _redis_cache("redis://127.0.0.1:9/0", timeout=0.1)
    try:
        started = time.monotonic()
        assert await cache.acquire("k", ttl=5) is None
        assert await cache.wait("k", timeout=5) is None
        await cache.release("k")
        assert time.monotonic() - started < 1.0
    finally:
        await client.aclose()


@pytest.fixture
def pair(plugboard_serve, redis_url, tmp_path):
    """Instances A and B: the cache on Redis (pubsub too), the slow test plugin logging to one file."""
    log = tmp_path / "computations.log"
    log.touch()
    settings = {
        "plugins": ["cache", "pb_cache_slow"],
        "redis": {"url": redis_url},
        "services": {"cache": {"provider": "redis"}, "pubsub": {"provider": "redis"}},
        "cache": {"redis": {"enabled": True}},
    }
    env = clean_env({"PB_CACHE_SLOW_LOG": str(log), "PB_CACHE_SLOW_DELAY": "0.5"})
    a = plugboard_serve(settings, pythonpath=[PLUGINS], env=env)
    b = plugboard_serve(a.root, pythonpath=[PLUGINS], env=env)
    return a, b, log


async def _ask(session: aiohttp.ClientSession, url: str, query: str) -> tuple[dict, str | None]:
    async with session.post(url + "/graphql", json={"query": query}) as resp:
        assert resp.status == 200
        return await resp.json(content_type=None), resp.headers.get("X-Cache")


async def test_one_computation_for_concurrent_misses_on_two_instances(pair):
    a, b, log = pair
    query = "{ slowAnswer(n: 21) }"
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        results = await asyncio.gather(*(_ask(session, (a.url, b.url)[i % 2], query) for i in range(12)))
        elapsed = time.monotonic() - started
    assert [body for body, _ in results] == [{"data": {"slowAnswer": 42}}] * 12
    computed_by = log.read_text().split()
    assert len(computed_by) == 1, computed_by
    assert sorted(x for _, x in results) == ["HIT"] * 11 + ["MISS"]
    assert elapsed < 3  # the waiters were woken by the entry, not by the 10 s bound


async def test_waiters_compute_themselves_when_the_holder_stores_nothing(pair):
    a, b, log = pair
    query = "{ slowFailing }"
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        results = await asyncio.gather(*(_ask(session, (a.url, b.url)[i % 2], query) for i in range(4)))
        elapsed = time.monotonic() - started
    assert all(body["errors"][0]["extensions"]["code"] == "NOPE" for body, _ in results)
    # The first on each instance computed; the other instance's waiter went on
    # as soon as the lock was gone (errors are never stored).
    assert 2 <= len(log.read_text().split()) <= 4
    assert elapsed < 3
