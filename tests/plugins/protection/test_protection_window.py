"""The sliding-window counter, on both stores with a stepped clock: the same timeline gives the same answers."""

from __future__ import annotations

import pytest

from plugboard import keys
from plugboard.plugins.protection.providers.memory import MemoryRateLimitStore
from plugboard.plugins.protection.providers.redis import RedisRateLimitConfig, RedisRateLimitStore
from plugboard.plugins.protection.providers.window import Counter

#: A bucket boundary for 10 s and 60 s windows.
T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
async def timed(request):
    clock = Clock()
    if request.param == "memory":
        store = MemoryRateLimitStore(clock=clock)
    else:
        import attrs

        from plugboard.core_config import CoreConfig
        from plugboard.providers.redis import RedisConfig

        core = attrs.evolve(CoreConfig(), redis=RedisConfig(url=request.getfixturevalue("redis_url")))
        store = RedisRateLimitStore(RedisRateLimitConfig(), {keys.CORE_CONFIG: core}, clock=clock)
    await store.start()
    yield store, clock
    await store.close()


async def test_a_single_hit_is_forgotten_exactly_one_window_later(timed):
    # What the jobs login throttle relies on: hit(limit=1, window=wait), then wait seconds.
    store, clock = timed
    clock.now = T0 + 7
    assert (await store.hit("k", limit=1, window=10)).allowed
    clock.now = T0 + 16.5
    state = await store.peek("k", limit=1, window=10)
    assert not state.allowed and state.reset_after == pytest.approx(0.5, abs=0.002)
    clock.now = T0 + 17
    assert (await store.peek("k", limit=1, window=10)).allowed
    assert (await store.hit("k", limit=1, window=10)).allowed


async def test_the_previous_bucket_is_weighted_by_what_the_window_still_covers(timed):
    store, clock = timed
    clock.now = T0 + 59
    for _ in range(100):
        assert (await store.hit("ip", limit=100, window=60)).allowed
    refused = await store.hit("ip", limit=100, window=60)
    assert not refused.allowed and refused.remaining == 0
    # 31 s later, half of the previous bucket is still covered: 50 count, 50 fit.
    clock.now = T0 + 90
    states = [await store.hit("ip", limit=100, window=60) for _ in range(51)]
    assert [s.allowed for s in states] == [True] * 50 + [False]
    assert states[0].remaining == 49 and states[49].remaining == 0
    # Refused: one more fits once the weighted count is 99: 30 + 60 * (1 - 49/100) = 60.6 s into the bucket.
    assert states[-1].reset_after == pytest.approx(0.6, abs=0.002)
    # Every hit of the previous bucket has left one window after its last hit.
    clock.now = T0 + 119
    state = await store.peek("ip", limit=100, window=60)
    assert state.remaining == 50 and state.allowed


async def test_headers_t_is_until_every_counted_hit_has_left(timed):
    store, clock = timed
    clock.now = T0 + 3
    await store.hit("h", limit=5, window=10)
    clock.now = T0 + 4
    state = await store.hit("h", limit=5, window=10)
    assert state.remaining == 3 and state.reset_after == pytest.approx(10.0, abs=0.002)


async def test_cost_over_the_limit_is_refused_and_not_counted(timed):
    store, clock = timed
    assert not (await store.hit("c", limit=10, window=60, cost=11)).allowed
    assert (await store.hit("c", limit=10, window=60, cost=10)).allowed
    assert not (await store.hit("c", limit=10, window=60, cost=1)).allowed


async def test_two_windows_later_nothing_counts(timed):
    store, clock = timed
    clock.now = T0 + 1
    for _ in range(3):
        await store.hit("g", limit=3, window=10)
    clock.now = T0 + 25
    assert (await store.hit("g", limit=3, window=10)).remaining == 2


def test_counter_free_at_solves_the_count():
    c = Counter(60.0, bucket=int(T0 // 60))
    for _ in range(100):
        c.hit(100, 1, T0 + 59)
    c.roll(T0 + 90)
    assert c.free_at(80, T0 + 90) == T0 + 90  # 50 count already
    at = c.free_at(30, T0 + 90)
    assert at > T0 + 90 and c.count(at) == pytest.approx(30)


async def test_memory_sweeps_forgotten_counters():
    clock = Clock()
    store = MemoryRateLimitStore(clock=clock)
    for i in range(50):
        await store.hit(f"ip:{i}", limit=5, window=10)
    clock.now += 60
    await store.hit("ip:new", limit=5, window=10)
    assert set(store._windows) == {"ip:new"}
