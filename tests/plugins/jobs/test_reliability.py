"""Reliability of the jobs plugin on a real Redis with real ``plugboard worker``
processes (issue 4, "Reliability, each tested"): a worker killed mid-job, Redis
restarted under queued jobs, a task that keeps failing, bad enqueues, a
graceful stop. The reliability tasks (``pb_reliability_tasks``) log every
execution (job id, pid, attempt), so the tests see what ran where and how often.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
from pathlib import Path

import pytest

import pb_jobs_tasks
import pb_reliability_tasks
from jobs_testkit import Proc, write_project
from pb_reliability_tasks import runs
from plugboard.plugins.jobs.errors import JobArgumentsError, UnknownTaskError
from plugboard.plugins.jobs.keys import JOBS
from plugboard.plugins.jobs.model import JobStatus
from plugboard.testing import eventually
from plugboard.testing_servers import RedisServer

PLUGINS = ["realtime", "jobs", "pb_jobs_tasks", "pb_reliability_tasks"]
TASK_PLUGINS = (pb_jobs_tasks, pb_reliability_tasks)
ADMIN = {"Authorization": "Bearer root"}  # pb_jobs_tasks: "root" holds the admin role


def settings(redis_url: str, plugins: list[str] = PLUGINS, **jobs) -> dict:
    """The redis broker with short timeouts (a silent delivery is claimed after 2 s), 2 retries.

    Worker processes load the test plugins by name; apps in this process get
    them as objects (``make_jobs_app(..., plugins=TASK_PLUGINS)``), see :func:`local`.
    """
    return {
        "plugins": plugins,
        "redis": {"url": redis_url},
        "jobs": {"broker": "redis", "schedules": [], "retries": 2, "idle_timeout": "2s", "backoff": "50ms", "max_backoff": "200ms", "shutdown_grace": "5s", **jobs},
    }


def local(redis_url: str) -> dict:
    return settings(redis_url, plugins=["realtime", "jobs"])


@pytest.fixture
def files(tmp_path):
    """Paths for the task log and the started/release flags."""
    return {name: str(tmp_path / name) for name in ("log", "started", "release")}


async def test_a_job_of_a_worker_killed_mid_job_runs_again_on_another(tmp_path, redis_url, make_jobs_app, start_app, files):
    project = write_project(tmp_path / "proj", settings(redis_url))
    jobs = (await start_app(make_jobs_app(local(redis_url), plugins=TASK_PLUGINS)))[JOBS]
    with Proc.worker(project) as a, Proc.worker(project) as b:
        a.wait_ready()
        b.wait_ready()
        held = await jobs.enqueue("hold", files)
        await eventually(Path(files["started"]).exists, timeout=10.0)
        [(job_id, victim_pid, attempt)] = runs(files["log"])
        assert (job_id, attempt) == (held.id, 1)
        victim, survivor = (a, b) if victim_pid == a.pid else (b, a)
        victim.kill()  # SIGKILL in the middle of the job
        others = [await jobs.enqueue("logged", {"log": files["log"]}) for _ in range(5)]
        Path(files["release"]).touch()
        # Silent for idle_timeout (2 s), the dead worker's delivery is claimed by the survivor.
        done = await jobs.wait(held.id, timeout=15)
        assert done.status is JobStatus.COMPLETED and done.result == survivor.pid, done
        assert done.attempts == 2
        for job in others:
            finished = await jobs.wait(job.id)
            assert finished.status is JobStatus.COMPLETED and finished.result == survivor.pid
        assert survivor.stop() == 0, survivor.output()
    executions = runs(files["log"])
    assert [(j, pid) for j, pid, _ in executions if j == held.id] == [(held.id, victim.pid), (held.id, survivor.pid)]
    assert sorted(j for j, _, _ in executions if j != held.id) == sorted(job.id for job in others)  # each once
    counts = await jobs.counts()
    assert counts[JobStatus.COMPLETED] == 6 and sum(counts.values()) == 6  # nothing lost
    assert await jobs.broker.redis.xlen(jobs.broker.queue_name) == 0


async def test_queued_jobs_survive_a_redis_restart_and_the_worker_reconnects(tmp_path, make_jobs_app, start_app, files):
    # This test's own Redis, persisting every write to its append-only file.
    server = RedisServer(options={"appendonly": "yes", "appendfsync": "always"})
    server.start()
    try:
        project = write_project(tmp_path / "proj", settings(server.url))
        jobs = (await start_app(make_jobs_app(local(server.url), plugins=TASK_PLUGINS)))[JOBS]
        # One job at a time: the held job keeps the worker busy while the others queue up.
        with Proc.worker(project, "--concurrency", "1") as worker:
            worker.wait_ready()
            held = await jobs.enqueue("hold", files)
            await eventually(Path(files["started"]).exists, timeout=10.0)
            queued = [await jobs.enqueue("logged", {"log": files["log"]}) for _ in range(5)]
            server.restart()  # SIGTERM (Redis flushes its AOF), then the same port and folder
            Path(files["release"]).touch()
            done = await jobs.wait(held.id, timeout=15)
            assert done.status is JobStatus.COMPLETED and done.result == worker.pid, done
            for job in queued:
                finished = await jobs.wait(job.id, timeout=15)
                assert finished.status is JobStatus.COMPLETED and finished.result == worker.pid, finished
            after = await jobs.enqueue("logged", {"log": files["log"]})
            assert (await jobs.wait(after.id)).status is JobStatus.COMPLETED
            assert worker.proc.poll() is None, worker.output()
            assert worker.stop() == 0, worker.output()
        ids = [j for j, _, _ in runs(files["log"])]
        assert sorted(ids) == sorted(job.id for job in [held, *queued, after])  # each exactly once
    finally:
        server.stop()


async def test_a_job_finishing_while_redis_is_down_is_recorded_once_it_is_back(tmp_path, make_jobs_app, start_app, files):
    server = RedisServer(options={"appendonly": "yes", "appendfsync": "always"})
    server.start()
    try:
        project = write_project(tmp_path / "proj", settings(server.url))
        jobs = (await start_app(make_jobs_app(local(server.url), plugins=TASK_PLUGINS)))[JOBS]
        with Proc.worker(project) as worker:
            worker.wait_ready()
            held = await jobs.enqueue("hold", files)
            await eventually(Path(files["started"]).exists, timeout=10.0)
            server.process.terminate()  # Redis goes away ...
            server.process.wait()
            Path(files["release"]).touch()  # ... the job ends meanwhile ...
            # Longer than idle_timeout (2 s): back, the delivery looks abandoned to XAUTOCLAIM.
            await asyncio.sleep(2.5)
            server.restart()  # ... and Redis comes back (same port, same data)
            done = await jobs.wait(held.id, timeout=15)
            assert done.status is JobStatus.COMPLETED and done.result == worker.pid, (done, worker.output())
            assert worker.stop() == 0, worker.output()
        assert [j for j, _, _ in runs(files["log"])] == [held.id]  # its own worker did not run it again
    finally:
        server.stop()


async def test_a_worker_does_not_take_back_its_own_running_job_after_an_outage(redis_url, make_jobs_app, start_app):
    from plugboard.plugins.jobs.brokers.redis import GROUP

    jobs = (await start_app(make_jobs_app(local(redis_url), plugins=TASK_PLUGINS)))[JOBS]
    broker = jobs.broker
    await jobs.enqueue("logged", {"log": os.devnull})
    deliveries = broker.listen()
    try:
        await anext(deliveries)  # this consumer holds the entry now (running its job)
        # As after a Redis outage longer than idle_timeout: no heartbeat reset the entry's idle time.
        broker._heartbeat.cancel()  # (still in its first sleep)
        [entry] = list(broker._inflight)
        await broker.redis.xclaim(broker.queue_name, GROUP, broker.consumer_name, 0, [entry], idle=60_000, justid=True)
        with pytest.raises(TimeoutError):  # XAUTOCLAIM finds it, and the worker leaves it to the running job
            async with asyncio.timeout(1.5):
                await anext(deliveries)
    finally:
        await deliveries.aclose()


async def test_a_worker_reads_ahead_only_with_a_backlog_and_gives_back_what_it_did_not_start(redis_url, make_jobs_app, start_app):
    from plugboard.plugins.jobs.brokers.redis import GROUP

    jobs = (await start_app(make_jobs_app(local(redis_url), plugins=TASK_PLUGINS)))[JOBS]
    broker = jobs.broker
    broker.concurrency = 1  # one slot, so one entry read ahead
    for _ in range(4):
        await jobs.enqueue("logged", {"log": os.devnull})
    deliveries = broker.listen()
    try:
        await anext(deliveries)  # no backlog seen yet: only the free slot is read
        assert len(broker._inflight) == 1
        await anext(deliveries)  # that read was full (a backlog): the next one reads one ahead
        assert len(broker._inflight) == 3 and len(broker._ahead) == 1
        [(ahead, _)] = broker._ahead
    finally:
        await deliveries.aclose()
    await broker._give_back()
    assert ahead not in broker._inflight and not broker._ahead
    # Another worker claims it at once, not after idle_timeout (2 s here).
    claimed = await broker.redis.xautoclaim(broker.queue_name, GROUP, "another", min_idle_time=broker.idle_timeout, start_id="0-0")
    assert [entry for entry, _fields in claimed[1]] == [ahead]


JOB = "query($id: ID!) { job(id: $id) { id status attempts maxAttempts error } }"
ENQUEUE = "mutation($type: String!, $args: JSON) { enqueueJob(type: $type, args: $args) { id status maxAttempts } }"


@pytest.fixture
async def worker(tmp_path, redis_url):
    project = write_project(tmp_path / "proj", settings(redis_url))
    with Proc.worker(project) as proc:
        yield proc.wait_ready()


@pytest.fixture
async def graphql(redis_url, make_jobs_app, aiohttp_client):
    """POST /graphql as the admin to a server (in this process) that enqueues on the Redis the worker consumes."""
    app = make_jobs_app(local(redis_url), plugins=TASK_PLUGINS)
    client = await aiohttp_client(app)

    async def post(query, variables=None):
        resp = await client.post("/graphql", json={"query": query, "variables": variables}, headers=ADMIN)
        assert resp.status == 200, await resp.text()
        return await resp.json()

    post.jobs = app[JOBS]
    return post


async def test_a_failing_task_is_retried_per_its_strategy_then_failed_with_its_error(worker, graphql):
    # pb_jobs_tasks.always_fails: @retry(attempts=2, backoff=0.01), raises RuntimeError(f"boom {attempt}").
    enqueued = (await graphql(ENQUEUE, {"type": "always-fails"}))["data"]["enqueueJob"]
    assert enqueued["status"] == "PENDING" and enqueued["maxAttempts"] == 2
    await graphql.jobs.wait(enqueued["id"])
    job = (await graphql(JOB, {"id": enqueued["id"]}))["data"]["job"]
    assert job == {"id": enqueued["id"], "status": "FAILED", "attempts": 2, "maxAttempts": 2, "error": "RuntimeError: boom 2"}


async def test_a_task_without_a_strategy_of_its_own_gets_jobs_retries(worker, graphql, files):
    enqueued = (await graphql(ENQUEUE, {"type": "broken", "args": {"log": files["log"]}}))["data"]["enqueueJob"]
    assert enqueued["maxAttempts"] == 3  # jobs.retries (2) + 1
    await graphql.jobs.wait(enqueued["id"])
    job = (await graphql(JOB, {"id": enqueued["id"]}))["data"]["job"]
    assert job["status"] == "FAILED" and job["attempts"] == 3 and job["error"] == "ValueError: broken on attempt 3"
    assert [attempt for _, _, attempt in runs(files["log"])] == [1, 2, 3]


async def test_an_error_the_task_marks_permanent_fails_the_job_at_once(worker, graphql):
    # pb_jobs_tasks.permanent: @retry(attempts=5, permanent=(KeyError,)).
    enqueued = (await graphql(ENQUEUE, {"type": "permanent", "args": {"kind": "key"}}))["data"]["enqueueJob"]
    assert enqueued["maxAttempts"] == 5
    await graphql.jobs.wait(enqueued["id"])
    job = (await graphql(JOB, {"id": enqueued["id"]}))["data"]["job"]
    assert job["status"] == "FAILED" and job["attempts"] == 1 and job["error"] == "KeyError: 'missing'"


BAD_ARGUMENTS = [
    ({"a": "three"}, "a"),  # wrong type (add(a: int, b: int = 1))
    ({}, "a"),  # a required argument missing
    ({"a": 1, "c": 2}, "c"),  # an argument the task does not take
    ({"a": 1, "b": [1, {"x": object()}]}, "b"),  # not a JSON value (Python API only)
]


async def test_bad_arguments_fail_at_enqueue_and_do_not_poison_the_queue(worker, graphql):
    for args, name in BAD_ARGUMENTS[:3]:
        result = await graphql(ENQUEUE, {"type": "add", "args": args})
        assert result["data"] is None, result
        [error] = result["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT" and name in error["message"], error
    jobs = graphql.jobs
    for args, name in BAD_ARGUMENTS:
        with pytest.raises(JobArgumentsError, match=name):
            await jobs.enqueue("add", args)
    with pytest.raises(JobArgumentsError):
        await jobs.enqueue("add", {"a": math.nan})
    # Nothing was recorded or queued for the rejected calls, and the next good job runs.
    assert sum((await jobs.counts()).values()) == 0
    assert await jobs.broker.redis.xlen(jobs.broker.queue_name) == 0
    good = await jobs.enqueue("add", {"a": 40, "b": 2})
    done = await jobs.wait(good.id)
    assert done.status is JobStatus.COMPLETED and done.result == 42
    assert sum((await jobs.counts()).values()) == 1


async def test_an_unknown_task_name_is_a_clear_error(graphql):
    result = await graphql(ENQUEUE, {"type": "no-such-task", "args": {}})
    assert result["data"] is None, result
    [error] = result["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "no-such-task" in error["message"] and "'add'" in error["message"], error  # and names what exists
    with pytest.raises(UnknownTaskError, match="no-such-task"):
        await graphql.jobs.enqueue("no-such-task")
    assert sum((await graphql.jobs.counts()).values()) == 0


async def test_sigterm_lets_the_running_job_finish_within_grace_and_exits_0(tmp_path, redis_url, make_jobs_app, start_app, files):
    project = write_project(tmp_path / "proj", settings(redis_url))
    jobs = (await start_app(make_jobs_app(local(redis_url), plugins=TASK_PLUGINS)))[JOBS]
    with Proc.worker(project) as worker:
        worker.wait_ready()
        job = await jobs.enqueue("hold", files)
        await eventually(Path(files["started"]).exists, timeout=10.0)
        worker.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        assert worker.proc.poll() is None  # waiting for the running job (grace: 5 s)
        Path(files["release"]).touch()
        assert await asyncio.to_thread(worker.proc.wait, 10) == 0, worker.output()
    done = await jobs.get(job.id)
    assert done.status is JobStatus.COMPLETED and done.result == worker.pid, done
    assert await jobs.broker.redis.xlen(jobs.broker.queue_name) == 0  # settled before exiting
