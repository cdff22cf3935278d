"""GraphQL over WebSocket on the GraphQL path: both subprotocols, one connection object each.

This module owns the WebSocket transport: subprotocol negotiation, the
``graphql-transport-ws`` protocol (the graphql-ws library's) and the legacy
``graphql-ws`` protocol (Apollo's subscriptions-transport-ws), the per-IP
connection count and every task a connection starts.

Behaviour, where the protocols leave a choice:

* Subprotocol: ``graphql-transport-ws`` when the client offers it (even when
  it also offers ``graphql-ws``), else ``graphql-ws``; a client offering
  neither is accepted and closed with 4406 "Subprotocol not acceptable", as
  graphql-ws servers do.
* Per-IP limit (``realtime.websocket.max_connections_per_ip``, counted per
  app by ``request.remote``): the connection over the limit is accepted and
  closed with 4429 "Too many connections from this address". A close code
  reaches browser clients (an HTTP 429 on the handshake does not), and
  graphql-ws clients treat 4429 as fatal, so they do not retry in a loop.
* Per-connection limit (``max_subscriptions_per_connection``) counts every
  operation in flight on the connection; the one over it gets an ``error``
  message with code ``TOO_MANY_SUBSCRIPTIONS`` and the socket stays up.
* One context per connection, built at ``connection_init`` from the upgrade
  request and the init payload (``connection_params``); each operation gets
  its own :class:`~plugboard.graphql.operation.Operation` sharing it.
  ``UNAUTHENTICATED``/``FORBIDDEN`` from the context hook closes with 4403;
  when ``context.identity_expires_at`` (unix seconds) passes, the socket is
  closed with 4403 "Forbidden: identity expired".
* Request errors (the document does not parse or validate, a step rejects
  the operation) answer with an ``error`` message; a subscription whose
  source raises mid-stream gets a ``next`` carrying ``errors`` and then
  ``complete`` (it is an execution error, and clients render results). The
  socket stays up for the other operations either way.
* Messages larger than ``max_message_size`` close with 1009 (aiohttp's
  ``max_msg_size``). Keep-alive is aiohttp's protocol-level ping every
  ``keepalive`` seconds (a client that does not answer is dropped); the legacy
  protocol also gets its ``ka`` messages. Client ``ping`` messages are
  answered with ``pong`` echoing the payload. Per-message compression is off:
  its zlib buffers would cost far more than an idle subscriber may.
* A client that stops reading holds up only its own connection: each
  operation's task waits on that socket's writer, and results shared between
  subscribers queue in the core's bounded per-subscriber buffer.
* Close codes (graphql-transport-ws): 4400 invalid message, 4401 subscribe
  before ``connection_ack``, 4403 forbidden / identity expired, 4406 no
  acceptable subprotocol, 4408 no ``connection_init`` within
  ``init_timeout``, 4409 duplicate operation id in flight, 4429 second
  ``connection_init`` or too many connections from one address, 4500 the
  context hook failed, 1001 server shutting down, 1009 message too big.
  The legacy protocol answers bad messages with ``error`` messages instead
  (as subscriptions-transport-ws did) and uses the same close codes otherwise.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any, AsyncIterator

from aiohttp import WSMsgType, hdrs, web

from plugboard import keys
from plugboard.graphql.errors import WS_CLOSE_FOR_CODE, GraphQLError
from plugboard.graphql.operation import Operation, OperationRejected
from plugboard.graphql.shared_streams import EncodeOnce
from plugboard.middleware import REQUEST_ID
from plugboard.plugins.realtime import presence
from plugboard.plugins.realtime.limiter import WEBSOCKET, client_address, limiter_of

if TYPE_CHECKING:
    from plugboard.graphql.context import Context
    from plugboard.plugins.realtime.config import RealtimeConfig

logger = logging.getLogger("plugboard.realtime.ws")

GRAPHQL_TRANSPORT_WS = "graphql-transport-ws"
#: The legacy subscriptions-transport-ws protocol's subprotocol name.
GRAPHQL_WS = "graphql-ws"
SUBPROTOCOLS = (GRAPHQL_TRANSPORT_WS, GRAPHQL_WS)

CLOSE_GOING_AWAY = 1001
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_SUBPROTOCOL_NOT_ACCEPTABLE = 4406
CLOSE_INIT_TIMEOUT = 4408
CLOSE_SUBSCRIBER_EXISTS = 4409
CLOSE_TOO_MANY = 4429
CLOSE_INTERNAL_ERROR = 4500

_ALLOWED_TYPES = ("query", "mutation", "subscription")
# A close frame carries at most 125 bytes: two for the code, the rest reason.
_MAX_REASON_BYTES = 123


class WebSocketState:
    """Per-app WebSocket bookkeeping: the live connections and the app's result encoder."""

    def __init__(self) -> None:
        self.connections: set["_Connection"] = set()
        #: Results' JSON: subscribers sharing a stream get the same result, encoded once.
        self.encode = EncodeOnce(_dumps)


