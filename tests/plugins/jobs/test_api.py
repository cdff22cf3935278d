"""The jobs API (``app[JOBS]``) with the embedded defaults: memory broker, records store."""

from __future__ import annotations

import asyncio

import pytest

from plugboard import keys
from plugboard.errors import ConfigError
from plugboard.plugins.jobs.errors import JobArgumentsError, JobNotFound, JobsError, JobStateError, UnknownTaskError
from plugboard.plugins.jobs.keys import JOBS
from plugboard.plugins.jobs.model import JobStatus


async def test_enqueue_runs_the_task_and_keeps_its_result(jobs_app):
    jobs = jobs_app[JOBS]
    job = await jobs.enqueue("add", {"a": 2, "b": 3})
    assert job.status is JobStatus.PENDING and job.max_attempts == 4  # retries 3 + 1
    done = await jobs.wait(job.id)
    assert (done.status, done.result, done.progress, done.attempts) == (JobStatus.COMPLETED, 5, 100, 1)
    assert done.started_at and done.completed_at >= done.started_at >= done.created_at


async def test_unknown_task_and_bad_arguments_fail_at_enqueue(jobs_app):
    jobs = jobs_app[JOBS]
    with pytest.raises(UnknownTaskError, match="unknown task 'nope'; registered tasks: .*'add'"):
        await jobs.enqueue("nope")
    bad = [
        ({"a": "x"}, "'a' must be int, not str"),
        ({"a": True}, "'a' must be int, not bool"),
        ({}, "missing a required argument: 'a'"),
        ({"a": 1, "c": 2}, "unexpected keyword argument 'c'"),
        ({"a": float("nan")}, "must be JSON values"),
        ({"a": object()}, "must be JSON values"),
        ({"job": 1}, "'job' is not an argument"),
    ]
    for args, message in bad:
        with pytest.raises(JobArgumentsError, match=message):
            await jobs.enqueue("add", args)
    with pytest.raises(JobArgumentsError, match="attempts"):
        await jobs.enqueue("add", {"a": 1}, attempts=0)
    assert (await jobs.list()).total_count == 0  # nothing was queued


async def test_progress_is_recorded_and_published(jobs_app):
    jobs = jobs_app[JOBS]
    async with jobs.watch() as changes:
        job = await jobs.enqueue("sleep", {"seconds": 0.05, "steps": 4})
        seen = []
        async for change in changes:
            seen.append((change.status, change.progress))
            if change.status.finished:
                break
    assert seen[0] == (JobStatus.PENDING, 0)
    assert seen[1] == (JobStatus.PROCESSING, 0)
    assert [p for s, p in seen if s is JobStatus.PROCESSING] == [0, 25, 50, 75, 100]
    assert seen[-1] == (JobStatus.COMPLETED, 100)
    assert (await jobs.get(job.id)).result["slept"] == 0.05


async def test_watch_one_job(jobs_app):
    jobs = jobs_app[JOBS]
    other = await jobs.enqueue("add", {"a": 1})
    job = await jobs.enqueue("sleep", {"seconds": 0.05})
    async with jobs.watch(job.id) as changes:
        statuses = []
        async for change in changes:
            assert change.id == job.id
            statuses.append(change.status)
            if change.status.finished:
                break
    assert statuses[-1] is JobStatus.COMPLETED
    await jobs.wait(other.id)


async def test_watchers_share_one_subscription_while_any_is_open(jobs_app):
    jobs = jobs_app[JOBS]
    hub = jobs._hub
    # Long enough to still be running once the watchers are in.
    first = await jobs.enqueue("sleep", {"seconds": 0.5})
    second = await jobs.enqueue("sleep", {"seconds": 0.5})
    async with jobs.watch(first.id) as one, jobs.watch(second.id) as two, jobs.watch() as every:
        reader = hub._reader
        assert reader is not None and not reader.done()

        async def until_finished(changes, ids):
            seen, finished = [], set()
            async for change in changes:
                seen.append(change.id)
                if change.status.finished:
                    finished.add(change.id)
                if finished >= ids:
                    return seen

        ones, twos, alls = await asyncio.wait_for(
            asyncio.gather(
                until_finished(one, {first.id}), until_finished(two, {second.id}), until_finished(every, {first.id, second.id})
            ),
            10,
        )
        assert set(ones) == {first.id} and set(twos) == {second.id}
        assert set(alls) == {first.id, second.id}
        assert hub._reader is reader  # one subscription for all three
    # The last watcher gone: the shared subscription is closed.
    assert hub._reader is None and reader.done()


