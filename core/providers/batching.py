"""Coalescing Redis commands of concurrent callers into one write and one read per round trip.

A worker running ten jobs at once issues ten record updates and ten
acknowledgements at about the same moment, and publishes an event for each;
sent one by one, each costs a round trip and its share of redis-py's
per-call overhead (for a worker, most of its CPU per job). :class:`Batcher`
sends whatever callers queued while the previous batch was in flight as the
next batch: an idle caller waits no longer than before (its command goes out
at once), a busy worker pays one round trip per batch.

A batch goes out on a connection borrowed from the client's pool, packed
with the connection's own packer and its replies read back one by one, as a
redis-py pipeline does, without the pipeline object: building, resetting and
retrying a ``Pipeline`` (and its per-command bookkeeping) cost redis-py 8 more
CPU than the round trip itself (issue 16). Replies are raw (no response
callbacks): callers send commands whose reply is used as Redis sends it.
"""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

import redis.asyncio
import redis.exceptions


class Batcher:
    """``await batcher.call("XACK", key, group, id)``: the command's reply, sent in a shared batch.

    One batcher per client, shared by everything that sends through that
    client (the core keeps the shared client's under
    :data:`plugboard.keys.REDIS_BATCHER`), so that a job's record update, its
    acknowledgement and its event travel together.
    """

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
                try:
                    replies = await self._round_trip([command for command, _ in batch])
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

    async def _round_trip(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in one write and read their replies (an error reply is returned, not raised).

        A dropped connection is retried by the connection's retry policy (as
        redis-py retries a pipeline): the whole batch again, on a new connection.
        """
        pool = self.client.connection_pool
        conn = await pool.get_connection()
        try:

            async def exchange() -> list[Any]:
                await conn.send_packed_command(conn.pack_commands(commands))
                replies: list[Any] = []
                for _ in commands:
                    try:
                        replies.append(await conn.read_response())
                    except redis.exceptions.ResponseError as e:
                        replies.append(e)
                return replies

            async def failed(_error: BaseException) -> None:
                await conn.disconnect()

            return await conn.retry.call_with_retry(exchange, failed)
        except BaseException:
            # Cancelled or failed part-way: replies may still be on the
            # socket, so the connection must not go back to the pool as is.
            await conn.disconnect(nowait=True)
            raise
        finally:
            await pool.release(conn)
