"""The direct channels' ``/ws`` endpoint: JSON messages over a WebSocket, one client object each.

This module owns the handler and :class:`WSClient`: the message loop
(``auth``, ``subscribe``, ``unsubscribe``, ``publish``, ``ping``), one feed
task per subscribed topic (replay from the history, then live events), and
the close codes. The message formats are in ``plugins/realtime/PROTOCOLS.md``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from aiohttp import WSMsgType, web

from plugboard import keys
from plugboard.cancelling import cancel_until_done
from plugboard.graphql.errors import WS_CLOSE_FOR_CODE, GraphQLError
from plugboard.middleware import REQUEST_ID, REQUEST_ID_HEADER
from plugboard.plugins.realtime import presence, ws_messages
from plugboard.plugins.realtime.channels.authorization import authorize, check_topic
from plugboard.plugins.realtime.channels.connection import (
    ChannelError,
    Connection,
    Replayed,
    build_context,
    check_last_id,
    expires_in,
    http_error,
)
from plugboard.plugins.realtime.channels.hub import CHANNELS, ChannelHub
from plugboard.plugins.realtime.channels.publishing import encode_data, live_event, publish_encoded
from plugboard.plugins.realtime.history import ChannelEvent
from plugboard.plugins.realtime.limiter import CHANNELS_WS, client_address

if TYPE_CHECKING:
    from plugboard.graphql.context import Context

__all__ = ["WSClient", "ws_handler"]

logger = logging.getLogger("plugboard.realtime.channels")

CLOSE_GOING_AWAY = 1001
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_MANY = 4429
CLOSE_CONTEXT_FAILED = 4500

_WS_TYPES = ("auth", "subscribe", "unsubscribe", "publish", "ping")


def _ws_close_code(error: GraphQLError) -> int:
    return WS_CLOSE_FOR_CODE.get(error.code, CLOSE_FORBIDDEN)



class WSClient(Connection):
    """One ``/ws`` client: the message loop and one feed task per subscribed topic."""

    def __init__(
        self, hub: ChannelHub, request: web.Request, context: "Context", ws: web.WebSocketResponse, *, header_auth: bool
    ) -> None:
        super().__init__(hub, request, context)
        self.ws = ws
        self.authenticated = header_auth
        self.feeds: dict[str, asyncio.Task] = {}
        self.closer: asyncio.Task | None = None
        # Two keep-alive intervals, as for a client that stops answering pings.
        self.send_timeout = max(2 * float(self.config.websocket.keepalive), 1.0)
        # A token bucket: publish_rate tokens a second, as many at most.
        self._publish_tokens = float(self.config.channels.publish_rate)
        self._publish_refilled = time.monotonic()

    async def serve(self) -> None:
        self.arm_expiry()
        handlers: dict[str, Callable[[dict], Awaitable[None]]] = {
            "auth": self._on_auth,
            "subscribe": self._on_subscribe,
            "unsubscribe": self._on_unsubscribe,
            "publish": self._on_publish,
            "ping": self._on_ping,
        }
        async for msg in self.ws:
            if msg.type == WSMsgType.TEXT:
                message: dict = {}
                try:
                    message = self._parse(msg.data)
                    if self.authenticated:
                        await presence.touch(self.app, self.context.identity)
                    await handlers[message["type"]](message)
                except ChannelError as e:
                    await self.send_error(e.message, e.topic)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("channels: /ws message %r failed", message.get("type"))
                    topic = message.get("topic")
                    await self.send_error("internal server error", topic if isinstance(topic, str) else None)
            elif msg.type == WSMsgType.BINARY:
                await self.send_error("binary messages are not supported: send JSON text messages")
            else:
                # ERROR: aiohttp has already closed the socket (1009 for a
                # message over max_msg_size, 1002 for a protocol error).
                break

    @staticmethod
    def _parse(text: str) -> dict:
        try:
            # Depth-bounded: 50,000 '[' is an error message, not a RecursionError.
            message = ws_messages.loads(text)
        except ValueError as e:
            raise ChannelError(f"invalid JSON: {e}") from None
        if not isinstance(message, dict):
            raise ChannelError("a message must be a JSON object with a 'type'")
        kind = message.get("type")
        if kind not in _WS_TYPES:
            shown = kind if isinstance(kind, str) else json.dumps(kind)
            raise ChannelError(f"unknown message type {shown!r}; expected one of: {', '.join(_WS_TYPES)}")
        return message

    # -- sending --------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> bool:
        if self.ws.closed:
            return False
        text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
        try:
            async with asyncio.timeout(self.send_timeout):
                await self.ws.send_str(text)
        except TimeoutError:
            logger.info("channels: /ws client stopped reading for %.0fs; dropped", self.send_timeout)
            transport = self.request.transport
            if transport is not None:
                transport.abort()
            return False
        except ConnectionError:
            return False
        return True

    async def send_error(self, message: str, topic: str | None = None) -> None:
        body: dict[str, Any] = {"type": "error", "message": message}
        if topic is not None:
            body["topic"] = topic
        await self.send(body)

    def request_close(self, code: int, reason: str) -> None:
        """Close the socket from any task; the message loop then ends. Idempotent."""
        if self.closer is None and not self.ws.closed:
            # Not one of self.tasks: release() lets the close handshake finish.
            self.closer = asyncio.ensure_future(self.ws.close(code=code, message=reason.encode()[:120]))
            self.closer.set_name("realtime.channels.ws.close")

    async def wait_closed(self) -> None:
        if self.closer is not None:
            # The close frame is out once the closer runs; this bounds the
            # wait for the client's answer.
            done, _ = await asyncio.wait({self.closer}, timeout=1.0)
            if not done:
                self.closer.cancel()
                await asyncio.gather(self.closer, return_exceptions=True)

    def on_expired(self) -> None:
        self.request_close(CLOSE_FORBIDDEN, "Forbidden: identity expired")

    async def shut_down(self) -> None:
        self.request_close(CLOSE_GOING_AWAY, "Server shutting down")
        await self.wait_closed()

    # -- messages -------------------------------------------------------------

    @staticmethod
    def _topic(message: dict) -> str:
        topic = message.get("topic")
        try:
            return check_topic(topic)
        except ValueError as e:
            raise ChannelError(f"'topic': {e}") from None

    async def _on_auth(self, message: dict) -> None:
        token = message.get("token")
        if not isinstance(token, str) or not token:
            raise ChannelError("'auth' needs a non-empty string 'token'")
        if self.authenticated:
            raise ChannelError("already authenticated on this connection")
        try:
            context = await self.app[keys.CONTEXT_BUILDER].build(
                self.app,
                self.request,
                request_id=self.request[REQUEST_ID],
                transport="ws",
                connection_params={"authToken": token},
            )
        except GraphQLError as e:
            await self.send_error(e.message)
            self.request_close(_ws_close_code(e), e.message)
            return
        except Exception:
            logger.exception("channels: the context hook failed on /ws auth")
            self.request_close(CLOSE_CONTEXT_FAILED, "Internal server error")
            return
        if context.identity is None:
            # No plugboard_context implementation took the token: it proves
            # nothing, so the client must not be told it is signed in.
            await self.send_error("authentication failed: the token was not accepted")
            self.request_close(CLOSE_UNAUTHORIZED, "Unauthorized: the token was not accepted")
            return
        remaining = expires_in(context)
        if remaining is not None and remaining <= 0:
            await self.send_error("identity expired")
            self.request_close(CLOSE_FORBIDDEN, "Forbidden: identity expired")
            return
        self.context = context
        self.authenticated = True
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self.arm_expiry()
        await self.send({"type": "authenticated"})

    async def _on_subscribe(self, message: dict) -> None:
        topic = self._topic(message)
        last_id = check_last_id(message.get("lastEventId"))
        if topic in self.feeds:
            raise ChannelError(f"already subscribed to {topic!r}", topic=topic)
        limit = self.config.websocket.max_subscriptions_per_connection
        if len(self.feeds) >= limit:
            raise ChannelError(f"subscription limit reached: at most {limit} topics per connection", topic=topic)
        await self._authorize(topic, "subscribe")
        try:
            sub = await self.subscribe(topic)
        except ChannelError as e:
            e.topic = topic
            raise
        self.feeds[topic] = self.spawn(self._feed(topic, sub, last_id), f"realtime.channels.ws.{topic}")

    async def _authorize(self, topic: str, action: str) -> None:
        try:
            allowed = await authorize(self.app, self.context, topic, action)
        except GraphQLError as e:
            raise ChannelError(e.message, e.http_status, e.code, topic=topic) from None
        if not allowed:
            raise ChannelError(f"not allowed to {action} to topic {topic!r}", 403, "FORBIDDEN", topic=topic)

    async def _feed(self, topic: str, sub: Any, last_id: str | None) -> None:
        try:
            await sub.wait_ready()
            replay: list[ChannelEvent] = []
            if last_id is not None:
                assert self.hub.history is not None
                try:
                    replay = await self.hub.history.after(last_id, [topic])
                except Exception as e:
                    logger.warning("channels: cannot read the event history: %s", e)
                    await self.send_error("the event history is unavailable; retry later", topic)
                    await self._drop(topic)
                    return
            await self.send({"type": "subscribed", "topic": topic})
            for event in replay:
                await self.send({"type": "event", "topic": topic, "id": event.id, "data": event.data})
            replayed = Replayed(replay)
            async for payload in sub:
                event = live_event(payload, topic)
                if event is None or replayed.seen(event.id):
                    continue
                await self.send({"type": "event", "topic": topic, "id": event.id, "data": event.data})
            if sub.overflowed:
                self.request_close(CLOSE_TOO_MANY, f"Too slow: fell {self.config.queue_size} events behind")
            elif self.feeds.get(topic) is asyncio.current_task():
                # The provider ended it (shutdown): tell the client rather than go quiet.
                await self.send_error("subscription ended by the server", topic)
                await self._drop(topic)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("channels: event delivery on %r failed", topic)
            await self._drop(topic)

    async def _drop(self, topic: str) -> None:
        self.feeds.pop(topic, None)
        sub = self.subscriptions.pop(topic, None)
        if sub is not None:
            await sub.close()

    async def _on_unsubscribe(self, message: dict) -> None:
        topic = self._topic(message)
        task = self.feeds.pop(topic, None)
        if task is None:
            raise ChannelError(f"not subscribed to {topic!r}", topic=topic)
        await cancel_until_done([task])
        sub = self.subscriptions.pop(topic, None)
        if sub is not None:
            await sub.close()
        await self.send({"type": "unsubscribed", "topic": topic})

    def _take_publish_token(self) -> bool:
        rate = self.config.channels.publish_rate
        now = time.monotonic()
        self._publish_tokens = min(float(rate), self._publish_tokens + (now - self._publish_refilled) * rate)
        self._publish_refilled = now
        if self._publish_tokens < 1.0:
            return False
        self._publish_tokens -= 1.0
        return True

    async def _on_publish(self, message: dict) -> None:
        topic = self._topic(message)
        if "data" not in message:
            raise ChannelError("'publish' needs 'data' (any JSON value)", topic=topic)
        options = self.config.channels
        # Before the authorization hook: refused attempts cost a token too,
        # so a flood of them does not reach the hook at full speed.
        if not self._take_publish_token():
            raise ChannelError(
                f"publishing too fast: at most {options.publish_rate} per second on one connection "
                "(realtime.channels.publish_rate)",
                429,
                "TOO_MANY_REQUESTS",
                topic=topic,
            )
        await self._authorize(topic, "publish")
        try:
            data_json = encode_data(topic, message["data"])
        except TypeError as e:
            raise ChannelError(str(e), topic=topic) from None
        size = len(data_json.encode("utf-8"))
        if size > options.max_payload_size:
            raise ChannelError(
                f"'data' is {size} bytes of JSON; the limit (realtime.channels.max_payload_size) is {options.max_payload_size}",
                413,
                "PAYLOAD_TOO_LARGE",
                topic=topic,
            )
        try:
            event_id = await publish_encoded(self.app, topic, message["data"], data_json)
        except Exception as e:
            logger.warning("channels: publish to %r failed: %s", topic, e)
            raise ChannelError("could not publish the event; retry later", 503, "SERVICE_UNAVAILABLE", topic=topic) from None
        await self.send({"type": "published", "topic": topic, "id": event_id})

    async def _on_ping(self, message: dict) -> None:
        await self.send({"type": "pong"})



async def ws_handler(request: web.Request) -> web.StreamResponse:
    """``/ws``: direct channels as JSON messages over a WebSocket."""
    hub = request.app[CHANNELS]
    config = hub.config
    options = config.websocket
    ws = web.WebSocketResponse(heartbeat=options.keepalive, max_msg_size=options.max_message_size, compress=False)
    if not ws.can_prepare(request).ok:
        return http_error(
            "this endpoint speaks WebSocket: send an Upgrade: websocket request",
            426,
            "UPGRADE_REQUIRED",
            headers={"Upgrade": "websocket", "Connection": "Upgrade"},
        )
    ip = client_address(request)
    # Counted before the first await so concurrent handshakes cannot all slip in.
    slot = hub.limiter.acquire(CHANNELS_WS, ip)
    try:
        ws.headers[REQUEST_ID_HEADER] = request[REQUEST_ID]
        await ws.prepare(request)
        # Refusals are close codes: a browser sees those, not a handshake status.
        if not slot:
            await ws.close(code=CLOSE_TOO_MANY, message=b"Too many connections from this address")
            return ws
        try:
            context = await build_context(request, "ws")
        except GraphQLError as e:
            await ws.close(code=_ws_close_code(e), message=e.message.encode()[:120])
            return ws
        except Exception:
            logger.exception("channels: the context hook failed on /ws")
            await ws.close(code=CLOSE_CONTEXT_FAILED, message=b"Internal server error")
            return ws
        remaining = expires_in(context)
        if remaining is not None and remaining <= 0:
            await ws.close(code=CLOSE_FORBIDDEN, message=b"Forbidden: identity expired")
            return ws
        client = WSClient(hub, request, context, ws, header_auth=context.identity is not None)
        hub.connections.add(client)
        try:
            await client.serve()
        finally:
            hub.connections.discard(client)
            await client.release()
            await client.wait_closed()
            if not ws.closed:
                await ws.close()
    finally:
        if slot:
            hub.limiter.release(CHANNELS_WS, ip)
    return ws