async def test_retry_with_backoff_then_success(jobs_app):
    jobs = jobs_app[JOBS]
    async with jobs.watch() as changes:
        job = await jobs.enqueue("flaky")
        assert job.max_attempts == 3  # the task's @retry
        retrying = []
        async for change in changes:
            if change.status is JobStatus.RETRYING:
                retrying.append(change)
            if change.status.finished:
                break
    assert [r.error for r in retrying] == ["ValueError: attempt 1 failed", "ValueError: attempt 2 failed"]
    # Full jitter under the task's backoff (0.05s, doubling, at most 0.1s).
    assert 0 <= retrying[0].run_at - retrying[0].updated_at <= 0.05
    assert 0 <= retrying[1].run_at - retrying[1].updated_at <= 0.1
    done = await jobs.get(job.id)
    assert (done.status, done.attempts, done.result, done.error) == (JobStatus.COMPLETED, 3, {"attempt": 3}, None)


async def test_retries_exhausted_fail_the_job_with_its_error(jobs_app):
    jobs = jobs_app[JOBS]
    job = await jobs.wait((await jobs.enqueue("always-fails")).id)
    assert (job.status, job.attempts, job.max_attempts, job.error) == (JobStatus.FAILED, 2, 2, "RuntimeError: boom 2")
    assert job.completed_at is not None


async def test_enqueue_attempts_overrides_the_policy(jobs_app):
    jobs = jobs_app[JOBS]
    job = await jobs.wait((await jobs.enqueue("always-fails", attempts=1)).id)
    assert (job.status, job.attempts) == (JobStatus.FAILED, 1)


async def test_permanent_errors_fail_after_one_attempt(jobs_app):
    jobs = jobs_app[JOBS]
    a = await jobs.wait((await jobs.enqueue("permanent")).id)
    assert (a.status, a.attempts, a.error) == (JobStatus.FAILED, 1, "PermanentError: cannot be done")
    b = await jobs.wait((await jobs.enqueue("permanent", {"kind": "key"})).id)
    assert (b.status, b.attempts, b.error) == (JobStatus.FAILED, 1, "KeyError: 'missing'")


async def test_a_result_that_is_not_json_fails_the_job(jobs_app):
    jobs = jobs_app[JOBS]
    job = await jobs.wait((await jobs.enqueue("bad-result")).id)
    assert job.status is JobStatus.FAILED
    assert job.error.startswith("TypeError: the task's result is not a JSON value")


async def test_cancel_a_running_job_stops_it_at_its_next_progress(jobs_app):
    jobs = jobs_app[JOBS]
    job = await jobs.enqueue("until-cancelled")
    await jobs.wait(job.id, statuses=frozenset({JobStatus.PROCESSING}))
    cancelled = await jobs.cancel(job.id)
    assert cancelled.status is JobStatus.CANCELLED
    broker = jobs.broker
    await asyncio.wait_for(broker.wait_idle(), 2)  # the task ended
    assert (await jobs.get(job.id)).status is JobStatus.CANCELLED


async def test_cancel_a_pending_job_and_retry_it(make_jobs_app, start_app):
    app = await start_app(make_jobs_app({"jobs": {"concurrency": 1}}))
    jobs = app[JOBS]
    blocker = await jobs.enqueue("sleep", {"seconds": 0.2})
    queued = await jobs.enqueue("add", {"a": 1})
    assert (await jobs.cancel(queued.id)).status is JobStatus.CANCELLED
    await jobs.wait(blocker.id)
    await jobs.broker.wait_idle()
    assert (await jobs.get(queued.id)).status is JobStatus.CANCELLED  # skipped when its turn came
    with pytest.raises(JobStateError):
        await jobs.cancel(queued.id)
    again = await jobs.retry(queued.id)
    assert again.status is JobStatus.PENDING
    done = await jobs.wait(queued.id)
    assert (done.status, done.result) == (JobStatus.COMPLETED, 2)


