"""One graphql-sse stream's outbound events, and the task feeding each subscription into it.

This module owns :class:`EventStream` (a :class:`~plugboard.boundedqueue.BoundedQueue`
of encoded events: ``next`` events count towards ``realtime.queue_size`` and
may be dropped, ``complete`` events never are), the SSE wire encoding, and
:func:`produce`, which moves one subscription's results into a stream and
closes the result stream however it ends (identity expiry included).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import traceback
from typing import Any, AsyncIterator, Callable, Literal

from aiohttp import web

from plugboard.boundedqueue import BoundedQueue
from plugboard.cancelling import keep_cancelling
from plugboard.graphql.errors import GraphQLError
from plugboard.graphql.operation import Operation
from plugboard.transports import http

__all__ = ["EventStream", "PING", "aclose", "deadline", "produce"]

logger = logging.getLogger("plugboard.realtime.sse")

#: The keep-alive comment (EventSource ignores comments).
PING = b": ping\n\n"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# Stands in for asyncio.timeout_at(None) when an identity never expires: each
# idle subscription would otherwise keep a Timeout object (~350 B) for nothing.
_NO_DEADLINE = contextlib.nullcontext()


class EventStream(BoundedQueue[tuple[str, bytes]]):
    """One SSE stream's outbound events: a bounded queue, its operations and their tasks.

    Producers (one task per running subscription) call :meth:`put_next` and
    :meth:`put_complete`, which never block; the handler that owns the HTTP response drains the queue with
    :meth:`pump`. In distinct connections mode the stream carries one
    operation and ends after its ``complete``; in single connection mode it
    lives until the client disconnects.
    """

    # Slots: thousands of idle streams each pay for an instance dict otherwise.
    __slots__ = (
        "single",
        "token",
        "identity",
        "remote",
        "encode",
        "closed",
        "opened",
        "operations",
        "stopped_while_starting",
        "expiry",
        "request",
        "on_close",
        "_nexts",
        "_ended",
        "_waiter",
        "_writing_since",
    )

    def __init__(
        self,
        *,
        queue_size: int,
        overflow: Literal["drop_oldest", "close"],
        single: bool,
        token: str | None = None,
        identity: Any = None,
        remote: str | None = None,
        encode: Callable[[Any], str] = http.dumps,
    ) -> None:
        super().__init__(queue_size, overflow)
        self.single = single
        self.token = token
        self.identity = identity
        self.remote = remote
        #: A result's JSON (the transport's :class:`EncodeOnce`: subscribers sharing a stream share it).
        self.encode = encode
        self.closed = False
        #: Single connection mode: a GET holds this stream.
        self.opened = False
        #: Operation id -> its producer task (None while the operation is starting).
        self.operations: dict[str, asyncio.Task[None] | None] = {}
        #: Ids stopped (DELETE) while still starting: they end as soon as they start.
        #: Made on first use: only single connection mode needs it.
        self.stopped_while_starting: set[str] | None = None
        self.expiry: asyncio.TimerHandle | None = None
        self.request: web.Request | None = None
        #: Called once when the stream closes (the transport forgets its token).
        self.on_close: Callable[[EventStream], None] | None = None
        # The queue holds (kind, the bytes to write), kind "next", "complete"
        # or "ping"; only ``next`` events count towards ``queue_size``. A
        # lazily made future rather than an Event: thousands of idle streams
        # each pay for it.
        self._nexts = 0
        self._ended = False
        self._waiter: asyncio.Future[None] | None = None
        #: Loop time the pending write began (None: not writing), for the watcher's send timeout.
        self._writing_since: float | None = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- producing ---------------------------------------------------------

    def put_next(self, op_id: str, result: Any) -> None:
        data = self.encode(result)
        if self.single:
            # {"id", "payload"} built around the result's JSON, which may be shared.
            data = f'{{"id":{http.dumps(op_id)},"payload":{data}}}'
        self._put("next", data)

    def put_complete(self, op_id: str) -> None:
        self._put("complete", http.dumps({"id": op_id}) if self.single else "")
        if not self.single:
            self._ended = True
            self._wake()

    def ping(self) -> None:
        """Queue a keep-alive comment, unless something waits to be written already."""
        # Queued events keep the stream alive themselves (or the client is
        # stalled, and a ping would not get through either).
        if not self.closed and not self._items:
            self._items.append(("ping", PING))
            self._wake()

    def _put(self, event: str, data: str) -> None:
        if self.closed:
            return
        if event != "next":
            # Never dropped: a client always learns that an operation ended.
            self._items.append((event, _encode(event, data)))
        elif not self.offer((event, _encode(event, data))):
            self.abort()
            return
        self._wake()

    def _count(self) -> int:
        return self._nexts

    def _add(self, item: tuple[str, bytes]) -> None:
        self._items.append(item)
        self._nexts += 1

    def _evict(self) -> None:
        for i, (event, _data) in enumerate(self._items):
            if event == "next":
                del self._items[i]
                self._nexts -= 1
                return

    def _log_dropped(self) -> None:
        logger.warning(
            "SSE client reads too slowly: dropped its oldest events (%d so far, overflow: drop_oldest)", self.dropped
        )

    def _log_closed(self) -> None:
        logger.warning("SSE stream closed: the client fell %d events behind (overflow: close)", self.limit)

    # -- consuming ---------------------------------------------------------

    async def pump(self, response: web.StreamResponse) -> None:
        """Write queued events until the stream ends, closes or the client is gone.

        Raises ``ConnectionResetError`` when the client has gone (or was
        aborted by the transport for taking nothing too long: see :meth:`stalled`).
        """
        loop = asyncio.get_running_loop()
        while True:
            if self._items:
                kind, chunk = self._items.pop(0)
                if kind == "next":
                    self._nexts -= 1
                # A time stamp the watcher checks, rather than a timeout around
                # each write: that would cost more than the write itself.
                self._writing_since = loop.time()
                await response.write(chunk)
                self._writing_since = None
                continue
            if self.closed or self._ended:
                return
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    # -- ending ------------------------------------------------------------

    def close(self) -> None:
        """Stop every operation and wake the pump so it returns. Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        for task in self.operations.values():
            if task is not None:
                keep_cancelling(task)
        self._items.clear()
        self._nexts = 0
        self._wake()
        if self.on_close is not None:
            self.on_close(self)

    def abort(self) -> None:
        """Close and drop the connection: a client that is not reading cannot get a graceful end."""
        self.close()
        transport = self.request.transport if self.request is not None else None
        if transport is not None:
            transport.abort()

    def stalled(self, now: float, timeout: float) -> bool:
        """True when a write has waited on the client for ``timeout`` seconds (loop time ``now``)."""
        return self._writing_since is not None and now - self._writing_since >= timeout

    def forget(self, task: asyncio.Task[None]) -> None:
        """Done callback of an operation task: drop it, unless its id names a newer one already."""
        for op_id, running in self.operations.items():
            if running is task:
                del self.operations[op_id]
                return

    async def wait_closed(self) -> None:
        """Wait until every operation task has finished (its result stream closed)."""
        tasks = [t for t in self.operations.values() if t is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)



