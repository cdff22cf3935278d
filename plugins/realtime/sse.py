"""GraphQL over Server-Sent Events (the graphql-sse protocol) on the GraphQL path.

This module owns the SSE transport: both modes of the graphql-sse protocol
(distinct connections, and single connection with its stream reservations),
the per-address limit (through the app's
:class:`~plugboard.plugins.realtime.limiter.ConnectionLimiter`, both modes
in one pool), and the one watcher task per app that pings open streams and
ends those whose client is gone or stalled. Each stream's queue is an
:class:`~.sse_stream.EventStream`. Behaviour and status codes:
``plugins/realtime/PROTOCOLS.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from typing import Any, AsyncIterator

from aiohttp import web

from plugboard import keys
from plugboard.cancelling import cancel_until_done
from plugboard.graphql.errors import GraphQLError
from plugboard.graphql.operation import Operation, OperationRejected
from plugboard.graphql.shared_streams import EncodeOnce
from plugboard.middleware import REQUEST_ID, REQUEST_ID_HEADER
from plugboard.plugins.realtime.config import RealtimeConfig
from plugboard.plugins.realtime.limiter import SSE, client_address, limiter_of
from plugboard.plugins.realtime.sse_stream import EventStream, aclose, deadline, produce
from plugboard.transports import http
from plugboard.transports.http import error_response

logger = logging.getLogger("plugboard.realtime.sse")

EVENT_STREAM = "text/event-stream"
TOKEN_HEADER = "x-graphql-event-stream-token"
#: Seconds a reserved (PUT) stream waits for its GET before the token is dropped.
RESERVATION_TTL = 30.0
#: How often live streams are checked for a connection the client has closed.
SWEEP_INTERVAL = 1.0
#: A write the client takes nothing of for this long aborts its connection.
SEND_TIMEOUT = 120.0

_SSE_HEADERS = {"Content-Type": EVENT_STREAM, "Cache-Control": "no-cache", "Connection": "keep-alive", "X-Accel-Buffering": "no"}
_TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", None)


class RequestError(Exception):
    """A request answered with a plain JSON error before any stream starts."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        invalid_document: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.errors = errors
        self.headers = headers or {}
        #: The request was well formed; its document does not parse, validate
        #: or name an operation it holds.
        self.invalid_document = invalid_document

    def response(self) -> web.Response:
        return error_response(self.message, self.status, headers=self.headers, errors=self.errors)


class SSEState:
    """Per-app SSE bookkeeping (stored under :data:`SSE_STATE`)."""

    def __init__(self) -> None:
        #: Single connection mode: token -> reserved or open stream.
        self.reservations: dict[str, EventStream] = {}
        #: Every stream currently attached to a response (both modes).
        self.live: set[EventStream] = set()
        #: Pings the ``live`` streams and ends those whose connection has closed
        #: (:meth:`SSETransport._watch`); runs only while there are live streams.
        self.watcher: asyncio.Task[None] | None = None
        #: The app's transport, for the graphql-sse path's routes.
        self.transport: SSETransport | None = None


SSE_STATE = web.AppKey("plugboard.realtime.sse", SSEState)


def stream_routes(app: web.Application, config: RealtimeConfig) -> list[web.RouteDef]:
    """graphql-sse on its own path (``realtime.sse.path``), every request in the protocol.

    The GraphQL path serves the same transport to requests that ask for it
    (``Accept: text/event-stream``, a stream token, PUT/DELETE); here no
    header is needed, as with graphql-sse's own handler.
    """
    path = config.sse.stream_path(app[keys.CORE_CONFIG].graphql.path)

    async def handler(request: web.Request) -> web.StreamResponse:
        return await request.app[SSE_STATE].transport.handle(request)

    return [web.get(path, handler, allow_head=False), web.post(path, handler), web.put(path, handler), web.delete(path, handler)]


