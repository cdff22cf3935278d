"""The jobs GraphQL surface over real HTTP: queries, mutations, jobUpdated, access rules."""

from __future__ import annotations

import asyncio

import pytest
from tartiflette.types.exceptions.tartiflette import TartifletteError

from plugboard.plugins.jobs.keys import JOBS
from plugboard.plugins.jobs.model import JobStatus
from plugboard.testing import gql
from plugboard.testing import subscribe as kit_subscribe

FIELDS = "id type status progress attempts maxAttempts error result args createdAt startedAt completedAt"
ENQUEUE = f"mutation($t: String!, $a: JSON) {{ enqueueJob(type: $t, args: $a) {{ {FIELDS} }} }}"
JOB = f"query($id: ID!) {{ job(id: $id) {{ {FIELDS} }} }}"
JOBS_Q = (
    "query($s: JobStatus, $t: String, $f: Int, $a: String) { jobs(status: $s, type: $t, first: $f, after: $a) "
    "{ edges { cursor node { id type status } } pageInfo { endCursor hasNextPage } totalCount } }"
)
COUNTS = "{ jobCounts { status count } }"
RETRY = "mutation($id: ID!) { retryJob(id: $id) { id status maxAttempts } }"
CANCEL = "mutation($id: ID!) { cancelJob(id: $id) { id status } }"
UPDATED = "subscription($id: ID!) { jobUpdated(id: $id) { id status progress result } }"
UNKNOWN = "00000000-0000-7000-8000-000000000000"


@pytest.fixture
async def client(make_jobs_app, aiohttp_client):
    app = make_jobs_app({"server": {"admin_token": "s3cret"}, "realtime": {"websockets": False, "serverSentEvents": False}})
    return await aiohttp_client(app)


def code(result) -> str:
    return result["errors"][0]["extensions"]["code"]


async def test_enqueue_then_read_the_finished_job(client):
    result = await gql(client, ENQUEUE, {"t": "add", "a": {"a": 2, "b": 5}}, token="root")
    job = result["data"]["enqueueJob"]
    assert (job["type"], job["status"], job["args"], job["maxAttempts"]) == ("add", "PENDING", {"a": 2, "b": 5}, 4)
    await client.app[JOBS].wait(job["id"])
    done = (await gql(client, JOB, {"id": job["id"]}, token="root"))["data"]["job"]
    assert (done["status"], done["result"], done["progress"], done["attempts"], done["error"]) == ("COMPLETED", 7, 100, 1, None)
    assert done["createdAt"].endswith("+00:00") and done["completedAt"]


async def test_admin_token_works_as_well_as_the_admin_role(client):
    result = await gql(client, ENQUEUE, {"t": "noop"}, token="s3cret")
    assert result["data"]["enqueueJob"]["status"] == "PENDING"


async def test_enqueue_errors(client):
    assert code(await gql(client, ENQUEUE, {"t": "nope"}, token="root")) == "BAD_USER_INPUT"
    bad = await gql(client, ENQUEUE, {"t": "add", "a": {"a": "two"}}, token="root")
    assert code(bad) == "BAD_USER_INPUT" and "'a' must be int" in bad["errors"][0]["message"]
    assert code(await gql(client, ENQUEUE, {"t": "add", "a": [1]}, token="root")) == "BAD_USER_INPUT"
    assert code(await gql(client, ENQUEUE, {"t": "add", "a": {"a": 1}}, token="alice")) == "FORBIDDEN"
    assert code(await gql(client, ENQUEUE, {"t": "add", "a": {"a": 1}}, token=None)) == "FORBIDDEN"


async def test_admin_only_fields_are_forbidden_to_others(client):
    job = await client.app[JOBS].enqueue("add", {"a": 1})
    for query, variables in ((JOBS_Q, None), (COUNTS, None), (RETRY, {"id": job.id}), (CANCEL, {"id": job.id})):
        assert code(await gql(client, query, variables, token="alice")) == "FORBIDDEN"
        assert code(await gql(client, query, variables, token=None)) == "FORBIDDEN"
    assert code(await gql(client, JOB, {"id": job.id}, token="alice")) == "FORBIDDEN"
    types = (await gql(client, "{ jobTypes }", token=None))["data"]["jobTypes"]
    assert "add" in types and "sleep" in types


