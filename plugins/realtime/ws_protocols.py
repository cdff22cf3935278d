"""The two GraphQL WebSocket subprotocols, each a :class:`~.ws_connection.Connection`.

``graphql-transport-ws`` (the graphql-ws library's protocol) and the legacy
``graphql-ws`` (Apollo's subscriptions-transport-ws): how each reads its
messages, answers errors and sends results.
"""

from __future__ import annotations

import asyncio
from typing import Any

from plugboard.graphql.errors import GraphQLError
from plugboard.plugins.realtime.ws_connection import Connection
from plugboard.plugins.realtime.ws_messages import (
    CLOSE_BAD_REQUEST,
    CLOSE_NORMAL,
    CLOSE_SUBSCRIBER_EXISTS,
    CLOSE_TOO_MANY,
    CLOSE_UNAUTHORIZED,
    InvalidMessage,
    operation_params,
    optional_object,
    parse,
    require_id,
)

__all__ = ["LegacyConnection", "TransportWSConnection"]


class TransportWSConnection(Connection):
    """The ``graphql-transport-ws`` protocol (graphql-ws library)."""

    __slots__ = ()

    async def on_message(self, msg: Any) -> None:
        try:
            message = parse(msg)
            await self._dispatch(message)
        except InvalidMessage as e:
            self.request_close(CLOSE_BAD_REQUEST, str(e))

    async def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "connection_init":
            payload = optional_object(message)
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
            payload = optional_object(message)
            await self.send({"type": "pong", "payload": payload} if payload is not None else {"type": "pong"})
        elif kind == "pong":
            optional_object(message)
        elif kind == "subscribe":
            op_id = require_id(message)
            params = operation_params(message.get("payload"))
            if not self.acknowledged:
                self.request_close(CLOSE_UNAUTHORIZED, "Unauthorized")
                return
            if op_id in self.operations:
                self.request_close(CLOSE_SUBSCRIBER_EXISTS, f"Subscriber for {op_id} already exists")
                return
            await self.begin_operation(op_id, params)
        elif kind == "complete":
            self.stop_operation(require_id(message))
        elif kind in ("connection_ack", "next", "error"):
            raise InvalidMessage(f"Unexpected message of type {kind} received")
        else:
            raise InvalidMessage(f"Invalid message received: unknown type {kind!r}")

    async def send_result(self, op_id: str, result: dict[str, Any]) -> bool:
        return await self.send_payload(op_id, "next", result)

    async def send_errors(self, op_id: str, errors: list[dict[str, Any]]) -> bool:
        return await self.send({"id": op_id, "type": "error", "payload": errors})


class LegacyConnection(Connection):
    """The legacy ``graphql-ws`` protocol (Apollo's subscriptions-transport-ws).

    Malformed messages get ``error`` messages and the socket stays open, as
    that library's server did; ``start`` before the connection is
    acknowledged is refused per operation. ``stop`` is answered with
    ``complete``.
    """

    __slots__ = ()

    async def on_message(self, msg: Any) -> None:
        try:
            message = parse(msg)
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
                op_id = require_id(message)
                if self.stop_operation(op_id):
                    await self.send_complete(op_id)
            elif kind == "connection_terminate":
                self.request_close(CLOSE_NORMAL, "Connection terminated")
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
        payload = optional_object(message)
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
        op_id = require_id(message)
        if not self.acknowledged:
            await self.send_errors(op_id, [GraphQLError("send connection_init (and wait for connection_ack) before start", "UNAUTHENTICATED").formatted()])
            return
        params = operation_params(message.get("payload"))
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

