"""Cron schedules: matching ticks, the per-tick lock, start-up checks, two real schedulers."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter

import pytest

from jobs_testkit import Proc, write_project
from plugboard.errors import PlugboardError
from plugboard.plugins.jobs.keys import JOBS
from plugboard.plugins.jobs.runtime import make_scheduler
from plugboard.plugins.jobs.scheduler import MemoryTickLock, RedisTickLock, Schedule, Scheduler, clock_ticks, cron_problem

UTC = dt.timezone.utc


def at(hour: int, minute: int) -> dt.datetime:
    return dt.datetime(2024, 5, 6, hour, minute, tzinfo=UTC)  # a Monday


async def test_a_tick_fires_the_matching_schedules_once():
    fired = []

    async def enqueue(task, args):
        fired.append((task, args))
        return task

    scheduler = Scheduler(
        [Schedule("every", "* * * * *"), Schedule("three", "0 3 * * *", {"x": 1}), Schedule("monday", "*/15 * * * mon")],
        enqueue,
        MemoryTickLock(),
    )
    assert await scheduler.fire(at(3, 0)) == ["every", "three", "monday"]
    assert await scheduler.fire(at(3, 0)) == []  # the same tick again: locked
    assert await scheduler.fire(at(3, 1)) == ["every"]
    assert fired[1] == ("three", {"x": 1})


async def test_the_redis_lock_lets_one_of_two_schedulers_fire(redis_url):
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_url)
    fired = []

    async def enqueue(task, args):
        fired.append(task)

    a = Scheduler([Schedule("every", "* * * * *")], enqueue, RedisTickLock(client, "t"))
    b = Scheduler([Schedule("every", "* * * * *")], enqueue, RedisTickLock(client, "t"))
    await asyncio.gather(a.fire(at(1, 0)), b.fire(at(1, 0)))
    await asyncio.gather(a.fire(at(1, 1)), b.fire(at(1, 1)))
    assert fired == ["every", "every"]
    await client.aclose()


async def test_clock_ticks_land_on_period_boundaries():
    ticks = clock_ticks(0.05)
    first = await anext(ticks)
    second = await anext(ticks)
    assert (second - first).total_seconds() == pytest.approx(0.05)
    assert first.timestamp() % 0.05 == pytest.approx(0, abs=1e-6) or first.timestamp() % 0.05 == pytest.approx(0.05, abs=1e-6)


def test_cron_expressions_are_checked():
    assert cron_problem("0 3 * * *") is None and cron_problem("*/5 1-3 * jan mon-fri") is None
    assert "five fields" in cron_problem("@daily")
    assert "out of range" in cron_problem("0 24 * * *")
    assert "not a cron field" in cron_problem("0 3 * * x/y")


async def test_schedules_run_inside_the_server_through_the_jobs_api(make_jobs_app, start_app):
    app = await start_app(make_jobs_app({"jobs": {"schedules": [{"task": "add", "cron": "* * * * *", "args": {"a": 1}}]}}))
    scheduler = make_scheduler(app, app[__import__("plugboard").keys.PLUGIN_CONFIGS]["jobs"], app[JOBS])
    [job] = await scheduler.fire(dt.datetime.now(UTC))
    assert (await app[JOBS].wait(job.id)).result == 2


def test_unknown_tasks_in_schedules_fail_start_up(make_jobs_app):
    app = make_jobs_app({"jobs": {"schedules": [{"task": "nope", "cron": "* * * * *"}]}})

    async def start():
        from aiohttp import web

        runner = web.AppRunner(app, handle_signals=False)
        try:
            await runner.setup()
        finally:
            await runner.cleanup()

    with pytest.raises(PlugboardError, match=r"jobs.schedules\[0\]: unknown task 'nope'"):
        asyncio.run(start())


async def test_two_scheduler_processes_fire_each_tick_once(tmp_path, redis_url, make_jobs_app, start_app):
    settings = {"redis": {"url": redis_url}, "jobs": {"broker": "redis", "schedules": [{"task": "noop", "cron": "* * * * *"}]}}
    project = write_project(tmp_path / "proj", settings)
    client = await start_app(make_jobs_app(settings))
    jobs = client[JOBS]
    # From before the first one starts: it ticks while the second gets ready.
    started = time.time()
    with Proc.scheduler(project, "--tick-seconds", "0.5") as a, Proc.scheduler(project, "--tick-seconds", "0.5") as b:
        await asyncio.to_thread(a.wait_ready)
        await asyncio.to_thread(b.wait_ready)
        assert "plugboard scheduler: 1 schedules" in a.output()
        await asyncio.sleep(3)
        assert a.stop() == 0 and b.stop() == 0
        stopped = time.time()
    page = await jobs.list(type="noop", first=100)
    ticks = Counter(int(j.created_at * 2) for j in page.jobs)  # half-second ticks
    assert ticks and max(ticks.values()) == 1, ticks
    # At least one was running for 6 ticks or more: each tick fired exactly once, not twice.
    assert 4 <= page.total_count <= (stopped - started) * 2 + 1
