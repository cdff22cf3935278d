"""The jobs API, ``app[plugboard.plugins.jobs.keys.JOBS]``: what other plugins, the
GraphQL resolvers and the dashboard use.

::

    jobs = app[JOBS]
    job = await jobs.enqueue("process-image", {"key": "a.png", "width": 200})
    job = await jobs.get(job.id)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, AsyncIterator, Mapping

from aiohttp import web

from plugboard import keys
from plugboard.plugins.jobs import events
from plugboard.plugins.jobs.arguments import check_arguments
from plugboard.plugins.jobs.errors import JobArgumentsError, JobNotFound, JobsError, JobStateError, UnknownTaskError
from plugboard.plugins.jobs.ids import JobIds
from plugboard.plugins.jobs.model import FINISHED, Job, JobStatus
from plugboard.plugins.jobs.runner import Runner
from plugboard.plugins.jobs.store import JobPage, JobStore

MAX_PAGE = 100
_UNKNOWN = object()
_CANCELLABLE = frozenset({JobStatus.PENDING, JobStatus.RETRYING, JobStatus.PROCESSING})
_RETRYABLE = frozenset({JobStatus.FAILED, JobStatus.CANCELLED})


class Jobs:
    """Enqueue, inspect, retry, cancel and watch jobs (see the jobs contract)."""

    def __init__(self, app: web.Application, store: JobStore, broker: Any, runner: Runner) -> None:
        self.app = app
        self.store = store
        self.broker = broker
        self.runner = runner
        self._ids = JobIds()
        self._hub = events.WatchHub(app)
        self._channel: str | None | object = _UNKNOWN

    async def close(self) -> None:
        """Stop the watchers' shared subscription (at shutdown)."""
        await self._hub.close()

    def types(self) -> list[str]:
        """Registered task names."""
        return sorted(self.runner.tasks)

    def _task(self, type: str) -> Any:
        entry = self.runner.tasks.get(type) if isinstance(type, str) else None
        if entry is None:
            known = ", ".join(repr(t) for t in self.types()) or "none"
            raise UnknownTaskError(f"unknown task {type!r}; registered tasks: {known}")
        return entry

    async def enqueue(
        self, type: str, args: Mapping[str, Any] | None = None, *, attempts: int | None = None, owner: str | None = None
    ) -> Job:
        """Check the arguments, write the PENDING record, then send the job to the broker."""
        entry = self._task(type)
        stored = check_arguments(type, entry.arguments, args)
        if attempts is not None and (isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1):
            raise JobArgumentsError(f"attempts must be a positive integer, not {attempts!r}")
        now = time.time()
        job = Job(
            id=self._ids.new(),
            type=type,
            args=stored,
            max_attempts=self.runner.max_attempts(type, attempts),
            owner=owner,
            created_at=now,
            updated_at=now,
        )
        if self.runner.settle_with_final:
            # Store and broker on one Redis: the record and the message are
            # one command (a Lua script: the record exists before any worker
            # can read the message), so a crash cannot leave the job PENDING
            # unqueued. The PENDING event goes out in that command too when
            # the pubsub is on the same Redis; with one of this process only,
            # after it (no worker's event can reach a watcher before it).
            channel = self._event_channel()
            if channel is not None:
                await self.store.create(job, send=self.broker.message(type, job.id), publish=(channel, events.encode(job)))
                return job
            if self._events_stay_here():
                await self.store.create(job, send=self.broker.message(type, job.id))
                await events.publish(self.app, job)
                return job
        await self.store.create(job)
        await events.publish(self.app, job)
        await self.broker.send(type, job.id)
        return job

    def _event_channel(self) -> str | None:
        """The jobs topic's channel when the pubsub is the ``redis`` provider (on the app's Redis, the store's too)."""
        if self._channel is _UNKNOWN:
            self._channel = events.redis_channel(self.app)
        return self._channel  # type: ignore[return-value]

    def _events_stay_here(self) -> bool:
        """No pubsub, or one of this process only (``memory``, the core's default
        service): a worker's PROCESSING event cannot reach a watcher before this
        process's PENDING one, so that event may follow the queued message."""
        if self.app.get(keys.PUBSUB) is None:
            return True
        services = self.app.get(keys.SERVICES)
        return services is not None and services.provider("pubsub") == "memory"

    async def get(self, id: str) -> Job | None:
        return await self.store.get(id) if isinstance(id, str) else None

    async def list(
        self, *, status: JobStatus | None = None, type: str | None = None, first: int = 20, after: str | None = None
    ) -> JobPage:
        """Jobs newest first; ``after`` is a previous page's ``end_cursor``."""
        if isinstance(first, bool) or not isinstance(first, int) or not 0 <= first <= MAX_PAGE:
            raise JobsError(f"first must be between 0 and {MAX_PAGE}")
        return await self.store.list(status=JobStatus(status) if status is not None else None, type=type, first=first, after=after)

    async def counts(self) -> dict[JobStatus, int]:
        return await self.store.counts()

    async def counts_by_type(self) -> dict[tuple[str, JobStatus], int]:
        """Jobs per ``(type, status)``: every registered task, and any other type the store holds."""
        return await self.store.counts_by_type(self.types())

    async def _require(self, id: str) -> Job:
        job = await self.get(id)
        if job is None:
            raise JobNotFound(f"no job with id {id!r}")
        return job

    async def retry(self, id: str) -> Job:
        """A FAILED or CANCELLED job runs again, with a new attempts budget."""
        job = await self._require(id)
        if job.status not in _RETRYABLE:
            raise JobStateError(f"job {id} is {job.status.value}; only FAILED or CANCELLED jobs can be retried")
        budget = self.runner.max_attempts(job.type) if job.type in self.runner.tasks else 1
        now = time.time()
        changes = {
            "status": JobStatus.PENDING,
            "max_attempts": job.attempts + budget,
            "error": None,
            "result": None,
            "progress": 0,
            "completed_at": None,
            "run_at": None,
            "updated_at": now,
        }
        if self.runner.settle_with_final and self._events_stay_here() and job.type in self.runner.tasks:
            # As in enqueue: the record goes PENDING and its message is queued
            # in one script, so a crash cannot leave it PENDING unqueued.
            updated, applied = await self.store.update(id, changes, when=_RETRYABLE, send=self.broker.message(job.type, id))
            if updated is None:
                raise JobNotFound(f"no job with id {id!r}")
            if not applied:
                raise JobStateError(f"job {id} is {updated.status.value}; only FAILED or CANCELLED jobs can be retried")
            await events.publish(self.app, updated)
            return updated
        # Otherwise a crash between the update and the send is repaired by
        # the workers' reconcile (plugboard.plugins.jobs.reconcile).
        updated, applied = await self.store.update(id, changes, when=_RETRYABLE)
        if updated is None:
            raise JobNotFound(f"no job with id {id!r}")
        if not applied:
            raise JobStateError(f"job {id} is {updated.status.value}; only FAILED or CANCELLED jobs can be retried")
        self._task(updated.type)
        await events.publish(self.app, updated)
        await self.broker.send(updated.type, updated.id)
        return updated

    async def cancel(self, id: str) -> Job:
        """PENDING/RETRYING: cancelled at once; PROCESSING: the task stops at its next progress report."""
        now = time.time()
        job, applied = await self.store.update(
            id, {"status": JobStatus.CANCELLED, "completed_at": now, "updated_at": now}, when=_CANCELLABLE
        )
        if job is None:
            raise JobNotFound(f"no job with id {id!r}")
        if not applied:
            raise JobStateError(f"job {id} is {job.status.value}; only PENDING, RETRYING or PROCESSING jobs can be cancelled")
        await events.publish(self.app, job)
        return job

    def watch(self, id: str | None = None) -> contextlib.AbstractAsyncContextManager[AsyncIterator[Job]]:
        """Live changes of one job (``id``) or of every job (None).

        :raises JobsError: on entry, when no pubsub provider runs.
        """
        return self._hub.watch(id)

    async def delete_finished_before(self, ts: float) -> int:
        """Remove COMPLETED, FAILED and CANCELLED jobs that finished before ``ts`` (Unix seconds)."""
        return await self.store.delete_finished_before(ts)

    async def wait(self, id: str, *, timeout: float = 10.0, statuses: frozenset[JobStatus] = FINISHED) -> Job:
        """Poll until the job reaches one of ``statuses`` (tests, scripts)."""
        deadline = time.monotonic() + timeout
        while True:
            job = await self._require(id)
            if job.status in statuses:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {id} is still {job.status.value}")
            await asyncio.sleep(0.02)
