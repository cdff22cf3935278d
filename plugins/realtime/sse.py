"""GraphQL over Server-Sent Events (the graphql-sse protocol) on the GraphQL path.

This module owns the SSE transport: both modes of the graphql-sse protocol,
the per-stream bounded event queue and its overflow policy, keep-alive, and
the single connection mode's stream reservations (tokens).

Distinct connections mode
    ``POST`` (JSON body, as GraphQL over HTTP) or ``GET`` (URL parameters)
    with ``Accept: text/event-stream``. The response is an event stream of
    ``next`` events (``data:`` the execution result) ending with one
    ``complete`` event (empty ``data:``); queries and mutations give one
    ``next``. Request errors (bad JSON, missing query, a document that does
    not parse or validate, a step's rejection) are answered *before* the
    stream starts with a plain JSON ``{"errors": [...]}`` and the HTTP status
    the core's HTTP transport would use (400, 405 for a mutation over GET,
    413, 415; 401/403 from the context hook), rather than as a ``next`` event
    on an accepted stream as PROTOCOL.md suggests, so that request errors look
    the same on every transport. The client ends a subscription by closing
    the connection.

Single connection mode
    ``PUT`` reserves a stream: 201 with a ``text/plain`` token. ``GET`` with
    ``Accept: text/event-stream`` and the token (header
    ``x-graphql-event-stream-token`` or URL parameter ``token``) opens it (404
    for an unknown token, 409 if it is already open). ``POST`` with the token
    carries one operation with ``extensions.operationId`` and answers 202; its
    results go down the stream as ``next`` events with data
    ``{"id", "payload"}`` and one ``complete`` with ``{"id"}``. ``DELETE
    ?operationId=`` stops one operation (200, also when it already ended).
    Operations may be sent once the stream is reserved; their events wait in
    the stream's queue until it opens. Tokens live in this app instance's
    memory: one expires if its stream is not opened within
    :attr:`SSETransport.reservation_ttl` seconds, and is freed when its stream
    closes. Only the identity that reserved a stream may run or stop
    operations on it (403 otherwise). Limits (429 beyond them): reserved
    streams per client address, ``realtime.sse.max_connections_per_ip``;
    operations running on one stream, the WebSocket transport's
    ``realtime.websocket.max_subscriptions_per_connection``.

Backpressure
    Every stream (either mode) has one bounded queue of ``realtime.queue_size``
    ``next`` events between the operations producing results and the socket.
    A client that stops reading never makes the server buffer without bound:
    under ``overflow: drop_oldest`` the oldest queued ``next`` event is dropped
    and counted (:attr:`EventStream.dropped`); ``complete`` events are never
    dropped, so a client always learns an operation ended. Under ``overflow:
    close`` the connection is aborted (a client that is not reading could
    not receive a graceful end anyway). A write stalled for aiohttp-sse's
    ``send_timeout`` (120 s) aborts the connection too.

Keep-alive is aiohttp-sse's ping: a comment line (``: ping``) every
``realtime.sse.keepalive``. aiohttp does not tell a handler that its client
went away (unless ``handler_cancellation`` is on), so one task per app looks
at every live stream's connection each :data:`SWEEP_INTERVAL` seconds; a
write that fails (an event or a ping) ends a stream at once. A client that
vanishes without closing its connection is found by the pings (aiohttp-sse
sets ``TCP_USER_TIMEOUT``). The stream's operation tasks are then cancelled
and their result streams closed (``aclose()``).

A subscription whose identity expires (``context.identity_expires_at``, unix
seconds) ends with a ``next`` carrying a ``FORBIDDEN`` error, then
``complete``: results are never streamed to a stale identity. One already
expired when it starts is refused with 403.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import time
import traceback
from typing import Any, AsyncIterator, Callable, Literal

from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response

from plugboard import keys
from plugboard.graphql.errors import GraphQLError
from plugboard.graphql.operation import Operation, OperationRejected
from plugboard.middleware import REQUEST_ID, REQUEST_ID_HEADER
from plugboard.plugins.realtime.config import RealtimeConfig
from plugboard.transports import http
from plugboard.transports.http import error_response

logger = logging.getLogger("plugboard.realtime.sse")

EVENT_STREAM = "text/event-stream"
TOKEN_HEADER = "x-graphql-event-stream-token"
#: Seconds a reserved (PUT) stream waits for its GET before the token is dropped.
RESERVATION_TTL = 30.0
#: How often live streams are checked for a connection the client has closed.
SWEEP_INTERVAL = 1.0


class RequestError(Exception):
    """A request answered with a plain JSON error before any stream starts."""

    def __init__(self, message: str, status: int = 400, *, errors: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.errors = errors
        self.headers = headers or {}

    def response(self) -> web.Response:
        return error_response(self.message, self.status, headers=self.headers, errors=self.errors)


class EventStream:
    """One SSE stream's outbound events: a bounded queue, its operations and their tasks.

    Producers (one task per running subscription) call :meth:`put_next` and
    :meth:`put_complete`, which never block; the handler that owns the HTTP response drains the queue with
    :meth:`pump`. In distinct connections mode the stream carries one
    operation and ends after its ``complete``; in single connection mode it
    lives until the client disconnects.
    """

    def __init__(
        self,
        *,
        queue_size: int,
        overflow: Literal["drop_oldest", "close"],
        single: bool,
        token: str | None = None,
        identity: Any = None,
        remote: str | None = None,
    ) -> None:
        self.queue_size = queue_size
        self.overflow = overflow
        self.single = single
        self.token = token
        self.identity = identity
        self.remote = remote
        #: ``next`` events dropped because the client read too slowly (drop_oldest).
        self.dropped = 0
        #: True once closed because the client fell behind (the ``close`` policy).
        self.overflowed = False
        self.closed = False
        #: Single connection mode: a GET holds this stream.
        self.opened = False
        #: Operation id -> its producer task (None while the operation is starting).
        self.operations: dict[str, asyncio.Task[None] | None] = {}
        #: Ids stopped (DELETE) while still starting: they end as soon as they start.
        self.stopped_while_starting: set[str] = set()
        self.expiry: asyncio.TimerHandle | None = None
        self.request: web.Request | None = None
        #: Called once when the stream closes (the transport forgets its token).
        self.on_close: Callable[[EventStream], None] | None = None
        # A list and a lazily made future rather than a deque and an Event:
        # thousands of idle streams each pay for these (~1.3 KB saved per stream).
        self._queue: list[tuple[str, str]] = []
        self._nexts = 0
        self._ended = False
        self._waiter: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- producing ---------------------------------------------------------

    def put_next(self, op_id: str, result: Any) -> None:
        data = http.dumps({"id": op_id, "payload": result}) if self.single else http.dumps(result)
        self._put("next", data)

    def put_complete(self, op_id: str) -> None:
        self._put("complete", http.dumps({"id": op_id}) if self.single else "")
        if not self.single:
            self._ended = True
            self._wake()

    def _put(self, event: str, data: str) -> None:
        if self.closed:
            return
        if event == "next":
            if self._nexts >= self.queue_size:
                if self.overflow == "close":
                    logger.warning("SSE stream closed: the client fell %d events behind (overflow: close)", self.queue_size)
                    self.overflowed = True
                    self.abort()
                    return
                self._drop_oldest_next()
            self._nexts += 1
        self._queue.append((event, data))
        self._wake()

    def _drop_oldest_next(self) -> None:
        for i, (event, _data) in enumerate(self._queue):
            if event == "next":
                del self._queue[i]
                self._nexts -= 1
                break
        if self.dropped == 0:
            logger.warning("SSE client reads too slowly: dropping its oldest events (overflow: drop_oldest)")
        self.dropped += 1

    # -- consuming ---------------------------------------------------------

    async def pump(self, response: EventSourceResponse) -> None:
        """Write queued events until the stream ends, closes or the client is gone."""
        while True:
            if self._queue:
                event, data = self._queue.pop(0)
                if event == "next":
                    self._nexts -= 1
                await response.send(data, event=event)
                continue
            if self.closed or self._ended:
                return
            self._waiter = asyncio.get_running_loop().create_future()
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
                task.cancel()
        self._queue.clear()
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

    async def wait_closed(self) -> None:
        """Wait until every operation task has finished (its result stream closed)."""
        tasks = [t for t in self.operations.values() if t is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


class SSEState:
    """Per-app SSE bookkeeping (stored under :data:`SSE_STATE`)."""

    def __init__(self) -> None:
        #: Single connection mode: token -> reserved or open stream.
        self.reservations: dict[str, EventStream] = {}
        #: Reservations per client address, for ``realtime.sse.max_connections_per_ip``.
        self.per_ip: collections.Counter[str] = collections.Counter()
        #: Every stream currently attached to a response (both modes).
        self.live: set[EventStream] = set()
        #: Checks ``live`` for closed connections; runs only while there are live streams.
        self.sweeper: asyncio.Task[None] | None = None


SSE_STATE = web.AppKey("plugboard.realtime.sse", SSEState)


class SSETransport:
    """The graphql-sse transport: distinct and single connection modes on the GraphQL path."""

    name = "sse"
    methods = ("GET", "POST", "PUT", "DELETE")

    def __init__(self, app: web.Application, config: RealtimeConfig) -> None:
        self.app = app
        self.config = config
        #: Seconds a reservation waits for its stream to be opened.
        self.reservation_ttl = RESERVATION_TTL
        app[SSE_STATE] = SSEState()
        app.on_shutdown.append(self._on_shutdown)

    @property
    def state(self) -> SSEState:
        return self.app[SSE_STATE]

    def matches(self, request: web.Request) -> bool:
        if request.method in ("PUT", "DELETE"):
            return True
        if request.method == "POST" and TOKEN_HEADER in request.headers:
            return True
        return _accepts_event_stream(request)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            token = request.headers.get(TOKEN_HEADER) or request.query.get("token")
            if request.method == "PUT":
                return await self._reserve(request)
            if request.method == "DELETE":
                return await self._stop(request, token)
            if token:
                if request.method == "GET":
                    return await self._open(request, token)
                return await self._single_operation(request, token)
            return await self._distinct(request)
        except RequestError as e:
            return e.response()

    # -- distinct connections mode ------------------------------------------

    async def _distinct(self, request: web.Request) -> web.StreamResponse:
        body = _query_params(request) if request.method == "GET" else await _read_json(request)
        allowed = ("query",) if request.method == "GET" else ("query", "mutation")
        op = await self._prepare(request, body, allowed)
        stream = EventStream(queue_size=self.config.queue_size, overflow=self.config.overflow, single=False)
        results = await self._start(op)
        if isinstance(results, dict):
            stream.put_next("", results)
            stream.put_complete("")
        else:
            self._spawn(stream, "", op, results)
        headers = {REQUEST_ID_HEADER: request[REQUEST_ID], **op.state.get("response_headers", {})}
        return await self._serve(request, stream, headers)

    # -- single connection mode ---------------------------------------------

    async def _reserve(self, request: web.Request) -> web.Response:
        context = await self._context(request)
        remote = request.remote or ""
        if self.state.per_ip[remote] >= self.config.sse.max_connections_per_ip:
            raise RequestError(f"too many reserved event streams from this address (limit {self.config.sse.max_connections_per_ip})", 429)
        token = secrets.token_urlsafe(24)
        stream = EventStream(
            queue_size=self.config.queue_size,
            overflow=self.config.overflow,
            single=True,
            token=token,
            identity=context.identity,
            remote=remote,
        )
        self.state.reservations[token] = stream
        self.state.per_ip[remote] += 1
        stream.on_close = self._forget
        stream.expiry = asyncio.get_running_loop().call_later(self.reservation_ttl, self._expire, stream)
        return web.Response(status=201, text=token, content_type="text/plain", charset="utf-8")

    def _expire(self, stream: EventStream) -> None:
        stream.expiry = None
        if not stream.opened:
            logger.info("SSE stream reservation expired unopened")
            stream.close()

    def _forget(self, stream: EventStream) -> None:
        if stream.token is not None and self.state.reservations.get(stream.token) is stream:
            del self.state.reservations[stream.token]
            remote = stream.remote or ""
            self.state.per_ip[remote] -= 1
            if self.state.per_ip[remote] <= 0:
                del self.state.per_ip[remote]

    def _lookup(self, token: str) -> EventStream:
        stream = self.state.reservations.get(token)
        if stream is None or stream.closed:
            raise RequestError("unknown or expired event stream token: reserve one with PUT", 404)
        return stream

    async def _open(self, request: web.Request, token: str) -> web.StreamResponse:
        stream = self._lookup(token)
        if stream.opened:
            raise RequestError("the event stream for this token is already open", 409)
        stream.opened = True
        if stream.expiry is not None:
            stream.expiry.cancel()
            stream.expiry = None
        try:
            return await self._serve(request, stream, {REQUEST_ID_HEADER: request[REQUEST_ID]})
        finally:
            stream.close()

    async def _single_operation(self, request: web.Request, token: str) -> web.Response:
        stream = self._lookup(token)
        body = await _read_json(request)
        extensions = body.get("extensions") if isinstance(body, dict) else None
        op_id = extensions.get("operationId") if isinstance(extensions, dict) else None
        if not isinstance(op_id, str) or not op_id:
            raise RequestError("'extensions.operationId' is missing: single connection mode needs a unique operation id")
        op = await self._prepare(request, body, ("query", "mutation"))
        self._check_owner(stream, op.context.identity)
        if op_id in stream.operations:
            raise RequestError(f"an operation with id {op_id!r} is already running on this stream", 409)
        limit = self.config.websocket.max_subscriptions_per_connection
        if len(stream.operations) >= limit:
            raise RequestError(f"too many operations on this stream (limit {limit})", 429)
        stream.operations[op_id] = None  # reserve the id while the operation starts
        try:
            results = await self._start(op)
        finally:
            stream.operations.pop(op_id, None)
            stopped = op_id in stream.stopped_while_starting
            stream.stopped_while_starting.discard(op_id)
        if isinstance(results, dict):
            stream.put_next(op_id, results)
            stream.put_complete(op_id)
        elif stream.closed:
            # The client went away while the subscription started.
            await _aclose(results)
            raise RequestError("the event stream closed", 404)
        elif stopped:
            await _aclose(results)
            stream.put_complete(op_id)
        else:
            self._spawn(stream, op_id, op, results)
        return web.Response(status=202)

    async def _stop(self, request: web.Request, token: str | None) -> web.Response:
        if not token:
            raise RequestError(f"the event stream token is missing: send it as the {TOKEN_HEADER} header or the 'token' URL parameter")
        stream = self._lookup(token)
        op_id = request.query.get("operationId")
        if not op_id:
            raise RequestError("'operationId' is missing: DELETE ?operationId=<id> stops that operation")
        context = await self._context(request)
        self._check_owner(stream, context.identity)
        if op_id in stream.operations and stream.operations[op_id] is None:
            stream.stopped_while_starting.add(op_id)
        task = stream.operations.get(op_id)
        if task is not None and task.cancel():
            await asyncio.gather(task, return_exceptions=True)
            if task.cancelled():
                stream.put_complete(op_id)
        return web.Response(status=200)

    @staticmethod
    def _check_owner(stream: EventStream, identity: Any) -> None:
        if identity != stream.identity:
            raise RequestError("this event stream was reserved by another identity", 403)

    # -- shared lifecycle ----------------------------------------------------

    async def _context(self, request: web.Request) -> Any:
        try:
            return await self.app[keys.CONTEXT_BUILDER].build(self.app, request, request_id=request[REQUEST_ID], transport="sse")
        except GraphQLError as e:
            raise RequestError(e.message, e.http_status, errors=[e.formatted()], headers=e.headers) from None

    async def _prepare(self, request: web.Request, body: Any, allowed: tuple[str, ...]) -> Operation:
        query, variables, operation_name, extensions = _operation_params(body)
        if self.config.subscriptions:
            allowed = (*allowed, "subscription")
        op = Operation(query=query, variables=variables, operation_name=operation_name, extensions=extensions, context=None, transport="sse")
        try:
            self.app[keys.RUNNER].prepare(op, allowed_types=allowed)
        except OperationRejected as e:
            raise _rejected(e) from None
        op.context = await self._context(request)
        return op

    async def _start(self, op: Operation) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        """Run a query/mutation to its result, or start a subscription's result stream."""
        runner = self.app[keys.RUNNER]
        try:
            if op.operation_type == "subscription":
                expires_at = getattr(op.context, "identity_expires_at", None)
                if isinstance(expires_at, (int, float)) and expires_at <= time.time():
                    raise RequestError("the identity behind this request has expired", 403)
                return await runner.subscribe(op)
            return await runner.run(op)
        except OperationRejected as e:
            raise _rejected(e) from None

    def _spawn(self, stream: EventStream, op_id: str, op: Operation, results: AsyncIterator[dict[str, Any]]) -> None:
        task = asyncio.create_task(_produce(stream, op_id, op, results))
        stream.operations[op_id] = task

        def forget(t: asyncio.Task[None]) -> None:
            if stream.operations.get(op_id) is t:
                del stream.operations[op_id]

        task.add_done_callback(forget)

    async def _serve(self, request: web.Request, stream: EventStream, headers: dict[str, str]) -> web.StreamResponse:
        stream.request = request
        self.state.live.add(stream)
        if self.state.sweeper is None or self.state.sweeper.done():
            self.state.sweeper = asyncio.create_task(self._sweep())
        try:
            async with sse_response(
                request,
                headers=headers,
                allow_all_methods=True,
                ping_interval=self.config.sse.keepalive,
                # LF, as graphql-sse's own server writes: the spec allows CRLF
                # too, but hand-rolled clients often split on "\n\n" only.
                sep="\n",
            ) as response:
                try:
                    await stream.pump(response)
                except (ConnectionResetError, TimeoutError):
                    pass  # the client is gone, or stalled past send_timeout (aborted)
            return response
        finally:
            stream.close()
            self.state.live.discard(stream)
            await stream.wait_closed()

    async def _sweep(self) -> None:
        while self.state.live:
            await asyncio.sleep(SWEEP_INTERVAL)
            for stream in list(self.state.live):
                transport = stream.request.transport if stream.request is not None else None
                if transport is None or transport.is_closing():
                    stream.close()

    async def _on_shutdown(self, app: web.Application) -> None:
        # Ending the streams lets their handlers return, so shutdown does not
        # wait out its grace period for connections that never end by themselves.
        streams = {*self.state.reservations.values(), *self.state.live}
        for stream in streams:
            stream.close()
        await asyncio.gather(*(stream.wait_closed() for stream in streams))
        if self.state.sweeper is not None:
            self.state.sweeper.cancel()