class SSETransport:
    """The graphql-sse transport: distinct and single connection modes on the GraphQL path."""

    name = "sse"
    methods = ("GET", "POST", "PUT", "DELETE")

    def __init__(self, app: web.Application, config: RealtimeConfig) -> None:
        self.app = app
        self.config = config
        #: Seconds a reservation waits for its stream to be opened.
        self.reservation_ttl = RESERVATION_TTL
        self.encode = EncodeOnce(http.dumps)
        app[SSE_STATE] = SSEState()
        app[SSE_STATE].transport = self
        self.limiter = limiter_of(app, config)
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
                    stream = self._claim(token)
                    return await self._serve(request, stream, {REQUEST_ID_HEADER: request[REQUEST_ID]})
                return await self._single_operation(request, token)
            ip = client_address(request)
            # Counted before the first await, as every realtime endpoint does.
            if not self.limiter.acquire(SSE, ip):
                raise RequestError(f"too many event streams from this address (limit {self.limiter.limits[SSE]})", 429)
            try:
                stream, headers = await self._distinct(request)
            except BaseException:
                self.limiter.release(SSE, ip)
                raise
        except RequestError as e:
            return e.response()
        # Served here rather than from _distinct: an open stream then holds
        # one coroutine frame less (thousands of idle streams).
        try:
            return await self._serve(request, stream, headers)
        finally:
            self.limiter.release(SSE, ip)

    # -- distinct connections mode ------------------------------------------

    async def _distinct(self, request: web.Request) -> tuple[EventStream, dict[str, str]]:
        """Start the request's operation on a new stream; returns it and the response headers."""
        body = _query_params(request) if request.method == "GET" else await _read_json(request)
        allowed = ("query",) if request.method == "GET" else ("query", "mutation")
        stream = EventStream(queue_size=self.config.queue_size, overflow=self.config.overflow, single=False, encode=self.encode)
        try:
            op = await self._prepare(request, body, allowed)
        except RequestError as e:
            if not e.invalid_document:
                raise
            # A well-formed request whose document does not parse or validate:
            # graphql-sse (PROTOCOL.md) accepts the stream and reports it as
            # a result, as graphql-js's subscribe() would return it.
            stream.put_next("", {"errors": e.errors or [{"message": e.message}]})
            stream.put_complete("")
            return stream, {REQUEST_ID_HEADER: request[REQUEST_ID]}
        results = await self._start(op)
        if isinstance(results, dict):
            stream.put_next("", results)
            stream.put_complete("")
        else:
            self._spawn(stream, "", op, results)
        headers = {REQUEST_ID_HEADER: request[REQUEST_ID], **op.response_headers}
        return stream, headers

    # -- single connection mode ---------------------------------------------

    async def _reserve(self, request: web.Request) -> web.Response:
        context = await self._context(request)
        remote = client_address(request)
        if not self.limiter.acquire(SSE, remote):
            limit = self.limiter.limits[SSE]
            raise RequestError(f"too many reserved event streams from this address (limit {limit})", 429)
        token = secrets.token_urlsafe(24)
        stream = EventStream(
            queue_size=self.config.queue_size,
            overflow=self.config.overflow,
            single=True,
            token=token,
            identity=context.identity,
            remote=remote,
            encode=self.encode,
        )
        self.state.reservations[token] = stream
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
            self.limiter.release(SSE, stream.remote or "unknown")

    def _lookup(self, token: str) -> EventStream:
        stream = self.state.reservations.get(token)
        if stream is None or stream.closed:
            raise RequestError("unknown or expired event stream token: reserve one with PUT", 404)
        return stream

    def _claim(self, token: str) -> EventStream:
        """The reserved stream a GET opens (it closes when that response ends)."""
        stream = self._lookup(token)
        if stream.opened:
            raise RequestError("the event stream for this token is already open", 409)
        stream.opened = True
        if stream.expiry is not None:
            stream.expiry.cancel()
            stream.expiry = None
        return stream

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
            stopped = stream.stopped_while_starting is not None and op_id in stream.stopped_while_starting
            if stopped:
                stream.stopped_while_starting.discard(op_id)
        if isinstance(results, dict):
            stream.put_next(op_id, results)
            stream.put_complete(op_id)
        elif stream.closed:
            # The client went away while the subscription started.
            await aclose(results)
            raise RequestError("the event stream closed", 404)
        elif stopped:
            await aclose(results)
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
            if stream.stopped_while_starting is None:
                stream.stopped_while_starting = set()
            stream.stopped_while_starting.add(op_id)
        task = stream.operations.get(op_id)
        if task is not None and not task.done():
            await cancel_until_done([task])
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
        runner = self.app[keys.RUNNER]
        try:
            if extensions:
                await runner.load_persisted(op)
            runner.prepare(op, allowed_types=allowed)
        except OperationRejected as e:
            raise _rejected(e, invalid_document=e.invalid_document) from None
        op.context = await self._context(request)
        return op

    async def _start(self, op: Operation) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        """Run a query/mutation to its result, or start a subscription's result stream."""
        runner = self.app[keys.RUNNER]
        try:
            if op.operation_type == "subscription":
                expires_at = op.context.identity_expires_at
                if isinstance(expires_at, (int, float)) and expires_at <= time.time():
                    raise RequestError("the identity behind this request has expired", 403)
                return await runner.subscribe(op)
            return await runner.run(op)
        except OperationRejected as e:
            raise _rejected(e) from None

    def _spawn(self, stream: EventStream, op_id: str, op: Operation, results: AsyncIterator[dict[str, Any]]) -> None:
        # The task gets what it needs, not the operation: the operation, its
        # context and parsed document are then freed once the stream runs.
        task = asyncio.create_task(produce(stream, op_id, results, deadline(op), op.context.request_id))
        stream.operations[op_id] = task
        task.add_done_callback(stream.forget)

    async def _serve(self, request: web.Request, stream: EventStream, headers: dict[str, str]) -> web.StreamResponse:
        # A plain StreamResponse rather than aiohttp-sse's EventSourceResponse,
        # which starts a ping task per response (~1 KB per idle stream): the
        # app's one watcher task queues the pings instead.
        response = web.StreamResponse(headers={**headers, **_SSE_HEADERS})
        stream.request = request
        self.state.live.add(stream)
        if self.state.watcher is None or self.state.watcher.done():
            self.state.watcher = asyncio.create_task(self._watch(), name="plugboard.sse.watcher")
        user_timeout = _set_user_timeout(request)
        try:
            await response.prepare(request)
            await stream.pump(response)
        except ConnectionResetError:
            pass  # the client is gone (or stalled, and the watcher aborted it)
        finally:
            stream.close()
            self.state.live.discard(stream)
            _restore_user_timeout(request, user_timeout)
            await stream.wait_closed()
        return response

    async def _watch(self) -> None:
        """Look after every live stream, one task per app.

        Each ``keepalive``: a ping. Each tick: a stream whose connection has
        closed is closed, one whose write has waited on the client for
        :data:`SEND_TIMEOUT` is aborted.
        """
        loop = asyncio.get_running_loop()
        keepalive = self.config.sse.keepalive
        tick = min(SWEEP_INTERVAL, keepalive)
        # Whole ticks, rounded down: a stream never goes longer than
        # ``keepalive`` without a ping (a new one may get its first sooner).
        ticks_per_ping = max(1, int(keepalive / tick + 1e-9))
        ticks = 0
        while self.state.live:
            await asyncio.sleep(tick)
            ticks += 1
            ping = ticks % ticks_per_ping == 0
            now = loop.time()
            for stream in list(self.state.live):
                transport = stream.request.transport if stream.request is not None else None
                if transport is None or transport.is_closing():
                    stream.close()
                elif stream.stalled(now, SEND_TIMEOUT):
                    # A client that takes nothing would hold its handler (and a
                    # graceful close) forever.
                    logger.info("SSE stream aborted: the client took nothing for %.0f s", SEND_TIMEOUT)
                    stream.abort()
                elif ping:
                    stream.ping()

    async def _on_shutdown(self, app: web.Application) -> None:
        # Ending the streams lets their handlers return, so shutdown does not
        # wait out its grace period for connections that never end by themselves.
        streams = {*self.state.reservations.values(), *self.state.live}
        for stream in streams:
            stream.close()
        await asyncio.gather(*(stream.wait_closed() for stream in streams))
        if self.state.watcher is not None:
            self.state.watcher.cancel()


