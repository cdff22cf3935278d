"""One contract for every job store: records (SQLite, PostgreSQL) and redis."""

from __future__ import annotations

import time

import pytest
import redis.asyncio
import sqlalchemy as sa

from plugboard import keys
from plugboard.plugins.jobs.ids import JobIds
from plugboard.plugins.jobs.model import Job, JobStatus
from plugboard.plugins.jobs.store import JobStore, StoreOptions
from plugboard.plugins.jobs.store.records import RecordsJobStore, define_table
from plugboard.plugins.jobs.store.redis import RedisJobStore, StreamAck, StreamMessage
from plugboard.providers.records import SQLRecordsStore


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
async def store(request, tmp_path):
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        client = redis.asyncio.Redis.from_url(url)
        s = RedisJobStore(StoreOptions(prefix="t:jobs"), app={keys.REDIS: client})
        await s.start()
        yield s
        await s.close()
        await client.aclose()
        return
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"
    else:
        pg = request.getfixturevalue("postgres_server")
        name = f"jobs_{time.monotonic_ns()}"
        pg.create_database(name)
        url = pg.url_for(name)
    metadata = sa.MetaData()
    define_table(metadata)
    records = SQLRecordsStore(url, metadata=metadata)
    await records.start()
    s = RecordsJobStore(StoreOptions(), app={keys.RECORDS: records})
    await s.start()
    yield s
    await s.close()
    await records.close()


def new_job(ids: JobIds, type: str = "add", **fields) -> Job:
    now = time.time()
    return Job(id=ids.new(), type=type, args=fields.pop("args", {"a": 1}), created_at=now, updated_at=now, **fields)


async def test_create_and_get(store: JobStore):
    assert isinstance(store, JobStore)
    job = new_job(JobIds(), args={"a": [1, {"b": None}], "s": "é"}, max_attempts=3, owner="alice")
    await store.create(job)
    assert await store.get(job.id) == job
    assert await store.get("00000000-0000-7000-8000-000000000000") is None


async def test_update_applies_changes_under_a_status_condition(store: JobStore):
    job = new_job(JobIds())
    await store.create(job)
    now = time.time()
    started, applied = await store.update(
        job.id, {"status": JobStatus.PROCESSING, "started_at": now}, when={JobStatus.PENDING}, add_attempt=True
    )
    assert applied and (started.status, started.attempts, started.started_at) == (JobStatus.PROCESSING, 1, now)
    again, applied = await store.update(job.id, {"status": JobStatus.PROCESSING}, when={JobStatus.PENDING}, add_attempt=True)
    assert not applied and again.attempts == 1  # unchanged
    done, applied = await store.update(
        job.id,
        {"status": JobStatus.COMPLETED, "result": {"x": [1.5, None]}, "progress": 100, "completed_at": now + 1},
        when={JobStatus.PROCESSING},
    )
    assert applied and (done.status, done.result, done.progress, done.completed_at) == (JobStatus.COMPLETED, {"x": [1.5, None]}, 100, now + 1)
    cleared, applied = await store.update(job.id, {"result": None, "error": "E: x"})  # any status
    assert applied and cleared.result is None and cleared.error == "E: x"
    assert await store.update("00000000-0000-7000-8000-000000000000", {"progress": 1}) == (None, False)
    with pytest.raises(ValueError):
        await store.update(job.id, {"type": "other"})


async def test_list_newest_first_with_filters_and_cursors(store: JobStore):
    ids = JobIds()
    jobs = [new_job(ids, type="add" if i % 2 else "mail") for i in range(7)]
    for job in jobs:
        await store.create(job)
    for job in jobs[:3]:
        await store.update(job.id, {"status": JobStatus.FAILED})
    newest = [j.id for j in reversed(jobs)]

    page = await store.list(first=3)
    assert [j.id for j in page.jobs] == newest[:3] and page.has_next_page and page.total_count == 7
    assert page.end_cursor == newest[2]
    page = await store.list(first=3, after=page.end_cursor)
    assert [j.id for j in page.jobs] == newest[3:6] and page.has_next_page
    page = await store.list(first=3, after=page.end_cursor)
    assert [j.id for j in page.jobs] == newest[6:] and not page.has_next_page

    failed = await store.list(status=JobStatus.FAILED)
    assert [j.id for j in failed.jobs] == [j.id for j in reversed(jobs[:3])] and failed.total_count == 3
    adds = await store.list(type="add")
    assert [j.id for j in adds.jobs] == [j.id for j in reversed(jobs) if j.type == "add"]
    both = await store.list(status=JobStatus.PENDING, type="mail")
    assert [j.id for j in both.jobs] == [j.id for j in reversed(jobs[3:]) if j.type == "mail"]
    assert (await store.list(type="none")).jobs == []
    empty = await store.list(first=0)
    assert empty.jobs == [] and empty.has_next_page and empty.end_cursor is None


async def test_counts(store: JobStore):
    ids = JobIds()
    jobs = [new_job(ids) for _ in range(4)]
    for job in jobs:
        await store.create(job)
    await store.update(jobs[0].id, {"status": JobStatus.COMPLETED})
    await store.update(jobs[1].id, {"status": JobStatus.RETRYING})
    counts = await store.counts()
    assert counts == {**{s: 0 for s in JobStatus}, JobStatus.PENDING: 2, JobStatus.COMPLETED: 1, JobStatus.RETRYING: 1}