#: The app's :class:`WebSocketState` (set when the transport is created).
WS_STATE = web.AppKey("plugboard.realtime.ws_state", WebSocketState)


def choose_subprotocol(header: str) -> str | None:
    """The subprotocol to speak for a ``Sec-WebSocket-Protocol`` header, or None."""
    offered = {item.strip() for item in header.split(",") if item.strip()}
    for protocol in SUBPROTOCOLS:
        if protocol in offered:
            return protocol
    return None


class WebSocketTransport:
    """The core transport interface for GraphQL over WebSocket (both subprotocols)."""

    name = "websocket"
    methods = ("GET",)

    def __init__(self, app: web.Application, config: "RealtimeConfig") -> None:
        self.app = app
        self.config = config
        app[WS_STATE] = WebSocketState()
        self.limiter = limiter_of(app, config)
        app.on_shutdown.append(self._on_shutdown)

    def matches(self, request: web.Request) -> bool:
        tokens = request.headers.get(hdrs.UPGRADE, "").lower().split(",")
        return "websocket" in (token.strip() for token in tokens)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        options = self.config.websocket
        protocol = choose_subprotocol(request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, ""))
        ws = web.WebSocketResponse(
            protocols=(protocol,) if protocol else (),
            heartbeat=options.keepalive,
            max_msg_size=options.max_message_size,
            compress=False,
        )
        state = request.app[WS_STATE]
        ip = client_address(request)
        # Check and count before the first await, so concurrent handshakes
        # from one address cannot all slip under the limit.
        over_limit = not self.limiter.acquire(WEBSOCKET, ip)
        try:
            await ws.prepare(request)
            if over_limit:
                await ws.close(code=CLOSE_TOO_MANY, message=_reason("Too many connections from this address"))
                return ws
            if protocol is None:
                await ws.close(code=CLOSE_SUBPROTOCOL_NOT_ACCEPTABLE, message=_reason("Subprotocol not acceptable"))
                return ws
            cls = TransportWSConnection if protocol == GRAPHQL_TRANSPORT_WS else LegacyConnection
            connection = cls(request, ws, self.config)
            state.connections.add(connection)
            try:
                await connection.serve()
            finally:
                state.connections.discard(connection)
        finally:
            if not over_limit:
                self.limiter.release(WEBSOCKET, ip)
        return ws

    async def _on_shutdown(self, app: web.Application) -> None:
        # aiohttp does not end WebSocket handlers on shutdown: ask each
        # client to go away so handlers finish and free their operations.
        connections = list(app[WS_STATE].connections)
        for connection in connections:
            connection.request_close(CLOSE_GOING_AWAY, "Server shutting down")
        await asyncio.gather(*(c.wait_closed() for c in connections), return_exceptions=True)


def _reason(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) <= _MAX_REASON_BYTES:
        return raw
    return raw[: _MAX_REASON_BYTES - 3].decode("utf-8", "ignore").encode("utf-8") + b"..."


def _json_default(value: Any) -> Any:
    iso = getattr(value, "isoformat", None)
    if iso is not None:
        return iso()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), default=_json_default)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