async def _produce(stream: EventStream, op_id: str, op: Operation, results: AsyncIterator[dict[str, Any]]) -> None:
    """Feed one subscription's results into the stream; close the result stream however it ends."""
    deadline = _deadline(op)
    try:
        async with asyncio.timeout_at(deadline) as scope:
            try:
                async for result in results:
                    stream.put_next(op_id, result)
                    # A source that never really suspends would otherwise
                    # starve the writer and every other connection.
                    await asyncio.sleep(0)
            except Exception as e:
                if scope.expired():
                    raise
                stream.put_next(op_id, {"data": None, "errors": [_error_payload(e, op)]})
    except TimeoutError:
        if not scope.expired():
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
        await _aclose(results)
    stream.put_complete(op_id)


def _deadline(op: Operation) -> float | None:
    expires_at = getattr(op.context, "identity_expires_at", None)
    if not isinstance(expires_at, (int, float)):
        return None
    return asyncio.get_running_loop().time() + max(0.0, expires_at - time.time())


def _error_payload(e: Exception, op: Operation) -> dict[str, Any]:
    coerce = getattr(e, "coerce_value", None)
    if coerce is not None:  # a GraphQL error from the engine (already masked and logged)
        return coerce()
    if isinstance(e, GraphQLError):
        return e.formatted()
    logger.error("SSE subscription failed (request %s)", getattr(op.context, "request_id", None), exc_info=e)
    return {"message": "Internal server error", "extensions": {"code": "INTERNAL_SERVER_ERROR"}}


