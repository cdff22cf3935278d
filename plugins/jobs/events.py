"""Job changes as events: one pubsub topic, ``jobs``, and a per-process hub for watchers.

Every change is published once, to ``jobs`` (payload ``Job.to_dict()``).
A process that has watchers holds one subscription to it and hands each
change to the watchers of that job and to those of every job: one publish
per change for the worker (a per-job topic as well would double the
worker's CPU per job), and one dict lookup per change for the process.

Without a pubsub provider (the realtime plugin is off) nothing is published;
a failed publish is logged, never raised: the record is the truth, the event
only a notification.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, AsyncIterator, Mapping

from plugboard.providers import pubsub
from plugboard.providers.subscriptions import encode_payload
from plugboard import keys
from plugboard.cancelling import cancel_until_done
from plugboard.plugins.jobs.errors import JobsError
from plugboard.plugins.jobs.model import Job

logger = logging.getLogger("plugboard.jobs")

TOPIC = "jobs"
#: Changes a watcher may fall behind by; older ones are dropped (a watcher
#: wants the job's latest state, and every change carries the whole job).
WATCHER_BUFFER = 256


async def publish(app: Mapping[Any, Any], job: Job) -> None:
    await pubsub.publish(app, TOPIC, job.to_dict(), what=f"change of job {job.id}")


def redis_channel(app: Mapping[Any, Any]) -> str | None:
    """The topic's Redis channel when the app's pubsub is the ``redis`` provider, else None.

    That pubsub is on the app's Redis (``keys.REDIS``): a job store on the same
    client can publish a change inside the script that writes it, saving the
    separate PUBLISH (and its encoding) on the enqueue and worker paths.
    """
    from plugboard.providers.redis_pubsub import RedisPubSub

    found = app.get(keys.PUBSUB)
    return found.channel(TOPIC) if isinstance(found, RedisPubSub) else None


def encode(job: Job) -> str:
    """The event of ``job``'s change as a provider sends it (for a PUBLISH inside a store's script)."""
    return encode_payload(job.to_dict())


class Watcher:
    """One watcher's queue of changes (of one job, or of all with ``job_id`` None)."""

    __slots__ = ("job_id", "queue")

    def __init__(self, job_id: str | None) -> None:
        self.job_id = job_id
        self.queue: asyncio.Queue[Job] = asyncio.Queue(WATCHER_BUFFER)

    def put(self, job: Job) -> None:
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(job)

    async def changes(self) -> AsyncIterator[Job]:
        while True:
            yield await self.queue.get()


class WatchHub:
    """The process's one subscription to ``jobs``, shared by its watchers."""

    def __init__(self, app: Mapping[Any, Any]) -> None:
        self.app = app
        self._watchers: dict[str | None, set[Watcher]] = {}
        self._count = 0
        self._reader: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def watch(self, job_id: str | None) -> AsyncIterator[AsyncIterator[Job]]:
        watcher = Watcher(job_id)
        self._watchers.setdefault(job_id, set()).add(watcher)
        self._count += 1
        try:
            await self._subscribed()
            yield watcher.changes()
        finally:
            self._count -= 1
            group = self._watchers.get(job_id)
            if group is not None:
                group.discard(watcher)
                if not group:
                    del self._watchers[job_id]
            if self._count == 0:
                await self.close()

    async def _subscribed(self) -> None:
        """Start the shared subscription if needed; return once it receives."""
        async with self._lock:
            if self._reader is None or self._reader.done():
                running = self.app.get(keys.PUBSUB)
                if running is None:
                    raise JobsError("watching jobs needs the pubsub, which is not running (the app has not started)")
                self._ready = asyncio.get_running_loop().create_future()
                self._reader = asyncio.create_task(self._read(running.subscribe(TOPIC)), name="plugboard.jobs.watch")
            ready = self._ready
        assert ready is not None
        await asyncio.shield(ready)

    async def _read(self, subscription: Any) -> None:
        try:
            wait_ready = getattr(subscription, "wait_ready", None)
            if wait_ready is not None:
                await wait_ready()
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
            async for payload in subscription:
                try:
                    job = Job.from_dict(payload)
                except (KeyError, TypeError, ValueError):
                    continue
                for watcher in (*self._watchers.get(job.id, ()), *self._watchers.get(None, ())):
                    watcher.put(job)
        except BaseException as e:
            if self._ready is not None and not self._ready.done():
                self._ready.set_exception(e if isinstance(e, Exception) else JobsError("job watching stopped"))
            raise
        finally:
            await subscription.close()

    async def close(self) -> None:
        if self._reader is not None:
            await cancel_until_done([self._reader])
            self._reader = None
