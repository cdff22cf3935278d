"""The memory and redis providers against the Protocol, bounds, TTL, tags; Redis outages."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio

from cache_testkit import make_app, post
from plugboard import keys
from plugboard.plugins.cache import metrics
from plugboard.plugins.cache.providers.memory import MemoryCache, MemoryCacheConfig
from plugboard.plugins.cache.providers.redis import LocalLayer, RedisCache, RedisCacheConfig
from plugboard.providers.cache import Cache
from plugboard.testing_servers import RedisServer, free_port


async def test_memory_protocol_ttl_tags():
    cache = MemoryCache(MemoryCacheConfig(ttl=0.2))
    assert isinstance(cache, Cache)
    await cache.set("a", b"1", tags=["Book:1", "Book"])
    await cache.set("b", b"2", ttl=10, tags=["Book:2", "Book"])
    await cache.set("c", b"3", ttl=10, tags=["Author:1"])
    assert await cache.get("a") == b"1"
    assert await cache.invalidate(["Book:2"]) == 1
    assert await cache.get("b") is None
    await asyncio.sleep(0.25)
    assert await cache.get("a") is None  # default TTL
    assert await cache.get("c") == b"3"
    assert await cache.delete("c") and not await cache.delete("c")
    assert cache.stats.invalidations == 1


async def test_memory_entries_with_equal_tags_share_one_index_group():
    cache = MemoryCache(MemoryCacheConfig(max_entries=3))
    for key in "abc":
        await cache.set(key, b"v", tags=["Book", "Book:1"])  # one group
    await cache.set("d", b"v", tags={"Book", "Book:2"})  # evicts a; another group
    lru = cache._lru
    assert len(lru._groups) == 2 and lru._tags["Book"] == set(lru._groups)
    assert await cache.invalidate(["Book:1"]) == 2  # b and c
    assert [await cache.get(k) for k in "abcd"] == [None, None, None, b"v"]
    await cache.set("d", b"w", tags=["Author:1"])  # re-tagged: its old group is gone
    assert await cache.invalidate(["Book"]) == 0 and await cache.get("d") == b"w"
    assert await cache.invalidate(["Author:1", "Author:1"]) == 1
    # Nothing left behind in the index.
    assert lru._groups == {} and lru._tags == {} and len(cache) == 0


async def test_memory_lru_bounded_by_entries_and_bytes():
    cache = MemoryCache(MemoryCacheConfig(max_entries=3, max_bytes=100, max_entry_size=60))
    for k in "abc":
        await cache.set(k, b"x" * 10)
    await cache.get("a")  # a is now the most recent
    await cache.set("d", b"x" * 10)
    assert await cache.get("b") is None and await cache.get("a") is not None
    await cache.set("e", b"y" * 60)
    await cache.set("f", b"z" * 40)
    assert cache.bytes <= 100 and len(cache) <= 3
    await cache.set("big", b"q" * 61)
    assert await cache.get("big") is None
    assert cache.stats.too_large == 1 and cache.stats.evictions >= 2


async def test_a_full_memory_store_admits_a_key_on_its_second_miss():
    cache = MemoryCache(MemoryCacheConfig(max_entries=3))
    for key in "abc":
        assert cache.admits(key)  # room: always
        await cache.set(key, b"v")
    assert not cache.admits("d") and cache.stats.not_admitted == 1
    assert not cache.admits("e")
    assert cache.admits("d")  # missed before: worth evicting for
    await cache.set("d", b"v")
    assert await cache.get("a") is None and len(cache) == 3
    # set() itself always stores (callers that ask first skip the work).
    await cache.set("f", b"v")
    assert await cache.get("f") == b"v" and cache.stats.not_admitted == 2


async def test_a_memory_store_is_full_when_an_average_entry_no_longer_fits_its_bytes():
    cache = MemoryCache(MemoryCacheConfig(max_entries=100, max_bytes=100, max_entry_size=60))
    await cache.set("a", b"x" * 30)
    await cache.set("b", b"x" * 30)
    assert cache.admits("c")  # 60 bytes + one more of 30 fit in 100
    await cache.set("c", b"x" * 30)
    assert not cache.admits("d")  # 90 + 30 would not
    assert cache.admits("d")


def test_the_doorkeeper_remembers_rarely_mistakes_a_key_and_forgets_after_its_capacity():
    from plugboard.plugins.cache.providers.memory import Doorkeeper

    keeper = Doorkeeper(10_000)
    for i in range(9_000):
        keeper.seen(f"k{i}")
    assert all(keeper.seen(f"k{i}") for i in range(9_000))
    assert sum(keeper.seen(f"new{i}") for i in range(900)) < 45  # about 2% taken for noted ones
    keeper = Doorkeeper(1)  # remembers 128 keys at least
    noted = i = 0
    while noted < 128:
        noted += not keeper.seen(f"k{i}")
        i += 1
    assert keeper.seen("k0")
    while keeper.seen(f"k{i}"):  # the next note empties it first
        i += 1
    assert not keeper.seen("k0")


async def _redis_cache(url: str, **options) -> tuple[RedisCache, redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(url)
    cache = RedisCache(RedisCacheConfig(**options), app={keys.REDIS: client})
    await cache.start()
    return cache, client


async def test_redis_protocol_ttl_tags(redis_url):
    cache, client = await _redis_cache(redis_url)
    try:
        assert isinstance(cache, Cache)
        await cache.set("a", b"1", ttl=0.3, tags=["Book:1", "Book"])
        await cache.set("b", b"2", ttl=30, tags=["Book:2", "Book"])
        assert await cache.get("a") == b"1"
        assert 0 < await client.pttl("plugboard:cache:a") <= 300
        assert await client.pttl("plugboard:cache:tag:Book") > 20_000  # the longest member's TTL
        assert await cache.invalidate(["Book"]) == 2
        assert await cache.get("b") is None
        assert not await client.exists("plugboard:cache:tag:Book")
        await cache.set("c", b"3", ttl=0.2)
        await asyncio.sleep(0.3)
        assert await cache.get("c") is None
        await cache.set("big", b"x" * 2_000_000)
        assert await cache.get("big") is None and cache.stats.too_large == 1
    finally:
        await client.aclose()


async def test_redis_local_layer(redis_url):
    cache, client = await _redis_cache(redis_url, local=LocalLayer(enabled=True, ttl=5))
    other, client2 = await _redis_cache(redis_url, local=LocalLayer(enabled=True, ttl=5))
    try:
        await cache.set("k", b"v", ttl=30, tags=["T:1"])
        assert await other.get("k") == b"v"  # from Redis, now in other's local layer
        await client.delete("plugboard:cache:k")
        assert await other.get("k") == b"v"  # served locally
        assert other.local_stats.hits == 1
        await other.drop_local(["T:1"])  # what a published invalidation does
        assert await other.get("k") is None
    finally:
        await client.aclose()
        await client2.aclose()


async def test_redis_down_is_a_fast_miss_and_resumes():
    server = RedisServer(port=free_port()).start()
    try:
        cache, client = await _redis_cache(server.url, retry_after=0.3)
        await cache.set("k", b"v", ttl=60)
        server.stop()
        started = time.monotonic()
        assert await cache.get("k") is None
        await cache.set("k2", b"v", ttl=60)
        assert await cache.get("k2") is None
        assert time.monotonic() - started < 1.0
        assert cache.stats.errors >= 1
        server.start()
        await asyncio.sleep(0.35)
        await cache.set("k3", b"back", ttl=60)
        assert await cache.get("k3") == b"back"
        await client.aclose()
    finally:
        server.stop()


async def test_app_served_uncached_while_redis_restarts(aiohttp_client, tmp_path, fixture_plugin):
    server = RedisServer(port=free_port()).start()
    try:
        app = make_app(
            tmp_path,
            {
                "redis": {"url": server.url},
                "services": {"cache": {"provider": "redis", "retry_after": "0.3s"}},
                "cache": {"redis": {"enabled": True}},
            },
            plugins=[fixture_plugin],
        )
        client = await aiohttp_client(app)
        q = "{ items { id name } }"
        await post(client, q)
        resp, _ = await post(client, q)
        assert resp.headers["X-Cache"] == "HIT"
        server.stop()
        for _ in range(5):
            started = time.monotonic()
            resp, body = await post(client, q)
            assert resp.status == 200 and body["data"]["items"][0]["id"] == "1"
            assert time.monotonic() - started < 1.0
        calls = fixture_plugin.calls["items"]
        assert calls >= 5
        server.start()  # empty: the data did not persist
        await asyncio.sleep(0.35)
        await post(client, q)
        await post(client, q)
        resp, _ = await post(client, q)
        assert resp.headers["X-Cache"] == "HIT"
        assert metrics(app)["redis"]["errors"] >= 1
        # An admin's invalidation reports the outage instead of pretending.
        server.stop()
        await asyncio.sleep(0.05)
        resp, body = await post(client, 'mutation { invalidateCache(tags: ["Item"]) }', Authorization="Bearer op")
        assert resp.status == 200
    finally:
        server.stop()


async def test_redis_concurrent_gets_share_one_round_trip(redis_url):
    cache, client = await _redis_cache(redis_url)
    try:
        for i in range(5):
            await cache.set(f"k{i}", f"v{i}".encode(), ttl=30)
        await client.config_resetstat()
        values = await asyncio.gather(*(cache.get(f"k{i}") for i in range(10)))
        assert values == [f"v{i}".encode() for i in range(5)] + [None] * 5
        stats = await client.info("commandstats")
        assert stats["cmdstat_mget"]["calls"] == 1 and "cmdstat_get" not in stats
    finally:
        await client.aclose()