class InvalidMessage(Exception):
    """A client message that breaks the protocol (graphql-transport-ws: close 4400)."""


def _parse(msg: Any) -> dict[str, Any]:
    if msg.type == WSMsgType.BINARY:
        try:
            text = msg.data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidMessage("Invalid message received: binary frame is not UTF-8 text") from None
    else:
        text = msg.data
    try:
        message = json.loads(text)
    except ValueError:
        raise InvalidMessage("Invalid message received: not valid JSON") from None
    if not isinstance(message, dict):
        raise InvalidMessage(f"Invalid message received: expected an object, got {_type_name(message)}")
    if "type" not in message:
        raise InvalidMessage("Invalid message received: the 'type' property is missing")
    if not isinstance(message["type"], str):
        raise InvalidMessage(f"Invalid message received: 'type' must be a string, got {_type_name(message['type'])}")
    return message


def _require_id(message: dict[str, Any]) -> str:
    op_id = message.get("id")
    if not isinstance(op_id, str) or not op_id:
        raise InvalidMessage(f"Invalid message received: {message['type']!r} needs a non-empty string 'id'")
    return op_id


def _optional_object(message: dict[str, Any]) -> dict[str, Any] | None:
    payload = message.get("payload")
    if payload is not None and not isinstance(payload, dict):
        raise InvalidMessage(f"Invalid message received: {message['type']!r} payload must be an object, got {_type_name(payload)}")
    return payload


def _operation_params(payload: Any) -> tuple[str, dict | None, str | None, dict | None]:
    """``(query, variables, operationName, extensions)`` from a subscribe/start payload."""
    if not isinstance(payload, dict):
        raise InvalidMessage(f"Invalid message received: the payload must be an object, got {_type_name(payload)}")
    query = payload.get("query")
    if not isinstance(query, str):
        raise InvalidMessage("Invalid message received: the payload needs a 'query' string")
    variables = payload.get("variables")
    if variables is not None and not isinstance(variables, dict):
        raise InvalidMessage("Invalid message received: 'variables' must be an object (or null)")
    operation_name = payload.get("operationName")
    if operation_name is not None and not isinstance(operation_name, str):
        raise InvalidMessage("Invalid message received: 'operationName' must be a string (or null)")
    extensions = payload.get("extensions")
    if extensions is not None and not isinstance(extensions, dict):
        raise InvalidMessage("Invalid message received: 'extensions' must be an object (or null)")
    return query, variables, operation_name, extensions