async def test_counts_by_type(store: JobStore):
    ids = JobIds()
    jobs = [new_job(ids, type="add"), new_job(ids, type="add"), new_job(ids, type="mail")]
    for job in jobs:
        await store.create(job)
    await store.update(jobs[0].id, {"status": JobStatus.COMPLETED})
    counts = await store.counts_by_type(["add", "mail", "idle"])
    zeros = {(t, s): 0 for t in ("add", "mail", "idle") for s in JobStatus}
    assert counts == {**zeros, ("add", JobStatus.PENDING): 1, ("add", JobStatus.COMPLETED): 1, ("mail", JobStatus.PENDING): 1}


async def test_delete_finished_before(store: JobStore):
    ids = JobIds()
    jobs = [new_job(ids) for _ in range(5)]
    for job in jobs:
        await store.create(job)
    await store.update(jobs[0].id, {"status": JobStatus.COMPLETED, "completed_at": 100.0})
    await store.update(jobs[1].id, {"status": JobStatus.FAILED, "completed_at": 150.0})
    await store.update(jobs[2].id, {"status": JobStatus.CANCELLED, "completed_at": 300.0})
    await store.update(jobs[3].id, {"status": JobStatus.PROCESSING, "started_at": 50.0})
    assert await store.delete_finished_before(200.0) == 2
    assert await store.get(jobs[0].id) is None and await store.get(jobs[1].id) is None
    remaining = await store.list()
    assert {j.id for j in remaining.jobs} == {j.id for j in jobs[2:]} and remaining.total_count == 3
    assert (await store.counts())[JobStatus.COMPLETED] == 0


# -- the redis store's one-command paths (store and broker on one Redis) -------


@pytest.fixture
async def redis_store(redis_url):
    client = redis.asyncio.Redis.from_url(redis_url)
    s = RedisJobStore(StoreOptions(prefix="t:jobs"), app={keys.REDIS: client})
    await s.start()
    yield s, client
    await s.close()
    await client.aclose()


async def test_redis_create_adds_the_message_after_the_record(redis_store):
    store, client = redis_store
    job = new_job(JobIds(), args={"s": "é"})
    await store.create(job, send=StreamMessage("t:stream", b"the message"))
    assert await store.get(job.id) == job
    [(_entry, fields)] = await client.xrange("t:stream")
    assert fields == {b"data": b"the message", b"job": job.id.encode()}
    # Without a message: no stream entry.
    await store.create(new_job(JobIds()))
    assert await client.xlen("t:stream") == 1


async def test_redis_update_acknowledges_after_a_final_write_applied_or_not(redis_store):
    store, client = redis_store
    await client.xgroup_create("t:stream", "g", id="0", mkstream=True)
    job = new_job(JobIds(), status=JobStatus.PROCESSING)
    await store.create(job)
    first = await client.xadd("t:stream", {"data": "m", "job": job.id})
    second = await client.xadd("t:stream", {"data": "m", "job": job.id})
    await client.xreadgroup("g", "c", {"t:stream": ">"})
    assert (await client.xpending("t:stream", "g"))["pending"] == 2

    done, applied = await store.update(
        job.id, {"status": JobStatus.COMPLETED, "result": {"x": [1, "é"]}}, when={JobStatus.PROCESSING}, ack=StreamAck("t:stream", "g", [first])
    )
    assert applied and done is not None and done.status is JobStatus.COMPLETED and done.result == {"x": [1, "é"]}
    assert done == await store.get(job.id)
    assert (await client.xpending("t:stream", "g"))["pending"] == 1  # acknowledged ...
    assert [e for e, _ in await client.xrange("t:stream")] == [second]  # ... and deleted

    # Not applied (already final): the delivery is acknowledged all the same.
    again, applied = await store.update(job.id, {"status": JobStatus.FAILED}, when={JobStatus.PROCESSING}, ack=StreamAck("t:stream", "g", [second]))
    assert not applied and again is not None and again.status is JobStatus.COMPLETED
    assert (await client.xpending("t:stream", "g"))["pending"] == 0
    # An unknown job: nothing to update, the entries still acknowledged.
    assert await store.update("00000000-0000-7000-8000-000000000000", {"progress": 1}, ack=StreamAck("t:stream", "g", [])) == (None, False)


async def test_redis_writes_publish_the_record_as_its_event(redis_store):
    """``publish=``: the create and an applied update PUBLISH the job's JSON on the channel, in the same command."""
    import json

    from plugboard.plugins.jobs.events import encode

    store, client = redis_store
    pubsub = client.pubsub()
    await pubsub.subscribe("t:events")
    await pubsub.get_message(timeout=1)  # the subscribe confirmation

    async def next_event():
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
        return Job.from_dict(json.loads(message["data"])) if message else None

    job = new_job(JobIds(), args={"s": "é"})
    await store.create(job, send=StreamMessage("t:stream", b"m"), publish=("t:events", encode(job)))
    assert await next_event() == job
    done, applied = await store.update(job.id, {"status": JobStatus.PROCESSING, "progress": 5}, publish="t:events")
    assert applied and await next_event() == done == await store.get(job.id)
    # Not applied: nothing published.
    _, applied = await store.update(job.id, {"status": JobStatus.FAILED}, when={JobStatus.PENDING}, publish="t:events")
    assert not applied and await next_event() is None
    await pubsub.aclose()
