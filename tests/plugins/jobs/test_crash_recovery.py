"""Issue 9, finding 9: jobs lost or repeated on a crash, on a real Redis with
real ``plugboard worker`` processes.

- a job whose message a crash lost (the record written, the XADD not; the
  records store, live updates on, or ``retry``) is sent again by the
  workers' reconcile, once, even with two workers, and jobs merely waiting
  in the queue are not sent twice;
- a job that SIGKILLs its worker fails once its attempts are used instead of
  taking down every worker that claims it;
- ``catch_up: true`` schedules fire a tick missed while no scheduler ran, once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

import pytest
import redis.asyncio

import pb_jobs_tasks
import pb_reliability_tasks
from jobs_testkit import Proc, write_project
from pb_reliability_tasks import runs
from plugboard.plugins.jobs.keys import JOBS
from plugboard.plugins.jobs.model import Job, JobStatus
from plugboard.plugins.jobs.runtime import make_scheduler
from plugboard.plugins.jobs.scheduler import RedisLastTicks, RedisTickLock, Schedule, Scheduler
from plugboard.testing import eventually

PLUGINS = ["realtime", "jobs", "pb_jobs_tasks", "pb_reliability_tasks"]
TASK_PLUGINS = (pb_jobs_tasks, pb_reliability_tasks)
UTC = dt.timezone.utc


def settings(redis_url: str, data_dir: Path, plugins: list[str] = PLUGINS, **jobs) -> dict:
    """The redis broker, a silent delivery claimed after 2 s, a reconcile every 0.3 s with a 1 s grace."""
    return {
        "plugins": plugins,
        "redis": {"url": redis_url},
        "server": {"data_dir": str(data_dir)},
        "jobs": {
            "broker": "redis",
            "schedules": [],
            "retries": 2,
            "idle_timeout": "2s",
            "backoff": "50ms",
            "max_backoff": "200ms",
            "shutdown_grace": "5s",
            "reconcile_interval": "300ms",
            "reconcile_grace": "1s",
            **jobs,
        },
    }


@pytest.fixture
def files(tmp_path):
    return {name: str(tmp_path / name) for name in ("log", "started", "release")}


async def lost(jobs, type: str, args: dict, *, status: JobStatus = JobStatus.PENDING, run_at: float | None = None) -> Job:
    """What a process that died between the record write and the XADD leaves: a record, no message."""
    now = time.time()
    job = Job(id=jobs._ids.new(), type=type, args=args, status=status, max_attempts=3, created_at=now, updated_at=now, run_at=run_at)
    await jobs.store.create(job)
    return job


@pytest.mark.parametrize("store", ["records", "redis"])
async def test_lost_messages_are_sent_again_once_and_queued_jobs_are_not(tmp_path, redis_url, make_jobs_app, start_app, files, store):
    data_dir = tmp_path / "var"
    project = write_project(tmp_path / "proj", settings(redis_url, data_dir, store=store))
    jobs = (await start_app(make_jobs_app(settings(redis_url, data_dir, plugins=["realtime", "jobs"], store=store), plugins=TASK_PLUGINS)))[JOBS]
    log = {"log": files["log"]}
    # Two workers, one job at a time each: two held jobs keep both busy while the rest wait.
    with Proc.worker(project, "--concurrency", "1") as a, Proc.worker(project, "--concurrency", "1") as b:
        a.wait_ready()
        b.wait_ready()
        held = [await jobs.enqueue("hold", files) for _ in range(2)]
        await eventually(lambda: len(runs(files["log"])) == 2, timeout=10.0)
        queued = [await jobs.enqueue("logged", log) for _ in range(4)]  # messages in the stream
        missing = [await lost(jobs, "logged", log) for _ in range(3)]  # records only
        # retry() and a retry's backoff: a record without its message or delayed entry.
        missing.append(await lost(jobs, "logged", log, status=JobStatus.RETRYING, run_at=time.time()))
        # Several reconciles by both workers, past the grace, while everything still waits.
        await asyncio.sleep(2.5)
        Path(files["release"]).touch()
        for job in [*held, *queued, *missing]:
            done = await jobs.wait(job.id, timeout=15)
            assert done.status is JobStatus.COMPLETED, done
        assert a.stop() == 0, a.output()
        assert b.stop() == 0, b.output()
    ids = [j for j, _, _ in runs(files["log"])]
    assert sorted(ids) == sorted(job.id for job in [*held, *queued, *missing])  # each exactly once
    assert await jobs.broker.redis.xlen(jobs.broker.queue_name) == 0


async def test_enqueue_and_retry_queue_the_job_in_the_same_command_when_store_and_broker_share_redis(tmp_path, redis_url, make_jobs_app, start_app, files, monkeypatch):
    from plugboard import keys

    data_dir = tmp_path / "var"
    project = write_project(tmp_path / "proj", settings(redis_url, data_dir, reconcile_interval="0s"))
    app = await start_app(make_jobs_app(settings(redis_url, data_dir, plugins=["jobs"]), plugins=TASK_PLUGINS))
    jobs = app[JOBS]
    # The core's default pubsub (memory, this process only): events need not come between.
    assert app[keys.SERVICES].provider("pubsub") == "memory" and jobs.runner.settle_with_final
    failed = await lost(jobs, "logged", {"log": files["log"]}, status=JobStatus.FAILED)

    async def crash(*args, **kwargs):
        raise RuntimeError("the process died here")

    # A separate send after the update would never happen.
    monkeypatch.setattr(jobs.broker, "send", crash)
    monkeypatch.setattr(jobs.broker, "kick", crash)
    # enqueue too, with the default (memory) pubsub: record and message in one script.
    enqueued = await jobs.enqueue("logged", {"log": files["log"]})
    assert await jobs.broker.redis.xlen(jobs.broker.queue_name) == 1
    retried = await jobs.retry(failed.id)
    assert retried.status is JobStatus.PENDING
    assert await jobs.broker.redis.xlen(jobs.broker.queue_name) == 2
    with pytest.raises(Exception, match="only FAILED or CANCELLED"):
        await jobs.retry(failed.id)  # not applied: nothing queued
    assert await jobs.broker.redis.xlen(jobs.broker.queue_name) == 2
    with Proc.worker(project) as worker:  # no reconcile after start: the message itself is there
        worker.wait_ready()
        for job in (enqueued, failed):
            assert (await jobs.wait(job.id, timeout=15)).status is JobStatus.COMPLETED
        assert worker.stop() == 0, worker.output()
    assert sorted(j for j, _, _ in runs(files["log"])) == sorted([enqueued.id, failed.id])


async def test_the_resend_script_skips_queued_jobs_and_marks_what_it_sends(redis_url, make_jobs_app, start_app, tmp_path):
    jobs = (await start_app(make_jobs_app(settings(redis_url, tmp_path / "var", plugins=["realtime", "jobs"], queue="t:resend"), plugins=TASK_PLUGINS)))[JOBS]
    broker = jobs.broker
    await broker.send("logged", "queued")
    await broker.send_later("logged", "delayed", time.time() + 60)
    candidates = [("logged", "queued"), ("logged", "delayed"), ("logged", "gone")]
    assert await broker.resend_missing(candidates, scan_limit=100, marker_ttl=5) == ["gone"]
    # The marker: a second reconcile (another worker's, a stale snapshot) does not send it again.
    assert await broker.resend_missing(candidates, scan_limit=100, marker_ttl=5) == []
    assert await broker.redis.xlen(broker.queue_name) == 2
    # Too long to scan: nothing is sent this turn.
    assert await broker.resend_missing([("logged", "other")], scan_limit=1, marker_ttl=5) is None


async def test_a_job_that_kills_its_worker_fails_once_its_attempts_are_used(tmp_path, redis_url, make_jobs_app, start_app, files):
    data_dir = tmp_path / "var"
    project = write_project(tmp_path / "proj", settings(redis_url, data_dir))
    jobs = (await start_app(make_jobs_app(settings(redis_url, data_dir, plugins=["realtime", "jobs"]), plugins=TASK_PLUGINS)))[JOBS]
    job = await jobs.enqueue("fatal", {"log": files["log"]}, attempts=2)
    for attempt in (1, 2):
        with Proc.worker(project) as worker:
            # Killed by the job (it may go before it is seen ready).
            await eventually(lambda: worker.proc.poll() is not None, timeout=20.0)
            assert worker.proc.returncode == -9, worker.output()
        assert [a for j, _, a in runs(files["log"])] == list(range(1, attempt + 1))
    with Proc.worker(project) as survivor:
        survivor.wait_ready()
        done = await jobs.wait(job.id, timeout=15)
        assert done.status is JobStatus.FAILED, done
        assert done.error.startswith("WorkerLost: ") and "no attempts left" in done.error, done.error
        assert done.attempts == 3 and done.max_attempts == 2
        # The survivor went on working: the delivery was settled, not run.
        after = await jobs.enqueue("logged", {"log": files["log"]})
        assert (await jobs.wait(after.id, timeout=15)).status is JobStatus.COMPLETED
        assert survivor.stop() == 0, survivor.output()
    assert [j for j, _, _ in runs(files["log"])].count(job.id) == 2
    assert await jobs.broker.redis.xlen(jobs.broker.queue_name) == 0


def day(d: int, hour: int, minute: int = 0) -> float:
    return dt.datetime(2024, 5, d, hour, minute, tzinfo=UTC).timestamp()


async def test_catch_up_fires_a_missed_tick_once_and_other_schedules_skip_it(redis_url):
    client = redis.asyncio.Redis.from_url(redis_url)
    fired = []

    async def enqueue(task, args):
        fired.append(task)
        return task

    schedules = [Schedule("nightly", "0 3 * * *", catch_up=True), Schedule("skipped", "0 3 * * *")]

    def scheduler(now: float) -> Scheduler:
        return Scheduler(schedules, enqueue, RedisTickLock(client, "t:cron"), RedisLastTicks(client, "t:cron"), clock=lambda: now)

    # The first start: nothing was missed.
    assert await scheduler(day(6, 2)).catch_up() == []
    # Day 6, 03:00 fires normally.
    assert await scheduler(day(6, 2)).fire(dt.datetime.fromtimestamp(day(6, 3), UTC)) == ["nightly", "skipped"]
    # No scheduler from day 6 04:00 to day 9 10:00 (three ticks missed): two start at once.
    a, b = scheduler(day(9, 10)), scheduler(day(9, 10))
    results = await asyncio.gather(a.catch_up(), b.catch_up())
    assert sorted(map(len, results)) == [0, 1] and fired[-1] == "nightly"
    # Started again later that day: caught up already.
    assert await scheduler(day(9, 11)).catch_up() == []
    assert fired == ["nightly", "skipped", "nightly"]
    await client.aclose()


async def test_catch_up_is_read_from_the_settings(redis_url, make_jobs_app, start_app, tmp_path):
    schedules = [{"task": "logged", "cron": "0 3 * * *", "catch_up": True}, {"task": "logged", "cron": "0 4 * * *"}]
    app = await start_app(
        make_jobs_app(settings(redis_url, tmp_path / "var", plugins=["realtime", "jobs"], schedules=schedules), plugins=TASK_PLUGINS)
    )
    scheduler = make_scheduler(app, _config(app), app[JOBS])
    assert [s.catch_up for s in scheduler.schedules] == [True, False]
    assert isinstance(scheduler.last, RedisLastTicks)


async def test_catch_up_without_redis_reads_the_job_records(make_jobs_app, start_app):
    app = await start_app(make_jobs_app({"jobs": {"schedules": [{"task": "add", "cron": "0 3 * * *", "args": {"a": 1}, "catch_up": True}]}}))
    jobs = app[JOBS]
    first = await jobs.enqueue("add", {"a": 1, "b": 2})  # the last firing the records show
    await jobs.wait(first.id)
    scheduler = make_scheduler(app, _config(app), jobs)
    scheduler.clock = lambda: first.created_at + 2 * 86400
    [caught] = await scheduler.catch_up()
    assert caught.type == "add" and caught.id != first.id
    assert await scheduler.catch_up() == []  # the new job is the mark now


def _config(app):
    from plugboard import keys

    return app[keys.PLUGIN_CONFIGS]["jobs"]