class _Connection(abc.ABC):
    """One WebSocket connection: its context, operations, timers; all freed on close.

    Subclasses speak one subprotocol; this base owns the lifecycle. Every
    task the connection starts (``self.operations``, the legacy protocol's
    keep-alive) is cancelled (operations close their result streams), and
    every timer too, when the socket closes for any reason. Timers are
    ``call_later`` handles rather than sleeping tasks: an idle connection
    then holds no task besides its operations'.
    """

    # Slots: thousands of idle connections each pay for an instance dict otherwise.
    __slots__ = (
        "request",
        "app",
        "ws",
        "config",
        "context",
        "init_received",
        "acknowledged",
        "operations",
        "_keepalive_task",
        "_closer",
        "_init_timer",
        "_expiry",
        "_cleaning_up",
        "_done",
        "_done_waiters",
        "_encode",
    )

    def __init__(self, request: web.Request, ws: web.WebSocketResponse, config: "RealtimeConfig") -> None:
        self.request = request
        self.app = request.app
        self.ws = ws
        self.config = config
        self.context: "Context | None" = None
        self.init_received = False
        self.acknowledged = False
        #: Operation id -> the task running it.
        self.operations: dict[str, asyncio.Task[None]] = {}
        #: The legacy protocol's ``ka`` messages.
        self._keepalive_task: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        #: Closes with 4408 unless ``connection_init`` comes first.
        self._init_timer: asyncio.TimerHandle | None = None
        #: Closes with 4403 when the identity expires.
        self._expiry: asyncio.TimerHandle | None = None
        self._cleaning_up = False
        # A flag and futures made only when someone waits, not an Event:
        # every idle connection would pay for the Event (~0.7 KB).
        self._done = False
        self._done_waiters: list[asyncio.Future[None]] = []
        self._encode = request.app[WS_STATE].encode

    # -- lifecycle ---------------------------------------------------------

    async def serve(self) -> None:
        """Read messages until the socket closes, then free everything."""
        try:
            self._init_timer = asyncio.get_running_loop().call_later(self.config.websocket.init_timeout, self._init_timed_out)
            async for msg in self.ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break  # ERROR: aiohttp has closed already (1009, protocol error)
                await self.on_message(msg)
                if self._closer is not None:
                    break
                if self.context is not None and self.context.identity is not None:
                    # Any message from a signed-in client is a presence heartbeat.
                    await presence.touch(self.app, self.context.identity)
        finally:
            await self._cleanup()

    async def _cleanup(self) -> None:
        # aiohttp may cancel the handler when the peer goes away
        # (handler_cancellation): everything that frees resources happens
        # before the first await, and the waiters are released in any case.
        self._cleaning_up = True
        for timer in (self._init_timer, self._expiry):
            if timer is not None:
                timer.cancel()
        self._init_timer = self._expiry = None
        tasks = list(self.operations.values())
        if self._keepalive_task is not None:
            tasks.append(self._keepalive_task)
        self.operations.clear()
        for task in tasks:
            task.cancel()
        closer = self._closer
        try:
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            if closer is not None:
                await closer
            elif not self.ws.closed:
                await self.ws.close()
        except asyncio.CancelledError:
            if closer is not None:
                closer.cancel()
            raise
        finally:
            self._done = True
            for waiter in self._done_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._done_waiters.clear()

    async def wait_closed(self) -> None:
        if self._done:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._done_waiters.append(waiter)
        await waiter

    def request_close(self, code: int, reason: str) -> None:
        """Close the socket with ``code`` (once); the reading loop then ends and cleans up."""
        if self._closer is None and not self._cleaning_up and not self.ws.closed:
            self._closer = asyncio.create_task(self._close(code, reason), name=f"plugboard.ws.close.{code}")

    async def _close(self, code: int, reason: str) -> None:
        try:
            await self.ws.close(code=code, message=_reason(reason))
        except ConnectionError:
            pass

    def mark_init_received(self) -> None:
        self.init_received = True
        if self._init_timer is not None:
            self._init_timer.cancel()
            self._init_timer = None

    def _init_timed_out(self) -> None:
        self._init_timer = None
        if not self.init_received:
            self.request_close(CLOSE_INIT_TIMEOUT, "Connection initialisation timeout")

    def _identity_expired(self) -> None:
        self._expiry = None
        self.request_close(CLOSE_FORBIDDEN, "Forbidden: identity expired")

    async def send(self, message: dict[str, Any]) -> bool:
        """Send one message; False when the socket is gone (the caller just stops)."""
        return await self.send_text(_dumps(message))

    async def send_payload(self, op_id: str, kind: str, result: dict[str, Any]) -> bool:
        """Send ``{"id", "type": kind, "payload": result}``, built around the result's JSON.

        Subscribers sharing a stream get the same result object: its JSON is
        made once for all of them (:class:`EncodeOnce`).
        """
        return await self.send_text(f'{{"id":{_dumps(op_id)},"type":"{kind}","payload":{self._encode(result)}}}')

    async def send_text(self, text: str) -> bool:
        """Send one encoded message; False when the socket is gone."""
        if self.ws.closed:
            return False
        try:
            await self.ws.send_str(text)
        except (ConnectionError, RuntimeError):
            return False
        return True

    # -- connection_init ---------------------------------------------------

    async def initialise(self, payload: dict[str, Any] | None) -> tuple[int, str, list[dict[str, Any]]] | None:
        """Build the connection's context from the upgrade request and the init payload.

        Returns None once the connection may be acknowledged, else ``(close
        code, close reason, errors)``: the caller tells the client in its
        protocol's form and closes.
        """
        app = self.app
        request_id = self.request[REQUEST_ID]
        try:
            context = await app[keys.CONTEXT_BUILDER].build(
                app, self.request, request_id=request_id, transport="ws", connection_params=payload
            )
        except GraphQLError as e:
            if e.code in ("UNAUTHENTICATED", "FORBIDDEN"):
                return CLOSE_FORBIDDEN, f"Forbidden: {e.message}", [e.formatted()]
            return WS_CLOSE_FOR_CODE.get(e.code, CLOSE_BAD_REQUEST), e.message, [e.formatted()]
        except Exception as e:
            logger.error("WebSocket connection_init: the context hook raised (request %s)", request_id, exc_info=e)
            return CLOSE_INTERNAL_ERROR, "Internal server error", [_internal_error(request_id)]
        expires_at = context.identity_expires_at
        if isinstance(expires_at, (int, float)) and not isinstance(expires_at, bool) and math.isfinite(expires_at):
            if expires_at <= time.time():
                return CLOSE_FORBIDDEN, "Forbidden: identity expired", [GraphQLError("identity expired", "FORBIDDEN").formatted()]
            if not self._cleaning_up:
                self._expiry = asyncio.get_running_loop().call_later(expires_at - time.time(), self._identity_expired)
        self.context = context
        self.acknowledged = True
        return None

    # -- operations --------------------------------------------------------

    def new_operation(self, params: tuple[str, dict | None, str | None, dict | None]) -> Operation:
        """Prepare the operation for validated subscribe/start params (see ``_operation_params``).

        Raises OperationRejected for a document that does not parse or
        validate, or an operation that is not allowed.
        """
        query, variables, operation_name, extensions = params
        op = Operation(
            query=query,
            variables=variables,
            operation_name=operation_name,
            extensions=extensions,
            context=self.context,
            transport="ws",
        )
        self.app[keys.RUNNER].prepare(op, allowed_types=_ALLOWED_TYPES)
        if op.operation_type == "subscription" and not self.config.subscriptions:
            raise OperationRejected(
                "subscriptions are disabled (realtime.subscriptions: false)",
                400,
                errors=[GraphQLError("subscriptions are disabled (realtime.subscriptions: false)", "BAD_REQUEST").formatted()],
            )
        return op

    def over_limit(self) -> bool:
        return len(self.operations) >= self.config.websocket.max_subscriptions_per_connection

    def too_many_errors(self) -> list[dict[str, Any]]:
        limit = self.config.websocket.max_subscriptions_per_connection
        return [
            GraphQLError(
                f"too many operations on this connection (the limit is {limit}); complete one first",
                "TOO_MANY_SUBSCRIPTIONS",
                extensions={"limit": limit},
            ).formatted()
        ]

    async def begin_operation(self, op_id: str, params: Any) -> None:
        """Prepare and start one operation, or answer its id with errors (the socket stays up)."""
        try:
            op = self.new_operation(params)
        except OperationRejected as e:
            await self.send_errors(op_id, e.errors)
            return
        if self.over_limit():
            await self.send_errors(op_id, self.too_many_errors())
            return
        self.start_operation(op_id, op)

    def start_operation(self, op_id: str, op: Operation) -> None:
        task = asyncio.create_task(self._run(op_id, op), name=f"plugboard.ws.operation.{op_id[:40]}")
        self.operations[op_id] = task

    def stop_operation(self, op_id: str) -> bool:
        """Cancel an operation (its stream is closed by its task); False if unknown."""
        task = self.operations.pop(op_id, None)
        if task is None:
            return False
        task.cancel()
        return True

    async def _run(self, op_id: str, op: Operation) -> None:
        runner = self.app[keys.RUNNER]
        stream: AsyncIterator[dict[str, Any]] | None = None
        try:
            if op.operation_type == "subscription":
                stream = await runner.subscribe(op)
                try:
                    async for result in stream:
                        if not await self.send_result(op_id, result):
                            return
                except Exception as e:  # mid-stream: one result carrying the errors, then complete
                    if not await self.send_result(op_id, {"data": None, "errors": self._stream_errors(e)}):
                        return
            else:
                result = await runner.run(op)
                if not await self.send_result(op_id, result):
                    return
            self._forget(op_id)
            await self.send_complete(op_id)
        except OperationRejected as e:
            self._forget(op_id)
            await self.send_errors(op_id, e.errors)
        except GraphQLError as e:
            self._forget(op_id)
            await self.send_errors(op_id, [e.formatted()])
        except Exception as e:
            logger.error("WebSocket operation %r failed (request %s)", op_id, self.request[REQUEST_ID], exc_info=e)
            self._forget(op_id)
            await self.send_errors(op_id, [_internal_error(self.request[REQUEST_ID], e if self._debug else None)])
        finally:
            self._forget(op_id)
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception as e:  # a stream that fails to close must not mask the operation's end
                    logger.warning("WebSocket operation %r: closing its stream raised", op_id, exc_info=e)

    def _forget(self, op_id: str) -> None:
        # Only if the id still names this task: the client may have completed
        # it and reused the id for a new operation meanwhile.
        if self.operations.get(op_id) is asyncio.current_task():
            del self.operations[op_id]

    @property
    def _debug(self) -> bool:
        return bool(self.app[keys.CORE_CONFIG].server.debug)

    def _stream_errors(self, e: Exception) -> list[dict[str, Any]]:
        if isinstance(e, OperationRejected):
            return e.errors
        if isinstance(e, GraphQLError):
            return [e.formatted()]
        coerce = getattr(e, "coerce_value", None)
        if coerce is not None:  # a TartifletteError: the engine has masked or kept its message
            try:
                return [coerce()]
            except Exception:  # noqa: BLE001 - a broken error object: mask it like any bug, below
                pass
        logger.error("WebSocket subscription stream raised (request %s)", self.request[REQUEST_ID], exc_info=e)
        return [_internal_error(self.request[REQUEST_ID], e if self._debug else None)]

    # -- protocol-specific -------------------------------------------------

    @abc.abstractmethod
    async def on_message(self, msg: Any) -> None:
        """Protocol-specific: each subclass implements it."""

    @abc.abstractmethod
    async def send_result(self, op_id: str, result: dict[str, Any]) -> bool:
        """Protocol-specific: each subclass implements it."""

    @abc.abstractmethod
    async def send_errors(self, op_id: str, errors: list[dict[str, Any]]) -> bool:
        """Protocol-specific: each subclass implements it."""

    async def send_complete(self, op_id: str) -> bool:
        return await self.send({"id": op_id, "type": "complete"})


