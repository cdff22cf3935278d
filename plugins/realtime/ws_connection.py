"""One GraphQL WebSocket connection: its context, operations and timers, all freed on close.

This module owns what both subprotocols share: the reading loop and its
cleanup, ``connection_init``'s context (and the identity's expiry timer),
the operations in flight (one task each, with the per-connection limit) and
sending. :mod:`.ws_protocols` speaks each subprotocol on top of it.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import math
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

from aiohttp import WSMsgType, web

from plugboard import keys
from plugboard.cancelling import cancel_until_done, keep_cancelling
from plugboard.graphql.errors import WS_CLOSE_FOR_CODE, GraphQLError
from plugboard.graphql.operation import Operation, OperationRejected
from plugboard.middleware import REQUEST_ID
from plugboard.plugins.realtime import presence
from plugboard.plugins.realtime.ws_messages import (
    ALLOWED_TYPES,
    CLOSE_BAD_REQUEST,
    CLOSE_FORBIDDEN,
    CLOSE_INIT_TIMEOUT,
    CLOSE_INTERNAL_ERROR,
    dumps,
    internal_error,
    close_reason,
)

if TYPE_CHECKING:
    from plugboard.graphql.context import Context
    from plugboard.plugins.realtime.config import RealtimeConfig

logger = logging.getLogger("plugboard.realtime.ws")


class Connection(abc.ABC):
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

    def __init__(
        self, request: web.Request, ws: web.WebSocketResponse, config: "RealtimeConfig", encode: Callable[[Any], str]
    ) -> None:
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
        #: The app's :class:`~plugboard.graphql.shared_streams.EncodeOnce` for results.
        self._encode = encode

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
        closer = self._closer
        try:
            # Cancelled before its first await, so even a cancelled handler frees them.
            await cancel_until_done(tasks)
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
            await self.ws.close(code=code, message=close_reason(reason))
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
        return await self.send_text(dumps(message))

    async def send_payload(self, op_id: str, kind: str, result: dict[str, Any]) -> bool:
        """Send ``{"id", "type": kind, "payload": result}``, built around the result's JSON.

        Subscribers sharing a stream get the same result object: its JSON is
        made once for all of them (:class:`EncodeOnce`).
        """
        return await self.send_text(f'{{"id":{dumps(op_id)},"type":"{kind}","payload":{self._encode(result)}}}')

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
            return CLOSE_INTERNAL_ERROR, "Internal server error", [internal_error(request_id)]
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

    async def new_operation(self, params: tuple[str | None, dict | None, str | None, dict | None]) -> Operation:
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
        runner = self.app[keys.RUNNER]
        if extensions:
            await runner.load_persisted(op)
        runner.prepare(op, allowed_types=ALLOWED_TYPES)
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
            op = await self.new_operation(params)
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
        keep_cancelling(task)
        return True

    async def _run(self, op_id: str, op: Operation) -> None:
        runner = self.app[keys.RUNNER]
        stream: AsyncIterator[dict[str, Any]] | None = None
        try:
            if op.operation_type == "subscription":
                stream = await runner.subscribe(op)
                try:
                    async for result in stream:
                        if not self._mine(op_id) or not await self.send_result(op_id, result):
                            return
                except Exception as e:  # mid-stream: one result carrying the errors, then complete
                    if not self._mine(op_id) or not await self.send_result(op_id, {"data": None, "errors": self._stream_errors(e)}):
                        return
            else:
                result = await runner.run(op)
                if not self._mine(op_id) or not await self.send_result(op_id, result):
                    return
            if self._forget(op_id):
                await self.send_complete(op_id)
        except OperationRejected as e:
            if self._forget(op_id):
                await self.send_errors(op_id, e.errors)
        except GraphQLError as e:
            if self._forget(op_id):
                await self.send_errors(op_id, [e.formatted()])
        except Exception as e:
            logger.error("WebSocket operation %r failed (request %s)", op_id, self.request[REQUEST_ID], exc_info=e)
            if self._forget(op_id):
                await self.send_errors(op_id, [internal_error(self.request[REQUEST_ID], e if self._debug else None)])
        finally:
            self._forget(op_id)
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception as e:  # a stream that fails to close must not mask the operation's end
                    logger.warning("WebSocket operation %r: closing its stream raised", op_id, exc_info=e)

    def _mine(self, op_id: str) -> bool:
        # False once the client completed the operation (or the connection is
        # closing): nothing more may be sent for it, even if its task missed
        # the cancellation (keep_cancelling ends it soon after).
        return self.operations.get(op_id) is asyncio.current_task()

    def _forget(self, op_id: str) -> bool:
        """Drop the operation if its id still names this task; whether it did.

        The client may have completed it and reused the id for a new operation meanwhile.
        """
        if self._mine(op_id):
            del self.operations[op_id]
            return True
        return False

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
        return [internal_error(self.request[REQUEST_ID], e if self._debug else None)]

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