async def test_retry_a_failed_job_renews_its_attempts(jobs_app):
    jobs = jobs_app[JOBS]
    job = await jobs.wait((await jobs.enqueue("always-fails")).id)
    with pytest.raises(JobStateError, match="only FAILED or CANCELLED"):
        await jobs.retry((await jobs.wait((await jobs.enqueue("add", {"a": 1})).id)).id)
    retried = await jobs.retry(job.id)
    assert (retried.status, retried.max_attempts, retried.error) == (JobStatus.PENDING, 4, None)
    again = await jobs.wait(job.id)
    assert (again.status, again.attempts) == (JobStatus.FAILED, 4)


async def test_unknown_ids(jobs_app):
    jobs = jobs_app[JOBS]
    assert await jobs.get("00000000-0000-7000-8000-000000000000") is None
    for action in (jobs.retry, jobs.cancel):
        with pytest.raises(JobNotFound):
            await action("00000000-0000-7000-8000-000000000000")


async def test_list_counts_and_types(jobs_app):
    jobs = jobs_app[JOBS]
    ids = [(await jobs.enqueue("add", {"a": i})).id for i in range(5)]
    failed = await jobs.wait((await jobs.enqueue("permanent")).id)
    for job_id in ids:
        await jobs.wait(job_id)
    page = await jobs.list(first=2)
    assert [j.id for j in page.jobs] == [failed.id, ids[4]] and page.has_next_page and page.total_count == 6
    page2 = await jobs.list(first=10, after=page.end_cursor)
    assert [j.id for j in page2.jobs] == ids[3::-1] and not page2.has_next_page
    by_type = await jobs.list(type="add", status=JobStatus.COMPLETED)
    assert by_type.total_count == 5
    assert (await jobs.list(status=JobStatus.FAILED)).jobs[0].id == failed.id
    counts = await jobs.counts()
    assert counts[JobStatus.COMPLETED] == 5 and counts[JobStatus.FAILED] == 1 and set(counts) == set(JobStatus)
    assert "add" in jobs.types() and "sleep" in jobs.types()
    with pytest.raises(JobsError):
        await jobs.list(first=1000)


async def test_delete_finished_before(jobs_app):
    jobs = jobs_app[JOBS]
    done = await jobs.wait((await jobs.enqueue("add", {"a": 1})).id)
    assert await jobs.delete_finished_before(done.completed_at) == 0
    assert await jobs.delete_finished_before(done.completed_at + 1) == 1
    assert await jobs.get(done.id) is None


async def test_unfinished_jobs_resume_when_the_server_starts_again(make_jobs_app, start_app, tmp_path):
    app = await start_app(make_jobs_app({"jobs": {"concurrency": 1}}))
    jobs = app[JOBS]
    await jobs.enqueue("sleep", {"seconds": 0.3})
    waiting = await jobs.enqueue("add", {"a": 41})
    await jobs.wait(waiting.id, statuses=frozenset({JobStatus.PENDING}))
    jobs.broker.options = type(jobs.broker.options)(shutdown_grace=0.01)
    await app.shutdown()
    await app.cleanup()
    again = await start_app(make_jobs_app({"jobs": {"concurrency": 1}}))
    done = await again[JOBS].wait(waiting.id)
    assert done.result == 42