def _internal_error(request_id: str, e: Exception | None = None) -> dict[str, Any]:
    message = f"{type(e).__name__}: {e}" if e is not None else "Internal server error"
    return {"message": message, "extensions": {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id}}


class TransportWSConnection(_Connection):
    """The ``graphql-transport-ws`` protocol (graphql-ws library)."""

    __slots__ = ()

    async def on_message(self, msg: Any) -> None:
        try:
            message = _parse(msg)
            await self._dispatch(message)
        except InvalidMessage as e:
            self.request_close(CLOSE_BAD_REQUEST, str(e))

    async def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "connection_init":
            payload = _optional_object(message)
            if self.init_received:
                self.request_close(CLOSE_TOO_MANY, "Too many initialisation requests")
                return
            self.mark_init_received()
            refused = await self.initialise(payload)
            if refused is not None:
                self.request_close(refused[0], refused[1])
                return
            await self.send({"type": "connection_ack"})
        elif kind == "ping":
            payload = _optional_object(message)
            await self.send({"type": "pong", "payload": payload} if payload is not None else {"type": "pong"})
        elif kind == "pong":
            _optional_object(message)
        elif kind == "subscribe":
            op_id = _require_id(message)
            params = _operation_params(message.get("payload"))
            if not self.acknowledged:
                self.request_close(CLOSE_UNAUTHORIZED, "Unauthorized")
                return
            if op_id in self.operations:
                self.request_close(CLOSE_SUBSCRIBER_EXISTS, f"Subscriber for {op_id} already exists")
                return
            await self.begin_operation(op_id, params)
        elif kind == "complete":
            self.stop_operation(_require_id(message))
        elif kind in ("connection_ack", "next", "error"):
            raise InvalidMessage(f"Unexpected message of type {kind} received")
        else:
            raise InvalidMessage(f"Invalid message received: unknown type {kind!r}")

    async def send_result(self, op_id: str, result: dict[str, Any]) -> bool:
        return await self.send_payload(op_id, "next", result)

    async def send_errors(self, op_id: str, errors: list[dict[str, Any]]) -> bool:
        return await self.send({"id": op_id, "type": "error", "payload": errors})


