"""plugboard.cancelling: a cancellation that a task misses is repeated until it ends."""

from __future__ import annotations

import asyncio
import random

from plugboard.cancelling import cancel_until_done, keep_cancelling
from plugboard.providers.redis import RedisConfig, connect_redis


async def misses_one(log: list[str]) -> None:
    """Loses its first cancellation, as a redis-py write may on Python 3.11."""
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        log.append("missed")
    try:
        await asyncio.sleep(30)
    finally:
        log.append("ended")


async def ended_within(task: asyncio.Future, seconds: float) -> bool:
    done, _ = await asyncio.wait({task}, timeout=seconds)
    return bool(done)


async def test_a_missed_cancellation_is_repeated():
    log: list[str] = []
    task = asyncio.create_task(misses_one(log))
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_until_done([task]), 2)
    assert task.cancelled() and log == ["missed", "ended"]


async def test_keep_cancelling_does_not_wait_and_still_ends_the_task():
    log: list[str] = []
    task = asyncio.create_task(misses_one(log))
    await asyncio.sleep(0)
    keep_cancelling(task)
    assert not task.done()
    assert await ended_within(task, 2)
    assert task.cancelled() and log == ["missed", "ended"]
    keep_cancelling(task)  # a finished task: nothing to do


async def test_the_callers_cancellation_waits_for_the_clean_up():
    log: list[str] = []

    async def cleans_up() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            log.append("cleaning")
            # Clean-up that awaits: shielded from the repeated cancellations.
            await asyncio.shield(asyncio.sleep(0.05))
            log.append("clean")

    task = asyncio.create_task(cleans_up())
    await asyncio.sleep(0)
    caller = asyncio.create_task(cancel_until_done([task]))
    await asyncio.sleep(0.01)
    caller.cancel()
    assert await ended_within(caller, 2)
    assert caller.cancelled() and log == ["cleaning", "clean"]


async def test_waiting_only_and_errors_retrieved():
    async def fails() -> None:
        await asyncio.sleep(0.05)
        raise ValueError("the task's own error")

    task = asyncio.create_task(fails())
    await cancel_until_done([task], cancel=False)  # waited for, not cancelled, not raised
    assert isinstance(task.exception(), ValueError)
    await cancel_until_done([])  # nothing to do


async def test_a_task_making_redis_calls_between_waits_ends(redis_url):
    # A real redis-py client with its default socket timeout, and a task
    # shaped like a sweeper or a heartbeat: a command, then a short wait. On
    # Python 3.11 a single cancel()/await of it may wait forever. (A task
    # that does nothing but send commands loses most cancellations there and
    # may need many rounds.)
    client = await connect_redis(RedisConfig(url=redis_url))
    try:
        for _ in range(10):
            async def sweep_forever() -> None:
                while True:
                    await client.ping()
                    await asyncio.sleep(0.001)

            task = asyncio.create_task(sweep_forever())
            await asyncio.sleep(random.random() * 0.01)
            assert await ended_within(asyncio.ensure_future(cancel_until_done([task])), 10)
            assert task.done()
            assert await client.ping()  # the pool is still usable
    finally:
        await client.aclose()