async def _aclose(results: Any) -> None:
    aclose = getattr(results, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:
            logger.exception("closing a subscription's result stream failed")


def _rejected(e: OperationRejected) -> RequestError:
    headers = dict(e.headers)
    if e.status == 405:
        headers["Allow"] = "POST"
    return RequestError(str(e), e.status, errors=e.errors, headers=headers)


def _accepts_event_stream(request: web.Request) -> bool:
    return any(item.split(";")[0].strip().lower() == EVENT_STREAM for item in request.headers.get("Accept", "").split(","))


def _query_params(request: web.Request) -> dict[str, Any]:
    try:
        return http.url_params(request)
    except http.RequestError as e:
        raise RequestError(e.message, e.status) from None


async def _read_json(request: web.Request) -> Any:
    content_type = request.content_type.lower()
    if content_type != "application/json":
        raise RequestError(f"unsupported content type {content_type or '(none)'!r}; send application/json", 415)
    try:
        return await http.read_json_body(request)
    except http.RequestError as e:
        raise RequestError(e.message, e.status, headers=e.headers) from None


def _operation_params(body: Any) -> tuple[str, dict[str, Any] | None, str | None, dict[str, Any] | None]:
    try:
        return http.operation_params(body)
    except http.RequestError as e:
        raise RequestError(e.message, e.status) from None