async def test_the_owner_reads_and_watches_their_job(client):
    jobs = client.app[JOBS]
    job = await jobs.enqueue("sleep", {"seconds": 0.05, "steps": 2}, owner="alice")
    # Only fields the running job does not change: the test kit runs each
    # query on both executors and compares them, while the worker moves on.
    steady = "query($id: ID!) { job(id: $id) { id type maxAttempts args createdAt } }"
    assert (await gql(client, steady, {"id": job.id}, token="alice"))["data"]["job"]["id"] == job.id
    assert code(await gql(client, steady, {"id": job.id}, token="bob")) == "FORBIDDEN"
    stream = await subscribe(client.app, UPDATED, {"id": job.id}, user="alice")
    seen = []
    async for result in stream:
        update = result["data"]["jobUpdated"]
        seen.append((update["status"], update["progress"]))
        if update["status"] == "COMPLETED":
            break
    await stream.aclose()
    assert seen[-1] == ("COMPLETED", 100) and ("PROCESSING", 50) in seen


async def test_subscription_access(client):
    job = await client.app[JOBS].enqueue("add", {"a": 1}, owner="alice")
    for user, job_id, expected in (("bob", job.id, "FORBIDDEN"), (None, job.id, "FORBIDDEN"), ("root", UNKNOWN, "NOT_FOUND")):
        stream = await subscribe(client.app, UPDATED, {"id": job_id}, user=user)
        with pytest.raises(TartifletteError) as e:
            await asyncio.wait_for(anext(stream), 5)
        assert e.value.extensions["code"] == expected
        await stream.aclose()


async def test_list_and_counts(client):
    jobs = client.app[JOBS]
    ids = [(await jobs.enqueue("add", {"a": i})).id for i in range(3)]
    failed = await jobs.wait((await jobs.enqueue("permanent")).id)
    for job_id in ids:
        await jobs.wait(job_id)
    page = (await gql(client, JOBS_Q, {"f": 2}, token="root"))["data"]["jobs"]
    assert [e["node"]["id"] for e in page["edges"]] == [failed.id, ids[2]]
    assert page["pageInfo"]["hasNextPage"] and page["totalCount"] == 4
    rest = (await gql(client, JOBS_Q, {"f": 5, "a": page["pageInfo"]["endCursor"]}, token="root"))["data"]["jobs"]
    assert [e["node"]["id"] for e in rest["edges"]] == [ids[1], ids[0]] and not rest["pageInfo"]["hasNextPage"]
    only_failed = (await gql(client, JOBS_Q, {"s": "FAILED"}, token="root"))["data"]["jobs"]
    assert [e["node"]["status"] for e in only_failed["edges"]] == ["FAILED"]
    assert (await gql(client, JOBS_Q, {"t": "add"}, token="root"))["data"]["jobs"]["totalCount"] == 3
    assert code(await gql(client, JOBS_Q, {"f": 500}, token="root")) == "BAD_USER_INPUT"
    counts = {c["status"]: c["count"] for c in (await gql(client, COUNTS, token="root"))["data"]["jobCounts"]}
    assert counts == {"PENDING": 0, "PROCESSING": 0, "COMPLETED": 3, "FAILED": 1, "RETRYING": 0, "CANCELLED": 0}


async def test_retry_and_cancel(client):
    jobs = client.app[JOBS]
    failed = await jobs.wait((await jobs.enqueue("always-fails")).id)
    retried = (await gql(client, RETRY, {"id": failed.id}, token="root"))["data"]["retryJob"]
    assert retried == {"id": failed.id, "status": "PENDING", "maxAttempts": 4}
    await jobs.wait(failed.id)
    running = await jobs.enqueue("until-cancelled")
    await jobs.wait(running.id, statuses=frozenset({JobStatus.PROCESSING}))
    assert (await gql(client, CANCEL, {"id": running.id}, token="root"))["data"]["cancelJob"]["status"] == "CANCELLED"
    conflict = await gql(client, CANCEL, {"id": running.id}, token="root")
    assert code(conflict) == "CONFLICT"
    done = await jobs.wait((await jobs.enqueue("add", {"a": 1})).id)
    assert code(await gql(client, RETRY, {"id": done.id}, token="root")) == "CONFLICT"
    assert code(await gql(client, RETRY, {"id": UNKNOWN}, token="root")) == "NOT_FOUND"
    assert code(await gql(client, CANCEL, {"id": UNKNOWN}, token="root")) == "NOT_FOUND"
    assert (await gql(client, JOB, {"id": UNKNOWN}, token="root"))["data"]["job"] is None
    await asyncio.wait_for(jobs.broker.wait_idle(), 2)


async def subscribe(app, query, variables=None, user="root"):
    return await kit_subscribe(app, query, variables, connection_params={"authToken": user} if user else None)
