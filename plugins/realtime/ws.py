"""GraphQL over WebSocket on the GraphQL path: the transport that accepts connections.

This module owns the upgrade: subprotocol negotiation (``graphql-transport-ws``,
else the legacy ``graphql-ws``), the per-address connection limit (through the
app's :class:`~plugboard.plugins.realtime.limiter.ConnectionLimiter`), one
connection object per socket (:mod:`.ws_protocols`) and ending them all at
shutdown. Behaviour and close codes: ``plugins/realtime/PROTOCOLS.md``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import hdrs, web

from plugboard.graphql.shared_streams import EncodeOnce
from plugboard.plugins.realtime.limiter import WEBSOCKET, client_address, limiter_of
from plugboard.plugins.realtime.ws_connection import Connection
from plugboard.plugins.realtime.ws_messages import (
    CLOSE_GOING_AWAY,
    CLOSE_SUBPROTOCOL_NOT_ACCEPTABLE,
    CLOSE_TOO_MANY,
    close_reason,
    dumps,
)
from plugboard.plugins.realtime.ws_protocols import LegacyConnection, TransportWSConnection

if TYPE_CHECKING:
    from plugboard.plugins.realtime.config import RealtimeConfig

GRAPHQL_TRANSPORT_WS = "graphql-transport-ws"
#: The legacy subscriptions-transport-ws protocol's subprotocol name.
GRAPHQL_WS = "graphql-ws"
SUBPROTOCOLS = (GRAPHQL_TRANSPORT_WS, GRAPHQL_WS)


class WebSocketState:
    """Per-app WebSocket bookkeeping: the live connections and the app's result encoder."""

    def __init__(self) -> None:
        self.connections: set["Connection"] = set()
        #: Results' JSON: subscribers sharing a stream get the same result, encoded once.
        self.encode = EncodeOnce(dumps)


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
                await ws.close(code=CLOSE_TOO_MANY, message=close_reason("Too many connections from this address"))
                return ws
            if protocol is None:
                await ws.close(code=CLOSE_SUBPROTOCOL_NOT_ACCEPTABLE, message=close_reason("Subprotocol not acceptable"))
                return ws
            cls = TransportWSConnection if protocol == GRAPHQL_TRANSPORT_WS else LegacyConnection
            connection = cls(request, ws, self.config, state.encode)
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

