"""Two ``plugboard serve`` and two ``plugboard worker`` processes on one real
Redis (``jobs.broker: redis``, ``realtime.pubsub: redis``): a job enqueued
through server A runs on exactly one worker, and its progress streams to a
``jobUpdated`` subscriber on server B (issue 4, "Across instances").
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from jobs_testkit import Proc, write_project
from pb_reliability_tasks import runs

from plugboard.testing import TransportWS, eventually, gql_data

TOKEN = "two-instances-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
ENQUEUE = "mutation($type: String!, $args: JSON) { enqueueJob(type: $type, args: $args) { id status } }"
JOB = "query($id: ID!) { job(id: $id) { status progress attempts result } }"
WATCH = "subscription($id: ID!) { jobUpdated(id: $id) { id status progress } }"
STEPS = [20, 40, 60, 80]


@pytest.fixture
def cluster(tmp_path, redis_url):
    """Servers A and B, workers 1 and 2: one Redis for the queue, the job records and pubsub."""
    project = write_project(
        tmp_path / "proj",
        {
            "plugins": ["realtime", "jobs", "pb_jobs_tasks", "pb_reliability_tasks"],
            "server": {"admin_token": TOKEN},
            "redis": {"url": redis_url},
            "services": {"pubsub": {"provider": "redis"}},
            "jobs": {"broker": "redis", "idle_timeout": "2s"},
        },
    )
    procs = [Proc.serve(project), Proc.serve(project), Proc.worker(project), Proc.worker(project)]
    try:
        for proc in procs:
            proc.wait_ready()
        yield procs
    finally:
        for proc in procs:
            proc.close()


async def test_a_job_enqueued_on_a_runs_once_and_streams_its_progress_to_b(cluster, tmp_path):
    a, b, w1, w2 = cluster
    log, release = str(tmp_path / "runs.log"), str(tmp_path / "release")
    async with aiohttp.ClientSession(base_url=a.url) as to_a, aiohttp.ClientSession(base_url=b.url) as to_b:
        args = {"log": log, "steps": STEPS, "release": release}
        job_id = (await gql_data(to_a, ENQUEUE, {"type": "stepped", "args": args}, headers=ADMIN))["enqueueJob"]["id"]
        async with await TransportWS.connect(to_b, {"authorization": f"Bearer {TOKEN}"}) as ws:
            await ws.subscribe("1", WATCH, {"id": job_id})
            seen = []
            first = await ws.receive()  # the current state, then every change
            assert first["type"] == "next", first
            seen.append(first["payload"]["data"]["jobUpdated"])
            Path(release).touch()
            async with asyncio.timeout(10):
                while seen[-1]["status"] != "COMPLETED":
                    message = await ws.receive(timeout=None)
                    assert message["type"] == "next", message
                    seen.append(message["payload"]["data"]["jobUpdated"])
        assert all(update["id"] == job_id for update in seen)
        assert seen[0]["status"] in ("PENDING", "PROCESSING") and seen[0]["progress"] == 0
        progress = [update["progress"] for update in seen if update["status"] == "PROCESSING"]
        assert progress == sorted(progress) and [p for p in progress if p] == STEPS, seen
        assert seen[-1] == {"id": job_id, "status": "COMPLETED", "progress": 100}

        # Exactly one execution, by one of the two workers; A and B report the same record.
        [(ran_id, pid, attempt)] = runs(log)
        assert ran_id == job_id and attempt == 1 and pid in (w1.pid, w2.pid)
        for server in (to_a, to_b):
            assert (await gql_data(server, JOB, {"id": job_id}, headers=ADMIN))["job"] == {"status": "COMPLETED", "progress": 100, "attempts": 1, "result": pid}

        # More jobs through A: every one runs exactly once, whichever worker takes it.
        ids = [(await gql_data(to_a, ENQUEUE, {"type": "logged", "args": {"log": log}}, headers=ADMIN))["enqueueJob"]["id"] for _ in range(20)]
        await eventually(lambda: len(runs(log)) >= 21, timeout=10)
        await asyncio.sleep(0.3)  # a duplicate would show up here
        executions = runs(log)[1:]
        assert sorted(j for j, _, _ in executions) == sorted(ids)
        assert {pid for _, pid, _ in executions} <= {w1.pid, w2.pid}
        for job_id in ids:
            job = (await gql_data(to_b, JOB, {"id": job_id}, headers=ADMIN))["job"]
            assert job["status"] == "COMPLETED", job
    assert w1.stop() == 0 and w2.stop() == 0, (w1.output(), w2.output())
