"""The ``memory`` broker: taskiq's InMemoryBroker, jobs run inside the server.

The embedded default: nothing outside the process. At most ``concurrency``
jobs run at once (InMemoryBroker itself starts every kicked message at
once); retries wait on the event loop. At shutdown running jobs get
``shutdown_grace`` seconds, then are cancelled; their records stay
unfinished and are sent again at the next start (see the jobs lifespan).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from taskiq import InMemoryBroker
from taskiq.exceptions import UnknownTaskError as TaskiqUnknownTask
from taskiq.message import BrokerMessage

from plugboard.cancelling import cancel_until_done
from plugboard.plugins.jobs.brokers import BrokerOptions, encode

logger = logging.getLogger("plugboard.jobs.broker")


class MemoryBroker(InMemoryBroker):
    """:mod:`broker <plugboard.plugins.jobs.brokers>` ``memory``: in-process, not persistent.

    :param options: ``concurrency`` and ``shutdown_grace`` are used.
    """

    in_process = True

    def __init__(self, options: BrokerOptions | None = None) -> None:
        self.options = options or BrokerOptions()
        super().__init__(max_async_tasks=self.options.concurrency, sync_tasks_pool_size=1)
        self._slots = asyncio.Semaphore(self.options.concurrency)
        self._timers: set[asyncio.TimerHandle] = set()
        self._jobs: set[asyncio.Task[Any]] = set()
        self._closing = False

    async def start(self) -> None:
        await self.startup()

    async def close(self) -> None:
        # Jobs still waiting for a slot stay PENDING: sent again at the next start.
        self._closing = True
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        running = set(self._jobs)
        if running:
            _, pending = await asyncio.wait(running, timeout=self.options.shutdown_grace)
            await cancel_until_done(pending, every=0.5)
        await self.shutdown()

    async def check(self) -> None:
        return None

    async def kick(self, message: BrokerMessage) -> None:
        if self.find_task(message.task_name) is None:
            raise TaskiqUnknownTask(task_name=message.task_name)
        task = asyncio.create_task(self._run(message.message), name=f"plugboard.jobs.{message.task_name}")
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def _run(self, data: bytes) -> None:
        async with self._slots:
            if not self._closing:
                await self.receiver.callback(message=data)

    async def send(self, task: str, job_id: str) -> None:
        await self.kick(encode(self, task, job_id))

    async def send_later(self, task: str, job_id: str, at: float) -> None:
        def fire() -> None:
            self._timers.discard(timer)
            kicked = asyncio.ensure_future(self.send(task, job_id))
            self._jobs.add(kicked)
            kicked.add_done_callback(self._jobs.discard)

        timer = asyncio.get_running_loop().call_later(max(0.0, at - time.time()), fire)
        self._timers.add(timer)

    async def settle(self, job_id: str) -> None:
        return None

    async def wait_idle(self) -> None:
        """Wait until no job runs or waits to (tests)."""
        while self._jobs:
            await asyncio.wait(set(self._jobs))
