"""Coalescing Redis commands of concurrent callers into one write and one read per round trip.

A worker running ten jobs at once issues ten record updates and ten
acknowledgements at about the same moment, and publishes an event for each;
sent one by one, each costs a round trip and its share of redis-py's
per-call overhead (for a worker, most of its CPU per job). :class:`Batcher`
sends whatever callers queued while its batches were in flight as the next
batch: an idle caller waits no longer than before (its command goes out at
once), a busy worker pays one round trip per batch. Two batches may be in
flight at once (``IN_FLIGHT``): with one, a worker of concurrency 10 spent a
third of its time waiting on the batch ahead (drain throughput 1,414 against
2,211 jobs/s with two, same CPU per job).

A batch goes out on one of the batcher's own connections (made with the
client's pool settings), packed in one write and its replies read back one by one,
as a redis-py pipeline does, without the pipeline object: building,
resetting and retrying a ``Pipeline``, borrowing a pooled connection and
redis-py 8's per-write task and per-read timeout cost more CPU than the
round trip itself (issue 16). Replies are raw (no response callbacks):
callers send commands whose reply is used as Redis sends it.
"""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

import redis.asyncio
import redis.exceptions

#: Batches a batcher has on the wire at once (one connection each).
IN_FLIGHT = 2


class Batcher:
    """``await batcher.call("XACK", key, group, id)``: the command's reply, sent in a shared batch.

    One batcher per client, shared by everything that sends through that
    client (the core keeps the shared client's under
    :data:`plugboard.keys.REDIS_BATCHER`), so that a job's record update, its
    acknowledgement and its event travel together. Close it with
    :meth:`aclose` before its client.
    """

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.client = client
        self._queue: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        pool = client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        #: With a socket timeout set, redis-py starts a task per write
        #: (asyncio.wait_for) and a timeout per reply read; a batch is timed
        #: as a whole instead, with the client's socket timeout.
        self._timeout: float | None = kwargs.get("socket_timeout")
        kwargs["socket_timeout"] = None
        #: Connections of its own: up to IN_FLIGHT batches at once, so that
        #: commands queued while one batch waits on Redis go out at once.
        self._conns = [pool.connection_class(**kwargs) for _ in range(IN_FLIGHT)]
        self._idle = list(self._conns)

    def call(self, *command: Any) -> "asyncio.Future[Any]":
        """Queue ``command``; the future of its reply (its error raised when awaited)."""
        # A plain function handing back the future, not a coroutine awaiting
        # it: one level less under every caller's await.
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((command, future))
        if self._idle:
            asyncio.create_task(self._send(self._idle.pop()))
        return future

    async def aclose(self) -> None:
        """Close the batcher's connections (a later call opens them again)."""
        for conn in self._conns:
            await conn.disconnect()

    async def _send(self, conn: Any) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    replies = await self._round_trip(conn, [command for command, _ in batch])
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
            self._idle.append(conn)

    async def _round_trip(self, conn: Any, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in one write and read their replies (an error reply is returned, not raised).

        A dropped connection (or a batch outlasting the socket timeout) is
        retried by the connection's retry policy, as redis-py retries a
        pipeline: the whole batch again, on a new connection.
        """
        async def exchange() -> list[Any]:
            try:
                async with asyncio.timeout(self._timeout):
                    await conn.send_packed_command(pack(commands) or conn.pack_commands(commands), check_health=False)
                    replies: list[Any] = []
                    for _ in commands:
                        try:
                            replies.append(await conn.read_response())
                        except redis.exceptions.ResponseError as e:
                            replies.append(e)
                    return replies
            except TimeoutError:  # asyncio's: the batch timed out (redis-py's is no subclass)
                raise redis.exceptions.TimeoutError(f"Redis did not answer a batch within {self._timeout}s") from None

        async def failed(_error: BaseException) -> None:
            await conn.disconnect()

        try:
            return await conn.retry.call_with_retry(exchange, failed)
        except BaseException:
            # Cancelled or failed part-way: replies may still be on the
            # socket, so the connection starts afresh next time.
            await conn.disconnect(nowait=True)
            raise


def pack(commands: Sequence[tuple[Any, ...]]) -> bytes | None:
    """``commands`` in the Redis protocol, or None when one has an argument
    this fast path does not encode (then redis-py's packer does it all).

    Our batched commands are single-word names with str, bytes and number
    arguments; redis-py's general packer (an encoder call and several type
    checks per argument) was a sixth of a worker's CPU with live updates on.
    Encodes as redis-py's default encoder does: str as UTF-8, int and float
    by ``repr``; a bool is not a Redis value (redis-py raises DataError).
    """
    out: list[bytes] = []
    for command in commands:
        if not command or not isinstance(command[0], str) or " " in command[0]:
            return None  # "SCRIPT LOAD" style names: redis-py splits them
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            kind = type(arg)
            if kind is str:
                data = arg.encode()
            elif kind is bytes:
                data = arg
            elif kind is int or kind is float:
                data = repr(arg).encode()
            else:
                return None
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)
