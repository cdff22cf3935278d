"""Start-up of the jobs plugin: settings checks, the store, the broker, the runner,
the API on ``app[JOBS]`` and (in the server) the cron loop.

``plugboard serve``, ``plugboard worker`` and ``plugboard scheduler`` all
build the app the same way and run this lifespan; the commands set
``app[ROLE]`` first, so only the server resumes in-process jobs and runs the
in-server scheduler.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator

from aiohttp import web

from plugboard import keys
from plugboard.errors import ConfigError, ConfigProblem
from plugboard.plugins.jobs import events
from plugboard.plugins.jobs.api import Jobs
from plugboard.plugins.jobs.brokers import BrokerOptions
from plugboard.cancelling import cancel_until_done
from plugboard.plugins.jobs.config import JobsConfig
from plugboard.plugins.jobs.keys import JOBS, ROLE
from plugboard.plugins.jobs.model import JobStatus
from plugboard.plugins.jobs.reconcile import ReconcileSettings, reconcile_forever
from plugboard.plugins.jobs.runner import RetrySettings, Runner
from plugboard.plugins.jobs.scheduler import JobRecordLastTicks, MemoryTickLock, RedisLastTicks, RedisTickLock, Scheduler, clock_ticks, collect_schedules, cron_problem
from plugboard.plugins.jobs.store import StoreOptions

logger = logging.getLogger("plugboard.jobs")


def redis_url(config: JobsConfig, app: web.Application) -> str | None:
    """``jobs.redis`` if set, else the core ``redis.url``."""
    return config.redis.resolved_url() or app[keys.CORE_CONFIG].redis.url


def check_config(app: web.Application, config: JobsConfig) -> None:
    """What the attrs class cannot see: provider and service names, Redis being configured, cron syntax."""
    settings = app[keys.SETTINGS]
    registry = app[keys.PROVIDERS]
    services = app[keys.SERVICES]
    problems: list[ConfigProblem] = []

    def problem(key: str, value: Any, reason: str) -> None:
        problems.append(ConfigProblem(key, value, reason, settings.source(key)))

    def collect(check: Any, *args: Any, key: str, **kwargs: Any) -> None:
        try:
            check(*args, key=key, source=settings.source(key), **kwargs)
        except ConfigError as e:
            problems.extend(e.problems)

    collect(registry.require, "broker", config.broker, key="jobs.broker")
    if config.store != "auto":
        collect(registry.require, "jobstore", config.store_name(), key="jobs.store")
    if redis_url(config, app) is None:
        if config.broker == "redis":
            problem("jobs.broker", config.broker, "the redis broker needs Redis: set redis.url (or REDIS_URL) or jobs.redis")
        elif config.store_name() == "redis":
            problem("jobs.store", config.store, "the redis job store needs Redis: set redis.url (or REDIS_URL) or jobs.redis")
    for key, moved, write in (
        ("jobs.email.smtp", config.email.smtp, "services: {mailer: {provider: smtp, host: ..., port: ...}}"),
        ("jobs.email.outbox", config.email.outbox, "services: {mailer: {provider: outbox, dir: ...}}"),
        ("jobs.email.options", config.email.options, "services: {mailer: {provider: NAME, ...options}}"),
        ("jobs.files.options", config.files.options, "services: {storage: {provider: NAME, ...options}}"),
    ):
        if moved is not None:
            problem(key, "...", f"moved to the core's named services: write `{write}` and remove {key}")
    if config.jobs.data_export or config.jobs.reports or config.jobs.file_processing:
        _require_service(services, registry, "storage", config.files.storage, "jobs.files.storage", collect, problem)
    if config.jobs.email:
        _require_service(services, registry, "mailer", config.email.mailer, "jobs.email.mailer", collect, problem)
    for i, schedule in enumerate(config.schedules):
        reason = cron_problem(schedule.cron)
        if reason:
            problem(f"jobs.schedules[{i}].cron", schedule.cron, reason)
    if problems:
        raise ConfigError(problems)


def _require_service(services: Any, registry: Any, kind: str, name: str, key: str, collect: Any, problem: Any) -> None:
    if name not in services.names(kind) and name in registry.names(kind):
        # The old meaning of this key: a provider name (``mailer: smtp``).
        problem(
            key,
            name,
            f"now names a {kind} service, not a provider: write `services: {{{kind}: {{provider: {name}, ...}}}}` "
            f"and remove {key} (it defaults to 'default')",
        )
        return
    collect(services.require, kind, name, key=key)


def make_scheduler(app: web.Application, config: JobsConfig, jobs: Jobs) -> Scheduler:
    schedules = collect_schedules(config.schedules, app[keys.SCHEDULES], jobs.runner.tasks)
    if config.broker == "redis":
        lock: Any = RedisTickLock(jobs.broker.redis, config.queue)
        last: Any = RedisLastTicks(jobs.broker.redis, config.queue)
    else:
        lock = MemoryTickLock()
        last = JobRecordLastTicks(jobs.store)
    return Scheduler(schedules, jobs.enqueue, lock, last)


async def resume_unfinished(jobs: Jobs) -> int:
    """Send again the jobs an in-process broker lost when the server stopped."""
    resumed = 0
    for status in (JobStatus.PENDING, JobStatus.PROCESSING, JobStatus.RETRYING):
        after = None
        while True:
            page = await jobs.store.list(status=status, first=100, after=after)
            for job in page.jobs:
                if job.type not in jobs.runner.tasks:
                    continue
                if status is JobStatus.RETRYING and job.run_at:
                    await jobs.broker.send_later(job.type, job.id, job.run_at)
                else:
                    await jobs.broker.send(job.type, job.id)
                resumed += 1
            if not page.has_next_page:
                break
            after = page.end_cursor
    return resumed


async def lifespan(app: web.Application, config: JobsConfig) -> AsyncIterator[None]:
    # taskiq logs every job it starts at INFO: too much for a busy worker.
    receiver_log = logging.getLogger("taskiq.receiver.receiver")
    if receiver_log.level == logging.NOTSET:
        receiver_log.setLevel(logging.WARNING)
    registry = app[keys.PROVIDERS]
    store = await registry.create(
        "jobstore",
        config.store_name(),
        StoreOptions(prefix=config.queue, redis_url=config.redis.resolved_url()),
        app=app,
        owner="jobs",
    )
    broker = await registry.create(
        "broker",
        config.broker,
        BrokerOptions(
            queue=config.queue,
            redis_url=redis_url(config, app),
            concurrency=config.concurrency,
            idle_timeout=config.idle_timeout,
            shutdown_grace=config.shutdown_grace,
        ),
        app=app,
        owner="jobs",
    )
    tasks = {name: fn for name, (_plugin, fn) in app[keys.TASKS].items()}
    runner = Runner(app, store, broker, tasks, RetrySettings(attempts=config.retries + 1, backoff=config.backoff, max_backoff=config.max_backoff))
    # Same Redis for records and messages: a final write carries its
    # acknowledgement (one Lua script), and the broker's other
    # acknowledgements share the store's command batching.
    if config.store_name() == "redis" and config.broker == "redis" and not config.redis.resolved_url():
        broker.batcher = store.batcher
        runner.settle_with_final = True
        runner.event_channel = events.redis_channel(app)
    runner.register()
    jobs = Jobs(app, store, broker, runner)
    scheduler = make_scheduler(app, config, jobs)  # checks the schedules in every process
    app[JOBS] = jobs
    in_server = app.get(ROLE) is None
    loop_task: asyncio.Task[None] | None = None
    if in_server and broker.in_process:
        resumed = await resume_unfinished(jobs)
        if resumed:
            logger.info("jobs: %d unfinished jobs sent again", resumed)
    if in_server and config.runs_scheduler_in_server():
        loop_task = asyncio.create_task(scheduler.run(clock_ticks()), name="plugboard.jobs.scheduler")
    reconcile_task: asyncio.Task[None] | None = None
    if app.get(ROLE) == "worker" and not broker.in_process:
        # Jobs whose message a crash lost (plugboard.plugins.jobs.reconcile).
        reconcile = ReconcileSettings(interval=config.reconcile_interval, grace=config.reconcile_grace)
        reconcile_task = asyncio.create_task(
            reconcile_forever(store, broker, runner.tasks, reconcile), name="plugboard.jobs.reconcile"
        )
    yield
    if reconcile_task is not None:
        await cancel_until_done([reconcile_task])
    if loop_task is not None:
        await cancel_until_done([loop_task])
    await jobs.close()
    # The registry closes the broker (running in-process jobs get
    # jobs.shutdown_grace) and then the store, after every lifespan.