async def produce(
    stream: EventStream, op_id: str, results: AsyncIterator[dict[str, Any]], deadline: float | None, request_id: str | None
) -> None:
    """Feed one subscription's results into the stream; close the result stream however it ends.

    ``deadline`` (loop time) is when the identity expires: the subscription
    then ends with a ``FORBIDDEN`` error.
    """
    scope = asyncio.timeout_at(deadline) if deadline is not None else _NO_DEADLINE
    try:
        async with scope:
            try:
                async for result in results:
                    stream.put_next(op_id, result)
                    # A source that never really suspends would otherwise
                    # starve the writer and every other connection.
                    await asyncio.sleep(0)
            except Exception as e:
                if _expired(scope):
                    raise
                stream.put_next(op_id, {"data": None, "errors": [_error_payload(e, request_id)]})
    except TimeoutError:
        if not _expired(scope):
            raise
        error = GraphQLError("the identity behind this subscription has expired", "FORBIDDEN")
        stream.put_next(op_id, {"data": None, "errors": [error.formatted()]})
    except asyncio.CancelledError as e:
        # aclose() below only reaches the outermost generator: the layers
        # inside it (the engine's, Tartiflette's) do not close what they
        # iterate. When the cancellation passed through them, their frames
        # (holding the source generator, suspended at its yield) live on in
        # this exception's traceback, which a cancelled task keeps in a
        # reference cycle until the next GC. Clearing them now lets the source
        # generator be finalized, and its ``finally`` run, right away.
        traceback.clear_frames(e.__traceback__)
        raise
    finally:
        await aclose(results)
    stream.put_complete(op_id)


def _expired(scope: Any) -> bool:
    return isinstance(scope, asyncio.Timeout) and scope.expired()


def deadline(op: Operation) -> float | None:
    expires_at = op.context.identity_expires_at
    if not isinstance(expires_at, (int, float)):
        return None
    return asyncio.get_running_loop().time() + max(0.0, expires_at - time.time())


def _error_payload(e: Exception, request_id: str | None) -> dict[str, Any]:
    coerce = getattr(e, "coerce_value", None)
    if coerce is not None:  # a GraphQL error from the engine (already masked and logged)
        return coerce()
    if isinstance(e, GraphQLError):
        return e.formatted()
    logger.error("SSE subscription failed (request %s)", request_id, exc_info=e)
    return {"message": "Internal server error", "extensions": {"code": "INTERNAL_SERVER_ERROR"}}


def _encode(event: str, data: str) -> bytes:
    # LF, as graphql-sse's own server writes: the spec allows CRLF too, but
    # hand-rolled clients often split on "\n\n" only.
    lines = "".join(f"data: {line}\n" for line in _LINE_BREAK.split(data))
    return f"event: {event}\n{lines}\n".encode()



async def aclose(results: Any) -> None:
    aclose = getattr(results, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:
            logger.exception("closing a subscription's result stream failed")

