"""``plugboard worker`` on a real Redis, ``plugboard serve`` with the memory broker over HTTP."""

from __future__ import annotations

import asyncio
import signal

import aiohttp
import pytest

from jobs_testkit import Proc, write_project
from plugboard.plugins.jobs.keys import JOBS
from plugboard.plugins.jobs.model import JobStatus
from plugboard.testing import eventually


def redis_settings(redis_url: str, **jobs) -> dict:
    return {"redis": {"url": redis_url}, "jobs": {"broker": "redis", "schedules": [], **jobs}}


@pytest.fixture
def project(tmp_path, redis_url):
    return write_project(tmp_path / "proj", redis_settings(redis_url, idle_timeout="1s", shutdown_grace="10s"))


@pytest.fixture
async def client_app(make_jobs_app, start_app, redis_url):
    """The enqueuing side: an app with the redis broker (it runs no jobs itself)."""
    return await start_app(make_jobs_app(redis_settings(redis_url, idle_timeout="1s")))


async def until_status(jobs, job_id, *statuses, timeout=15.0):
    return await jobs.wait(job_id, timeout=timeout, statuses=frozenset(statuses))


async def test_a_worker_runs_jobs_with_retries(project, client_app):
    jobs = client_app[JOBS]
    assert not jobs.broker.in_process
    with Proc.worker(project, "--concurrency", "4") as worker:
        worker.wait_ready()
        assert "(concurrency 4, pid" in worker.output()
        added = await jobs.enqueue("add", {"a": 20, "b": 22})
        flaky = await jobs.enqueue("flaky")
        progress = await jobs.enqueue("sleep", {"seconds": 0.1, "steps": 2})
        failing = await jobs.enqueue("always-fails")
        assert (await until_status(jobs, added.id, JobStatus.COMPLETED)).result == 42
        done = await until_status(jobs, flaky.id, JobStatus.COMPLETED)
        assert done.attempts == 3 and done.result == {"attempt": 3}
        slept = await until_status(jobs, progress.id, JobStatus.COMPLETED)
        assert slept.result["pid"] == worker.pid and slept.progress == 100
        failed = await until_status(jobs, failing.id, JobStatus.FAILED)
        assert failed.error == "RuntimeError: boom 2" and failed.attempts == 2
        # Settled messages leave the stream; no retry is left waiting.
        redis = jobs.broker.redis
        assert await redis.xlen(jobs.broker.queue_name) == 0
        assert await redis.zcard(jobs.broker.delayed_key) == 0
        assert worker.stop() == 0, worker.output()


async def test_sigterm_lets_the_running_job_finish(project, client_app):
    jobs = client_app[JOBS]
    with Proc.worker(project) as worker:
        worker.wait_ready()
        job = await jobs.enqueue("sleep", {"seconds": 1.0, "steps": 4})
        await until_status(jobs, job.id, JobStatus.PROCESSING)
        worker.proc.send_signal(signal.SIGTERM)
        status = await asyncio.to_thread(worker.proc.wait, 15)
        assert status == 0, worker.output()
    done = await jobs.get(job.id)
    assert done.status is JobStatus.COMPLETED and done.result["pid"] == worker.pid


async def test_a_killed_workers_job_goes_to_another_worker(project, client_app, tmp_path):
    jobs = client_app[JOBS]
    pids = tmp_path / "pids.txt"
    with Proc.worker(project) as first:
        first.wait_ready()
        job = await jobs.enqueue("record-pid", {"path": str(pids), "seconds": 30})
        await until_status(jobs, job.id, JobStatus.PROCESSING)
        # PROCESSING is recorded just before the task runs: kill only once it wrote its pid.
        await eventually(lambda: pids.exists() and pids.read_text().split(), timeout=10)
        first.kill()
    with Proc.worker(project) as second:
        second.wait_ready()
        # Idle for idle_timeout (1s), the entry is claimed by the idle worker.
        await eventually(lambda: len(pids.read_text().split()) >= 2, timeout=10, interval=0.05)
        assert pids.read_text().split() == [str(first.pid), str(second.pid)]
        running = await jobs.get(job.id)
        assert running.status is JobStatus.PROCESSING and running.attempts == 2
        assert second.kill() is not None


async def test_a_long_job_is_not_claimed_while_its_worker_heartbeats(project, client_app, tmp_path):
    jobs = client_app[JOBS]
    pids = tmp_path / "pids.txt"
    with Proc.worker(project) as a, Proc.worker(project) as b:
        a.wait_ready()
        b.wait_ready()
        job = await jobs.enqueue("record-pid", {"path": str(pids), "seconds": 3})  # 3x idle_timeout
        done = await until_status(jobs, job.id, JobStatus.COMPLETED)
        assert done.attempts == 1 and len(pids.read_text().split()) == 1
        assert a.stop() == 0 and b.stop() == 0


async def test_a_redelivered_finished_job_is_skipped(project, client_app):
    jobs = client_app[JOBS]
    with Proc.worker(project) as worker:
        worker.wait_ready()
        job = await jobs.enqueue("add", {"a": 1})
        done = await until_status(jobs, job.id, JobStatus.COMPLETED)
        await jobs.broker.send("add", job.id)  # a duplicate delivery
        await asyncio.sleep(0.5)
        again = await jobs.get(job.id)
        assert again.attempts == 1 and again.updated_at == done.updated_at
        assert await jobs.broker.redis.xlen(jobs.broker.queue_name) == 0
        assert worker.stop() == 0


def test_a_worker_with_the_memory_broker_exits_2(tmp_path):
    project = write_project(tmp_path / "proj", {})
    with Proc.worker(project) as worker:
        assert worker.proc.wait(30) == 2
        assert "jobs.broker is 'memory'" in worker.output()


async def test_the_memory_broker_runs_jobs_inside_a_real_server(tmp_path):
    project = write_project(tmp_path / "proj", {"server": {"data_dir": "var", "admin_token": "tok"}})
    enqueue = 'mutation { enqueueJob(type: "sleep", args: {seconds: 0.05, steps: 2}) { id status } }'
    with Proc.serve(project) as server:
        await asyncio.to_thread(server.wait_ready)
        headers = {"Authorization": "Bearer tok"}
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.post(server.url + "/graphql", json={"query": enqueue}) as resp:
                job = (await resp.json())["data"]["enqueueJob"]
            query = {"query": "query($id: ID!) { job(id: $id) { status progress result } }", "variables": {"id": job["id"]}}

            async def completed() -> dict | None:
                async with session.post(server.url + "/graphql", json=query) as resp:
                    state = (await resp.json())["data"]["job"]
                return state if state["status"] == "COMPLETED" else None

            state = await eventually(completed, timeout=10, interval=0.05)
        assert state["status"] == "COMPLETED" and state["progress"] == 100
        assert state["result"]["pid"] == server.pid
        assert server.stop() == 0, server.output()