def test_config_errors(make_jobs_app):
    with pytest.raises(ConfigError) as e:
        make_jobs_app({"jobs": {"broker": "redis"}})
    assert "jobs.broker = 'redis'" in str(e.value) and "needs Redis" in str(e.value)
    with pytest.raises(ConfigError, match="unknown broker provider; available: memory, redis"):
        make_jobs_app({"jobs": {"broker": "rabbit"}})
    with pytest.raises(ConfigError, match=r"jobs.schedules\[0\].cron = '61 \* \* \* \*'.*out of range"):
        make_jobs_app({"jobs": {"schedules": [{"task": "add", "cron": "61 * * * *"}]}})
    with pytest.raises(ConfigError, match=r"jobs.files.storage = 's4'.*no storage service of that name \(configured: default\)"):
        make_jobs_app({"jobs": {"files": {"storage": "s4"}}})
    with pytest.raises(ConfigError, match=r"jobs.email.mailer = 'smpt'.*no mailer service of that name \(configured: default\)"):
        make_jobs_app({"jobs": {"email": {"mailer": "smpt"}}})
    # The keys' old meaning (a provider name) and the moved provider options say what to write.
    with pytest.raises(ConfigError, match=r"jobs.email.mailer = 'smtp'.*write `services: \{mailer: \{provider: smtp, ...\}\}`"):
        make_jobs_app({"jobs": {"email": {"mailer": "smtp"}}})
    with pytest.raises(ConfigError, match=r"jobs.email.smtp = '...'.*moved to the core's named services: write `services: \{mailer: \{provider: smtp"):
        make_jobs_app({"jobs": {"email": {"smtp": {"host": "mail.example.com"}}}})
    # A type that is switched off does not need its provider.
    make_jobs_app({"jobs": {"email": {"mailer": "smpt"}, "jobs": {"email": False}}})
    with pytest.raises(ConfigError, match="jobs.concurrency"):
        make_jobs_app({"jobs": {"concurrency": 0}})
    with pytest.raises(ConfigError, match="jobs.backoff"):
        make_jobs_app({"jobs": {"backoff": "soon"}})
    app = make_jobs_app({"jobs": {"maxBackoff": "2m", "scheduler": "true", "redis": {"host": "h", "password": "p"}}})
    config = app[keys.PLUGIN_CONFIGS]["jobs"]
    assert config.max_backoff == 120 and config.scheduler is True and config.redis.resolved_url() == "redis://:p@h:6379/0"


def test_the_seeds_queue_variables_reach_the_jobs_settings(tmp_path):
    # The shipped settings.yaml maps QUEUE_CONCURRENCY and QUEUE_DASHBOARD onto jobs.*.
    from pathlib import Path

    from plugboard.app import create_app
    from plugboard.settings import Settings

    shipped = Path(__file__).resolve().parents[3] / "settings.yaml"
    (tmp_path / "settings.yaml").write_text(shipped.read_text())
    environ = {"QUEUE_CONCURRENCY": "4", "QUEUE_DASHBOARD": "true", "PLUGBOARD_SERVER__DATA_DIR": str(tmp_path / "var")}
    settings = Settings.load(tmp_path, environ=environ)
    config = create_app(settings).get(keys.PLUGIN_CONFIGS)["jobs"]
    assert (config.concurrency, config.dashboard) == (4, True)
    assert settings.source("jobs.concurrency") == "env QUEUE_CONCURRENCY"
    with pytest.raises(ConfigError, match="jobs.concurrency = 'many'.*env QUEUE_CONCURRENCY"):
        create_app(Settings.load(tmp_path, environ={**environ, "QUEUE_CONCURRENCY": "many"}))


async def test_on_one_redis_the_pending_event_goes_out_in_the_enqueue_command(make_jobs_app, start_app, redis_url):
    """Store, broker and pubsub on one Redis: the create script publishes the PENDING event itself, before the message."""
    settings = {"redis": {"url": redis_url}, "services": {"pubsub": {"provider": "redis"}}, "jobs": {"broker": "redis"}}
    jobs = (await start_app(make_jobs_app(settings)))[JOBS]
    assert jobs._event_channel() is not None
    async with jobs.watch() as changes:
        job = await jobs.enqueue("add", {"a": 1, "b": 2}, owner="alice")
        change = await asyncio.wait_for(anext(changes), 5)
    assert change.to_dict() == job.to_dict() and change.status is JobStatus.PENDING