class LegacyConnection(_Connection):
    """The legacy ``graphql-ws`` protocol (Apollo's subscriptions-transport-ws).

    Malformed messages get ``error`` messages and the socket stays open, as
    that library's server did; ``start`` before the connection is
    acknowledged is refused per operation. ``stop`` is answered with
    ``complete``.
    """

    __slots__ = ()

    async def on_message(self, msg: Any) -> None:
        try:
            message = _parse(msg)
        except InvalidMessage as e:
            await self.send({"type": "error", "payload": {"message": str(e)}})
            return
        kind = message["type"]
        op_id = message.get("id")
        try:
            if kind == "connection_init":
                await self._init(message)
            elif kind == "start":
                await self._start(message)
            elif kind == "stop":
                op_id = _require_id(message)
                if self.stop_operation(op_id):
                    await self.send_complete(op_id)
            elif kind == "connection_terminate":
                self.request_close(1000, "Connection terminated")
            else:
                raise InvalidMessage(f"Invalid message type {kind!r}")
        except InvalidMessage as e:
            error: dict[str, Any] = {"type": "error", "payload": {"message": str(e)}}
            if isinstance(op_id, str):
                error["id"] = op_id
            await self.send(error)

    async def _init(self, message: dict[str, Any]) -> None:
        if self.init_received:
            await self.send({"type": "connection_error", "payload": {"message": "Too many initialisation requests"}})
            self.request_close(CLOSE_TOO_MANY, "Too many initialisation requests")
            return
        payload = _optional_object(message)
        self.mark_init_received()
        refused = await self.initialise(payload)
        if refused is not None:
            code, reason, errors = refused
            await self.send({"type": "connection_error", "payload": errors[0]})
            self.request_close(code, reason)
            return
        await self.send({"type": "connection_ack"})
        await self.send({"type": "ka"})
        if self._keepalive_task is None and not self._cleaning_up:
            self._keepalive_task = asyncio.create_task(self._keepalive(), name="plugboard.ws.legacy-ka")

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.config.websocket.keepalive)
            if not await self.send({"type": "ka"}):
                return

    async def _start(self, message: dict[str, Any]) -> None:
        op_id = _require_id(message)
        if not self.acknowledged:
            await self.send_errors(op_id, [GraphQLError("send connection_init (and wait for connection_ack) before start", "UNAUTHENTICATED").formatted()])
            return
        params = _operation_params(message.get("payload"))
        # subscriptions-transport-ws replaces an operation whose id is reused.
        self.stop_operation(op_id)
        await self.begin_operation(op_id, params)

    async def send_result(self, op_id: str, result: dict[str, Any]) -> bool:
        return await self.send_payload(op_id, "data", result)

    async def send_errors(self, op_id: str, errors: list[dict[str, Any]]) -> bool:
        # The protocol's error payload is one error object; the others ride
        # along under "errors" (subscriptions-transport-ws clients read it).
        payload = dict(errors[0]) if errors else {"message": "unknown error"}
        if len(errors) > 1:
            payload["errors"] = errors
        return await self.send({"id": op_id, "type": "error", "payload": payload})