def _tcp_socket(request: web.Request) -> Any:
    transport = request.transport
    if _TCP_USER_TIMEOUT is None or transport is None:
        return None
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    return sock


def _set_user_timeout(request: web.Request) -> int | None:
    """Have the kernel drop the connection when sent data stays unacknowledged for SEND_TIMEOUT.

    Linux only (as aiohttp-sse does): a peer that vanished is then found by
    the next ping, long before enough data queues up for a write to block.
    Returns the previous value for :func:`_restore_user_timeout`.
    """
    sock = _tcp_socket(request)
    if sock is None:
        return None
    try:
        previous = sock.getsockopt(socket.IPPROTO_TCP, _TCP_USER_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_USER_TIMEOUT, int(SEND_TIMEOUT * 1000))
    except OSError:
        return None  # the socket has closed: the client is gone, and the stream ends at its first write
    return previous


def _restore_user_timeout(request: web.Request, previous: int | None) -> None:
    # The connection may serve other requests once the stream has ended.
    sock = _tcp_socket(request) if previous is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):  # closed meanwhile: nothing left to restore
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_USER_TIMEOUT, previous)



def _rejected(e: OperationRejected, *, invalid_document: bool = False) -> RequestError:
    headers = dict(e.headers)
    if e.status == 405:
        headers["Allow"] = "POST"
    # A document that cannot run (it does not validate, or a persisted
    # query's hash is unknown) is reported in the stream in distinct
    # connections mode; single connection mode answers it 400, whatever
    # status plain HTTP gives it (persisted queries' answers are 200 there).
    status = 400 if invalid_document else e.status
    return RequestError(str(e), status, errors=e.errors, headers=headers, invalid_document=invalid_document)


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


def _operation_params(body: Any) -> tuple[str | None, dict[str, Any] | None, str | None, dict[str, Any] | None]:
    try:
        return http.operation_params(body)
    except http.RequestError as e:
        raise RequestError(e.message, e.status) from None

