"""Coalescing Redis commands of concurrent callers into one pipeline per round trip.

A worker running ten jobs at once issues ten record updates and ten
acknowledgements at about the same moment, and publishes an event for each;
sent one by one, each costs a round trip and its share of redis-py's
per-call overhead (for a worker, most of its CPU per job). :class:`Batcher`
sends whatever callers queued while the previous pipeline was in flight as
the next pipeline: an idle caller waits no longer than before (its command
goes out at once), a busy worker pays one round trip per batch.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio


class Batcher:
    """``await batcher.call("XACK", key, group, id)``: the command's reply, sent in a shared pipeline."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.client = client
        self._queue: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._sending: asyncio.Task[None] | None = None

    async def call(self, *command: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((command, future))
        if self._sending is None:
            self._sending = asyncio.create_task(self._send())
        return await future

    async def _send(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                pipe = self.client.pipeline(transaction=False)
                for command, _ in batch:
                    pipe.execute_command(*command)
                try:
                    replies = await pipe.execute(raise_on_error=False)
                except BaseException as e:  # a connection error fails the whole batch
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(e if isinstance(e, Exception) else ConnectionError(str(e)))
                    if not isinstance(e, Exception):
                        raise
                    continue
                for (_, future), reply in zip(batch, replies):
                    if future.done():
                        continue
                    if isinstance(reply, Exception):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
        finally:
            self._sending = None
