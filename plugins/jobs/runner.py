"""The runner: every plugin task as a taskiq task that drives its job record.

Each task from ``app[plugboard.keys.TASKS]`` is registered on the broker
under its own name as a small taskiq task taking the job id. Per delivery
(one attempt):

1. the record goes PROCESSING with ``attempts + 1`` and ``started_at`` —
   unless it is already final (a redelivery of a finished or cancelled
   job): then the delivery is settled and nothing runs;
2. the task runs with the job's arguments (and a :class:`JobContext` as
   ``job`` when it declares that parameter);
3. COMPLETED with its result and progress 100; or on an exception:
   PermanentError, a type the task's ``@retry(permanent=...)`` names, or the
   last attempt -> FAILED with ``"Type: message"``; otherwise RETRYING with
   ``run_at = now + min(max_backoff, backoff * 2**(attempt-1)) * random()``
   (full jitter) and the broker's ``send_later``;
4. the delivery is settled (acknowledged) — not when the worker is being
   stopped mid-job (CancelledError): then the message stays pending and
   another worker takes it over.

A job cancelled while it runs stays CANCELLED: the final write is
conditional on PROCESSING, and ``job.progress()`` raises JobCancelled.
Every applied change is published (plugboard.plugins.jobs.events).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from typing import Any, Awaitable, Callable, Mapping

import attrs
import redis.exceptions
from aiohttp import web

from plugboard.plugins.jobs import events
from plugboard.plugins.jobs.arguments import TaskArguments, takes_context
from plugboard.plugins.jobs.errors import JobCancelled
from plugboard.plugins.jobs.model import Job, JobStatus
from plugboard.plugins.jobs.store import JobStore
from plugboard.tasks import CONTEXT_PARAMETER, PermanentError, RetryPolicy, retry_policy

logger = logging.getLogger("plugboard.jobs")

_STARTABLE = frozenset({JobStatus.PENDING, JobStatus.RETRYING, JobStatus.PROCESSING})
_RUNNING = frozenset({JobStatus.PROCESSING})
#: The store or broker cannot be reached (Redis restarting): a job's outcome is kept and written again.
_UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


@attrs.define(frozen=True, kw_only=True)
class RetrySettings:
    """The runner-wide defaults (``jobs.retries``, ``backoff``, ``max_backoff``)."""

    attempts: int = 4
    backoff: float = 1.0
    max_backoff: float = 300.0


@attrs.define(frozen=True)
class TaskEntry:
    fn: Callable[..., Awaitable[Any]]
    policy: RetryPolicy
    wants_context: bool
    #: Its parameters, for checking a job's arguments at enqueue.
    arguments: TaskArguments


class JobContext:
    """The :class:`plugboard.tasks.TaskContext` a running task gets as ``job``."""

    __slots__ = ("id", "type", "attempt", "app", "_runner", "_last", "_announced")

    def __init__(self, runner: "Runner", job: Job, announced: Awaitable[None] | None) -> None:
        self.id = job.id
        self.type = job.type
        self.attempt = job.attempts
        self.app = runner.app
        self._runner = runner
        self._last = job.progress
        #: The PROCESSING event, published before any progress event.
        self._announced = announced

    async def progress(self, percent: float) -> None:
        """Record and publish progress (0-100); raises JobCancelled once the job was cancelled."""
        value = int(max(0, min(100, percent)))
        job, applied = await self._runner.store.update(
            self.id, {"progress": value, "updated_at": time.time()}, when=_RUNNING
        )
        if not applied:
            raise JobCancelled(f"job {self.id} is {job.status.value if job else 'gone'}")
        self._last = value
        if self._announced is not None:
            await self._announced
        await events.publish(self._runner.app, job)


class Runner:
    """Runs deliveries of jobs: one per app (server or worker)."""

    def __init__(self, app: web.Application, store: JobStore, broker: Any, tasks: Mapping[str, Callable[..., Any]], settings: RetrySettings) -> None:
        self.app = app
        self.store = store
        self.broker = broker
        self.settings = settings
        self.tasks = {
            name: TaskEntry(fn, retry_policy(fn), takes_context(fn), TaskArguments.of(fn)) for name, fn in tasks.items()
        }
        #: Store and broker share one Redis: a final state and the
        #: acknowledgement are one command (the store's update with ``ack``).
        self.settle_with_final = False
        #: With ``settle_with_final``, the pubsub's channel when it is on that
        #: Redis too (set at start-up): the PROCESSING and final writes publish
        #: their events themselves (see ``events.redis_channel``).
        self.event_channel: str | None = None
        #: The asyncio tasks running deliveries right now (a stopping worker cancels what outlives its grace).
        self.active: set[asyncio.Task[Any]] = set()

    def register(self) -> None:
        """One taskiq task per plugin task, on the broker."""
        for name in self.tasks:
            self.broker.register_task(self._taskiq_task(name), task_name=name)

    def _taskiq_task(self, name: str) -> Callable[[str], Awaitable[None]]:
        async def run_job(job_id: str) -> None:
            await self.run(name, job_id)

        run_job.__name__ = f"run_{name}"
        return run_job

    def max_attempts(self, name: str, attempts: int | None = None) -> int:
        if attempts is not None:
            return attempts
        return self.tasks[name].policy.attempts or self.settings.attempts

    def delay(self, policy: RetryPolicy, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max_backoff, backoff * 2**(attempt-1)))."""
        backoff = self.settings.backoff if policy.backoff is None else policy.backoff
        ceiling = self.settings.max_backoff if policy.max_backoff is None else policy.max_backoff
        return min(ceiling, backoff * 2 ** (attempt - 1)) * random.random()

    async def run(self, name: str, job_id: str) -> None:
        """One delivery of one job (see the module docstring)."""
        current = asyncio.current_task()
        if current is not None:
            self.active.add(current)
        try:
            await self._run(name, job_id)
        finally:
            self.active.discard(current)  # type: ignore[arg-type]

    async def _run(self, name: str, job_id: str) -> None:
        entry = self.tasks.get(name)
        now = time.time()
        changes = {"status": JobStatus.PROCESSING, "started_at": now, "updated_at": now, "run_at": None}
        if self.event_channel is not None:
            job, applied = await self.store.update(job_id, changes, when=_STARTABLE, add_attempt=True, publish=self.event_channel)
        else:
            job, applied = await self.store.update(job_id, changes, when=_STARTABLE, add_attempt=True)
        if job is None or not applied or entry is None:
            if job is None:
                logger.warning("jobs: no record for job %s (%s); dropped", job_id, name)
            elif entry is None and await self._fail(job, f"UnknownTaskError: no task {name!r} in this process"):
                return
            await self.broker.settle(job_id)
            return
        if job.attempts > job.max_attempts:
            # A redelivery (the worker that ran the last attempt died: killed,
            # out of memory, or the job itself took it down): running it again
            # could take this worker down too, for ever. No extra round trip:
            # the PROCESSING write above returned the counts.
            message = (
                f"WorkerLost: the worker running attempt {job.attempts - 1} of {job.max_attempts} stopped "
                "before the job finished; no attempts left"
            )
            logger.warning("jobs: job %s (%s) failed: %s", job.id, job.type, message)
            if not await self._fail(job, message):
                await _persist(lambda: self.broker.settle(job_id))
            return
        # The task starts without waiting for its PROCESSING event to go out
        # (a round trip with live updates on); the job's next event waits for it.
        # On one Redis with the pubsub, the write above has published it.
        announced = None if self.event_channel is not None else asyncio.ensure_future(events.publish(self.app, job))
        kwargs = dict(job.args)
        if entry.wants_context:
            kwargs[CONTEXT_PARAMETER] = JobContext(self, job, announced)
        settled = False
        try:
            result = await entry.fn(**kwargs)
        except JobCancelled:
            pass  # the record says CANCELLED already
        except Exception as e:  # noqa: BLE001 - any task error is the job's outcome
            settled = await self._failed_attempt(job, entry, e, announced)
        else:
            settled = await self._completed(job, result, announced)
        # Not reached on CancelledError (the worker is stopping): the
        # message stays pending and is delivered again.
        if not settled:
            await _persist(lambda: self.broker.settle(job_id))

    async def _final(self, job: Job, changes: dict[str, Any]) -> tuple[Job | None, bool, bool]:
        """Write a final state (conditional on PROCESSING); (job, applied, settled)."""
        return await _persist(lambda: self._write_final(job, changes))

    async def _write_final(self, job: Job, changes: dict[str, Any]) -> tuple[Job | None, bool, bool]:
        if not self.settle_with_final:
            return (*await self.store.update(job.id, changes, when=_RUNNING), False)
        # One command: the final write, then the acknowledgement (a Lua
        # script on the Redis both use; atomic, so never one without the other).
        entries = self.broker.held(job.id)
        ack = self.broker.acknowledgement(entries)
        if self.event_channel is not None:
            done, applied = await self.store.update(job.id, changes, when=_RUNNING, ack=ack, publish=self.event_channel)
        else:
            done, applied = await self.store.update(job.id, changes, when=_RUNNING, ack=ack)
        self.broker.acknowledged(entries)
        return done, applied, True

    async def _completed(self, job: Job, result: Any, announced: Awaitable[None] | None = None) -> bool:
        """Write COMPLETED; its event goes out after ``announced`` (the job's
        PROCESSING event), while the write need not wait for it: both share
        one round trip."""
        try:
            result = json.loads(json.dumps(result, allow_nan=False))
        except (TypeError, ValueError) as e:
            return await self._fail(job, f"TypeError: the task's result is not a JSON value: {e}", announced)
        now = time.time()
        done, applied, settled = await self._final(
            job, {"status": JobStatus.COMPLETED, "result": result, "progress": 100, "error": None, "completed_at": now, "updated_at": now}
        )
        if applied and self.event_channel is None:
            if announced is not None:
                await announced
            await events.publish(self.app, done)
        return settled

    async def _failed_attempt(self, job: Job, entry: TaskEntry, error: Exception, announced: Awaitable[None] | None = None) -> bool:
        message = f"{type(error).__name__}: {error}"
        permanent = isinstance(error, PermanentError) or (entry.policy.permanent and isinstance(error, entry.policy.permanent))
        if permanent or job.attempts >= job.max_attempts:
            logger.info("jobs: job %s (%s) failed: %s", job.id, job.type, message)
            return await self._fail(job, message, announced)
        now = time.time()
        run_at = now + self.delay(entry.policy, job.attempts)
        retrying, applied = await _persist(
            lambda: self.store.update(job.id, {"status": JobStatus.RETRYING, "error": message, "run_at": run_at, "updated_at": now}, when=_RUNNING)
        )
        if applied:
            logger.info("jobs: job %s (%s) attempt %d failed (%s); retry in %.2fs", job.id, job.type, job.attempts, message, run_at - now)
            await _persist(lambda: self.broker.send_later(job.type, job.id, run_at))
            if announced is not None:
                await announced
            await events.publish(self.app, retrying)
        return False

    async def _fail(self, job: Job, message: str, announced: Awaitable[None] | None = None) -> bool:
        now = time.time()
        failed, applied, settled = await self._final(
            job, {"status": JobStatus.FAILED, "error": message, "completed_at": now, "updated_at": now}
        )
        if applied and self.event_channel is None:
            if announced is not None:
                await announced
            await events.publish(self.app, failed)
        return settled


async def _persist(write: Callable[[], Awaitable[Any]]) -> Any:
    """``await write()``, again and again while Redis cannot be reached: a job
    that ended while Redis restarts keeps its outcome instead of staying
    PROCESSING. A stopping worker cancels this like any running job (the
    delivery then stays pending and is run again elsewhere).
    """
    delay = 0.1
    while True:
        try:
            return await write()
        except _UNREACHABLE as e:
            logger.warning("jobs: cannot record a job's outcome (%s); again in %.1fs", e, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
