"""The memory and redis ratelimit providers against the core's Protocol (and what the jobs guard calls); Redis outages."""

from __future__ import annotations

import asyncio
import os

import pytest

from plugboard import keys
from plugboard.errors import ProviderError
from plugboard.plugins.jobs.dashboard.guard import LoginThrottle, RevokedSessions
from plugboard.plugins.protection.providers.memory import MemoryRateLimitStore
from plugboard.plugins.protection.providers.redis import RedisRateLimitConfig, RedisRateLimitStore
from plugboard.providers.ratelimit import RateLimitStore
from plugboard.providers.redis import RedisConfig


def _core(url: str):
    import attrs

    from plugboard.core_config import CoreConfig

    return attrs.evolve(CoreConfig(), redis=RedisConfig(url=url))


@pytest.fixture(params=["memory", "redis"])
async def store(request):
    if request.param == "memory":
        s = MemoryRateLimitStore()
    else:
        url = request.getfixturevalue("redis_url")
        s = RedisRateLimitStore(RedisRateLimitConfig(), {keys.CORE_CONFIG: _core(url)})
    await s.start()
    yield s
    await s.close()


async def test_protocol(store):
    assert isinstance(store, RateLimitStore)
    await store.check()
    states = [await store.hit("ip:1", limit=3, window=10) for _ in range(4)]
    assert [s.allowed for s in states] == [True, True, True, False]
    assert [s.remaining for s in states] == [2, 1, 0, 0]
    # Retry-After: until one more hit fits, within two windows (the counter's previous bucket).
    assert 0 < states[-1].reset_after <= 20
    peeked = await store.peek("ip:1", limit=3, window=10)
    assert not peeked.allowed and peeked.remaining == 0
    # Another key is independent; reset forgets.
    assert (await store.hit("ip:2", limit=3, window=10)).remaining == 2
    await store.reset("ip:1")
    assert (await store.peek("ip:1", limit=3, window=10)).remaining == 3


async def test_cost_and_refused_hits_not_counted(store):
    s = await store.hit("budget", limit=100, window=60, cost=70)
    assert s.allowed and s.remaining == 30
    s = await store.hit("budget", limit=100, window=60, cost=40)
    assert not s.allowed and s.remaining == 30  # refused, not counted
    s = await store.hit("budget", limit=100, window=60, cost=30)
    assert s.allowed and s.remaining == 0
    # A cost over the whole limit is never admitted.
    assert not (await store.hit("other", limit=10, window=60, cost=11)).allowed
    assert (await store.peek("other", limit=10, window=60)).remaining == 10


async def test_incr_fixed_window(store):
    assert await store.incr("n", 0, expiry=1) == 0  # a read creates nothing
    assert await store.incr("n", 1, expiry=1) == 1
    assert await store.incr("n", 2, expiry=1) == 3
    await asyncio.sleep(2.1)
    assert await store.incr("n", 1, expiry=1) == 1


async def test_window_slides(store):
    assert (await store.hit("w", limit=1, window=1)).allowed
    assert not (await store.hit("w", limit=1, window=1)).allowed
    await asyncio.sleep(1.1)
    assert (await store.hit("w", limit=1, window=1)).allowed


async def test_two_redis_clients_share_counts_atomically(redis_url):
    a = RedisRateLimitStore(RedisRateLimitConfig(), {keys.CORE_CONFIG: _core(redis_url)})
    b = RedisRateLimitStore(RedisRateLimitConfig(), {keys.CORE_CONFIG: _core(redis_url)})
    await a.start()
    await b.start()
    try:
        results = await asyncio.gather(*[(a if i % 2 else b).hit("shared", limit=50, window=60) for i in range(80)])
        assert sum(r.allowed for r in results) == 50
    finally:
        await a.close()
        await b.close()


async def test_redis_counts_on_after_a_script_flush(redis_url):
    import redis.asyncio

    s = RedisRateLimitStore(RedisRateLimitConfig(), {keys.CORE_CONFIG: _core(redis_url)})
    await s.start()
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        await s.reset("flushed")
        assert (await s.hit("flushed", limit=3, window=60)).remaining == 2
        await client.script_flush()  # as after a Redis restart: the script is loaded again
        assert (await s.hit("flushed", limit=3, window=60)).remaining == 1
        assert (await s.peek("flushed", limit=3, window=60)).remaining == 1
    finally:
        await client.aclose()
        await s.close()


async def test_redis_unreachable_raises_provider_error():
    s = RedisRateLimitStore(RedisRateLimitConfig(timeout=0.2), {keys.CORE_CONFIG: _core("redis://127.0.0.1:1/0")})
    await s.start()
    try:
        with pytest.raises(ProviderError):
            await s.hit("k", limit=1, window=1)
        with pytest.raises(ProviderError):
            await s.check()
    finally:
        await s.close()


async def test_redis_without_url_fails_start():
    s = RedisRateLimitStore(RedisRateLimitConfig(), {keys.CORE_CONFIG: _core(None)})
    with pytest.raises(ProviderError, match="redis.url"):
        await s.start()


async def test_jobs_login_guard_runs_on_the_store(store, monkeypatch):
    """What plugins/jobs/dashboard/guard.py calls: incr(…, 0), peek, reset, hit."""
    import plugboard.plugins.jobs.dashboard.guard as guard

    monkeypatch.setattr(guard, "ratelimit_store", lambda app: store)
    throttle = LoginThrottle()
    # Its own address: the suite's Redis is shared, and keys outlive a test.
    address = f"203.0.113.7-{os.urandom(4).hex()}"
    for _ in range(guard.FREE_ATTEMPTS):
        await throttle.failed(None, address)
    wait = await throttle.failed(None, address)
    assert wait >= 1
    attempt = await throttle.check(None, address)
    assert attempt.failures == guard.FREE_ATTEMPTS + 1 and attempt.wait > 0
    await throttle.succeeded(None, address)
    assert (await throttle.check(None, address)).failures == 0

    revoked = RevokedSessions(max_age=60)
    assert not await revoked.is_revoked(None, "nonce")
    await revoked.revoke(None, "nonce", until=revoked._clock() + 30)
    fresh = RevokedSessions(max_age=60)  # another instance: only the store knows
    assert await fresh.is_revoked(None, "nonce")
