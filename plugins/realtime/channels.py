"""Direct channels: named topics over plain SSE and JSON WebSocket, with replay.

This module owns the two endpoints for clients that do not speak GraphQL,
``GET /events`` (Server-Sent Events) and ``/ws`` (JSON over WebSocket), the
authorization of their topics (the ``plugboard_channel_authorize`` hook),
each connection's subscriptions and tasks, and :func:`publish_event`, the
function other plugins call to send to a direct channel.

Events
    :func:`publish_event` appends the event to the history
    (:mod:`plugboard.plugins.realtime.history`: memory, or Redis streams when
    ``redis.url`` is set), which gives it its id, then publishes
    ``{"id", "topic", "data"}`` on the pubsub topic ``channels.<topic>`` so
    every instance delivers it live. Ids are ``<ms>-<seq>``, global and
    ordered across topics (and across instances sharing a Redis), so one
    ``Last-Event-ID`` positions a client in every topic it follows. The
    ``channels.`` namespace keeps other features' internal pubsub topics out
    of reach of these endpoints.

Replay without gaps or duplicates
    A connection subscribes to the pubsub (and waits for the backend to
    confirm) *before* reading the history, so an event published meanwhile is
    in the history, live, or both. The replay is sent first, in id order,
    while live events wait in the subscription's bounded queue; live events
    that were part of the replay are then dropped. Events older than the
    retention window (``realtime.channels.retention``, at most
    ``retention_max_events`` per topic) cannot be replayed.

``GET /events?topic=a&topic=b``
    ``Last-Event-ID`` header (what ``EventSource`` sends on reconnect; it
    wins) or ``lastEventId`` query parameter. Each event is ``id: <id>``,
    ``event: <topic>``, ``data: <JSON>``; a comment every
    ``realtime.sse.keepalive`` seconds keeps proxies from closing the stream.
    Errors before the stream starts are JSON ``{"error", "code", "topic"?}``
    with 400 (no, invalid or too many topics, invalid ``Last-Event-ID``), 401
    / 403 (from the context hook; 401 for an identity already expired), 403
    (a topic that is not allowed; the body names it), 429 (more than
    ``realtime.sse.max_connections_per_ip`` streams from one address), 503
    (no pubsub or history backend). The stream ends when the identity
    expires, when the client falls ``queue_size`` events behind under
    ``overflow: close`` (the client reconnects and catches up from the
    history), or at shutdown.

``/ws`` (JSON text messages)
    Client: ``{"type": "auth", "token"}`` (the context hook gets
    ``connection_params={"authToken": token}``; only while anonymous),
    ``{"type": "subscribe", "topic", "lastEventId"?}``, ``{"type":
    "unsubscribe", "topic"}``, ``{"type": "publish", "topic", "data"}``,
    ``{"type": "ping"}``. Server: ``{"type": "subscribed", "topic"}`` (sent
    once live events flow: what is published after it is delivered),
    ``{"type": "event", "topic", "id", "data"}``, ``{"type":
    "unsubscribed", "topic"}``, ``{"type": "published", "topic", "id"}``,
    ``{"type": "authenticated"}``, ``{"type": "pong"}``, ``{"type":
    "error", "message", "topic"?}``. A bad
    message (invalid JSON, unknown type, a refused topic, the
    ``max_subscriptions_per_connection`` limit) gets an ``error`` and the
    socket stays up. The identity comes from the upgrade request
    (``Authorization`` header) or the ``auth`` message. Close codes: 1001
    shutdown, 1009 message larger than ``max_message_size``, 4401/4403 the
    context hook refused (``UNAUTHENTICATED``/``FORBIDDEN``), 4403 identity
    expired, 4429 too many connections from one address or fell behind
    under ``overflow: close``, 4500 the context hook failed. Clients should
    remember the last id per topic and send it as ``lastEventId``.

Backpressure
    A client that stops reading blocks only its own writes, never publishers
    or other clients. An ``/events`` stream has one queue of at most
    ``realtime.queue_size`` live events (its pumps move events there from the
    subscriptions at once, and it is ordered by id); when full,
    ``overflow: drop_oldest`` drops the oldest and counts it, ``overflow:
    close`` aborts the connection (the client reconnects with
    ``Last-Event-ID`` and catches up from the history). A ``/ws``
    subscription writes straight from the pubsub's bounded queue (same size
    and policy; ``close`` closes the socket with 4429). A write stalled for
    two keep-alive intervals drops the connection. Everything a connection
    started is cancelled and closed when it ends.
"""

from __future__ import annotations

import abc
import asyncio
import heapq
import inspect
import json
import logging
import re
import time
from collections import Counter
from typing import Any, Awaitable, Callable

from aiohttp import WSMsgType, web
from aiohttp_sse import EventSourceResponse

from plugboard import keys
from plugboard.graphql.errors import WS_CLOSE_FOR_CODE, GraphQLError
from plugboard.middleware import REQUEST_ID, REQUEST_ID_HEADER
from plugboard.plugins.realtime import presence
from plugboard.plugins.realtime.config import RealtimeConfig
from plugboard.plugins.realtime.history import (
    ChannelEvent,
    EventHistory,
    MemoryHistory,
    RedisHistory,
    parse_event_id,
)
from plugboard.providers.pubsub import PubSubOptions

__all__ = [
    "CHANNELS",
    "PUBSUB_NAMESPACE",
    "ChannelHub",
    "authorize",
    "channel_routes",
    "check_topic",
    "default_authorization",
    "publish_event",
]

logger = logging.getLogger("plugboard.realtime.channels")

#: Direct-channel topic ``t`` travels on the pubsub topic ``channels.t``.
PUBSUB_NAMESPACE = "channels."

# Topics end up in SSE ``event:`` lines and Redis keys: no spaces or line breaks.
_TOPIC = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,199}$")

CLOSE_GOING_AWAY = 1001
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_MANY = 4429
CLOSE_CONTEXT_FAILED = 4500

_WS_TYPES = ("auth", "subscribe", "unsubscribe", "publish", "ping")


class ChannelError(Exception):
    """A request the channels refuse: ``message`` for the client, HTTP ``status``, ``code``."""

    def __init__(self, message: str, status: int = 400, code: str = "BAD_REQUEST", *, topic: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.topic = topic


class ChannelHub:
    """Per-app state of the direct channels: the history, open connections, per-address counts.

    Created when the routes are built; the history is chosen at start-up
    (Redis streams when the app has a Redis client, else memory).
    """

    def __init__(self, config: RealtimeConfig) -> None:
        self.config = config
        self.history: EventHistory | None = None
        self.connections: set[_Connection] = set()
        #: Open connections per ``(endpoint, client address)``.
        self.per_ip: Counter[tuple[str, str]] = Counter()

    async def on_startup(self, app: web.Application) -> None:
        options = self.config.channels
        client = app.get(keys.REDIS)
        if client is not None:
            pubsub_options = getattr(app.get(keys.PUBSUB), "options", None)
            prefix = getattr(pubsub_options, "prefix", PubSubOptions().prefix)
            self.history = RedisHistory(
                client, prefix=prefix, retention=options.retention, max_events=options.retention_max_events
            )
        else:
            self.history = MemoryHistory(retention=options.retention, max_events=options.retention_max_events)

    async def on_shutdown(self, app: web.Application) -> None:
        # Long-lived handlers would otherwise hold shutdown for its whole grace period.
        connections = list(self.connections)
        await asyncio.gather(*(c.shut_down() for c in connections), return_exceptions=True)

    def acquire_slot(self, endpoint: str, ip: str, limit: int) -> bool:
        key = (endpoint, ip)
        if self.per_ip[key] >= limit:
            return False
        self.per_ip[key] += 1
        return True

    def release_slot(self, endpoint: str, ip: str) -> None:
        key = (endpoint, ip)
        self.per_ip[key] -= 1
        if self.per_ip[key] <= 0:
            del self.per_ip[key]


CHANNELS = web.AppKey("plugboard.realtime.channels", ChannelHub)


def channel_routes(app: web.Application, config: RealtimeConfig) -> list[web.RouteDef]:
    """The ``/events`` and ``/ws`` routes (paths from ``realtime.channels``); sets up the app's hub."""
    hub = app.get(CHANNELS)
    if hub is None:
        hub = ChannelHub(config)
        app[CHANNELS] = hub
        # on_startup runs after every cleanup context, so Redis and the
        # pubsub are up; on_shutdown runs before the server waits for handlers.
        app.on_startup.append(hub.on_startup)
        app.on_shutdown.append(hub.on_shutdown)
    return [
        web.get(config.channels.events_path, events_handler, allow_head=False),
        web.get(config.channels.ws_path, ws_handler, allow_head=False),
    ]


# ---------------------------------------------------------------------------
# Topics, ids, authorization, publishing
# ---------------------------------------------------------------------------


def check_topic(topic: Any) -> str:
    """``topic`` if it is a valid direct-channel topic name.

    :raises ValueError: not a string of letters, digits and ``_ . : -``
        (200 at most, not starting with punctuation other than ``_``).
    """
    if not isinstance(topic, str) or not _TOPIC.match(topic):
        shown = topic if isinstance(topic, str) else type(topic).__name__
        raise ValueError(
            f"invalid topic {shown!r}: use 1-200 letters, digits and '_.:-', starting with a letter, digit or '_'"
        )
    return topic


def default_authorization(context: Any, topic: str) -> bool:
    """The rule when no plugin decides: ``public.*`` for everyone, ``user.<id>`` for that user."""
    if topic.startswith("public."):
        return True
    user = presence.identity_id(getattr(context, "identity", None))
    return user is not None and topic == f"user.{user}"


async def authorize(app: web.Application, context: Any, topic: str, action: str) -> bool:
    """Ask ``plugboard_channel_authorize`` implementations, in plugin order; the first non-None decides.

    Implementations are called one at a time (and awaited when async), so
    later ones are not even called once one has decided. A
    :class:`GraphQLError` raised by one propagates (the caller turns it into
    its own error form).
    """
    pm = app[keys.PLUGIN_MANAGER]
    if getattr(pm.hook, "plugboard_channel_authorize", None) is None:
        return default_authorization(context, topic)
    # ordered_impls: the plugins: list order, as the hookspec promises (a
    # plain hook call would go last-registered-first).
    for impl in pm.ordered_impls("plugboard_channel_authorize"):
        given = {"context": context, "topic": topic, "action": action}
        result = impl.function(**{name: given[name] for name in impl.argnames})
        if inspect.isawaitable(result):
            result = await result
        if result is not None:
            return bool(result)
    return default_authorization(context, topic)


async def publish_event(app: web.Application, topic: str, data: Any) -> str:
    """Send ``data`` to the direct channel ``topic``, on every instance; returns the event id.

    The event is stored in the history first (so a client that reconnects
    can replay it), then published through ``app[keys.PUBSUB]``. Call it
    from resolvers, tasks or hooks of any plugin. Returns ``""`` and does
    nothing when direct channels are switched off
    (``realtime.channels.enabled: false``).

    :raises ValueError: ``topic`` is not a valid topic name.
    :raises TypeError: ``data`` is not JSON-serializable.
    :raises RuntimeError: the app has not started.
    """
    hub = app.get(CHANNELS)
    if hub is None:
        return ""
    check_topic(topic)
    try:
        data_json = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"event data for topic {topic!r} is not JSON-serializable: {e}") from None
    if hub.history is None:
        raise RuntimeError("direct channels are not started: publish_event needs a running app")
    event_id = await hub.history.append(topic, data_json)
    pubsub = app.get(keys.PUBSUB)
    if pubsub is not None:
        await pubsub.publish(PUBSUB_NAMESPACE + topic, {"id": event_id, "topic": topic, "data": data})
    return event_id


def _live_event(payload: Any, topic: str) -> ChannelEvent | None:
    if not isinstance(payload, dict) or not isinstance(payload.get("id"), str) or payload.get("topic") != topic:
        # Only a foreign publisher on a shared Redis can send this.
        logger.warning("channels: ignored a malformed event on %r", topic)
        return None
    return ChannelEvent(payload["id"], topic, payload.get("data"))


def _check_last_id(value: Any) -> str | None:
    if value is None or value == "":
        return None
    try:
        parse_event_id(value)
    except ValueError as e:
        raise ChannelError(str(e)) from None
    return value


def _http_error(message: str, status: int, code: str, *, topic: str | None = None, headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message, "code": code}
    if topic is not None:
        body["topic"] = topic
    return web.json_response(body, status=status, headers=headers)


def _ws_close_code(error: GraphQLError) -> int:
    return WS_CLOSE_FOR_CODE.get(error.code, CLOSE_FORBIDDEN)


def _expires_in(context: Any) -> float | None:
    expires_at = getattr(context, "identity_expires_at", None)
    if expires_at is None:
        return None
    return float(expires_at) - time.time()


# ---------------------------------------------------------------------------
# Connections
# ---------------------------------------------------------------------------


class _Connection(abc.ABC):
    """What every direct-channel connection has: subscriptions, tasks, replay bookkeeping."""

    def __init__(self, hub: ChannelHub, request: web.Request, context: Any) -> None:
        self.hub = hub
        self.app = request.app
        self.request = request
        self.context = context
        self.config = hub.config
        self.tasks: set[asyncio.Task] = set()
        self.subscriptions: dict[str, Any] = {}
        self._expiry: asyncio.TimerHandle | None = None

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def arm_expiry(self) -> None:
        remaining = _expires_in(self.context)
        if remaining is not None:
            self._expiry = asyncio.get_running_loop().call_later(max(remaining, 0.0), self.on_expired)

    @abc.abstractmethod
    def on_expired(self) -> None:
        """Protocol-specific: each subclass implements it."""

    @abc.abstractmethod
    async def shut_down(self) -> None:
        """Protocol-specific: each subclass implements it."""

    async def subscribe(self, topic: str) -> Any:
        pubsub = self.app.get(keys.PUBSUB)
        if pubsub is None:
            raise ChannelError("no pubsub provider is running", 503, "SERVICE_UNAVAILABLE")
        sub = pubsub.subscribe(PUBSUB_NAMESPACE + topic, queue_size=self.config.queue_size, overflow=self.config.overflow)
        self.subscriptions[topic] = sub
        return sub

    async def release(self) -> None:
        """Cancel every task, close every subscription. Idempotent."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        subscriptions, self.subscriptions = self.subscriptions, {}
        for sub in subscriptions.values():
            await sub.close()


class _Replayed:
    """Ids sent from the history, so their live copies are not sent again."""

    __slots__ = ("ids", "newest")

    def __init__(self, events: list[ChannelEvent]) -> None:
        self.ids = {e.id for e in events}
        self.newest = parse_event_id(events[-1].id) if events else None

    def seen(self, event_id: str) -> bool:
        if not self.ids:
            return False
        if event_id in self.ids:
            self.ids.discard(event_id)
            return True
        if self.newest is not None and parse_event_id(event_id) > self.newest:
            # Live delivery has passed the replay: nothing more to filter.
            self.ids.clear()
        return False


class _SSEStream(_Connection):
    """One ``GET /events`` client: a pump per topic into one bounded queue, one writer.

    One ``Last-Event-ID`` covers every topic of the stream, so events must go
    out in id order across topics: the pumps move live events from their
    subscriptions into one heap ordered by id (bounded by ``queue_size``,
    ``overflow`` policy), and a single writer sends the smallest first.
    """

    def __init__(self, hub: ChannelHub, request: web.Request, context: Any, topics: list[str], last_id: str | None) -> None:
        super().__init__(hub, request, context)
        self.topics = topics
        self.last_id = last_id
        self.response: EventSourceResponse | None = None
        self.replayed = _Replayed([])
        self.end_reason: str | None = None
        # (parsed id, event): the smallest id is both the next to send and
        # the oldest to drop.
        self.queue: list[tuple[tuple[int, int], int, ChannelEvent]] = []
        self._arrivals = 0  # tie-breaker: events never compare
        #: Events dropped because the client fell ``queue_size`` behind (``drop_oldest``).
        self.dropped = 0
        #: True once closed because it fell behind (``overflow: close``).
        self.overflowed = False
        self._wake = asyncio.Event()
        self._warned_at = float("-inf")

    async def serve(self) -> web.StreamResponse:
        history = self.hub.history
        if history is None:
            return _http_error("direct channels are not started", 503, "SERVICE_UNAVAILABLE")
        subs = [await self.subscribe(topic) for topic in self.topics]
        await asyncio.gather(*(sub.wait_ready() for sub in subs))
        try:
            replay = await history.after(self.last_id, self.topics) if self.last_id else []
        except Exception as e:
            logger.warning("channels: cannot read the event history: %s", e)
            return _http_error("the event history is unavailable; retry later", 503, "SERVICE_UNAVAILABLE")
        keepalive = float(self.config.sse.keepalive)
        response = EventSourceResponse(
            headers={REQUEST_ID_HEADER: self.request[REQUEST_ID]},
            ping_interval=keepalive,
            # A client that takes no data for two keep-alive intervals is gone.
            send_timeout=max(2 * keepalive, 1.0),
        )
        self.response = response
        await response.prepare(self.request)
        try:
            for event in replay:
                await self._send(event)
        except (ConnectionError, TimeoutError):
            return response
        self.replayed = _Replayed(replay)
        self.spawn(self._writer(), "realtime.channels.sse.writer")
        for topic, sub in zip(self.topics, subs):
            self.spawn(self._pump(topic, sub), f"realtime.channels.sse.{topic}")
        self.arm_expiry()
        await response.wait()
        return response

    async def _send(self, event: ChannelEvent) -> None:
        assert self.response is not None
        data = json.dumps(event.data, separators=(",", ":"), ensure_ascii=False)
        await self.response.send(data, id=event.id, event=event.topic)

    @property
    def pending(self) -> int:
        """Live events queued for this client and not yet written."""
        return len(self.queue)

    async def _pump(self, topic: str, sub: Any) -> None:
        try:
            async for payload in sub:
                event = _live_event(payload, topic)
                if event is None or self.replayed.seen(event.id):
                    continue
                self._enqueue(event)
            # The provider ended the subscription (shutdown, or it overflowed
            # although this pump never blocks).
            await self._end("subscription ended")
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("channels: event delivery on %r failed", topic)
            self._stop()

    def _enqueue(self, event: ChannelEvent) -> None:
        if self.overflowed:
            return
        if len(self.queue) >= self.config.queue_size:
            if self.config.overflow == "close":
                self.overflowed = True
                logger.warning("channels: /events client fell %d events behind; closed (overflow policy 'close')", self.config.queue_size)
                # The client is not reading: a graceful end would wait on it.
                self._abort()
                return
            heapq.heappop(self.queue)
            self.dropped += 1
            now = time.monotonic()
            if now - self._warned_at >= 1.0:
                self._warned_at = now
                logger.warning(
                    "channels: /events client is too slow; dropped its oldest event (%d so far, queue_size=%d)",
                    self.dropped,
                    self.config.queue_size,
                )
        self._arrivals += 1
        heapq.heappush(self.queue, (parse_event_id(event.id), self._arrivals, event))
        self._wake.set()

    async def _writer(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self.queue:
                    _key, _n, event = heapq.heappop(self.queue)
                    await self._send(event)
        except (ConnectionError, TimeoutError, RuntimeError):
            # The client is gone (aiohttp-sse already stopped the stream on
            # these) or the response is finished.
            self._stop()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("channels: writing to an /events client failed")
            self._stop()

    async def _end(self, reason: str) -> None:
        """End the stream with a comment saying why (EventSource ignores comments)."""
        if self.end_reason is None:
            self.end_reason = reason
            response = self.response
            if response is not None and response.is_connected():
                try:
                    async with asyncio.timeout(1.0):
                        await response.write(f": closing: {reason}\r\n\r\n".encode())
                except (ConnectionError, RuntimeError):
                    pass
                except TimeoutError:
                    self._abort()
        self._stop()

    def _stop(self) -> None:
        if self.response is not None and self.response.prepared:
            self.response.stop_streaming()

    def _abort(self) -> None:
        transport = self.request.transport
        if transport is not None:
            transport.abort()
        self._stop()

    def on_expired(self) -> None:
        self.spawn(self._end("identity expired"), "realtime.channels.sse.expired")

    async def shut_down(self) -> None:
        await self._end("server shutting down")


class _WSClient(_Connection):
    """One ``/ws`` client: the message loop and one feed task per subscribed topic."""

    def __init__(self, hub: ChannelHub, request: web.Request, context: Any, ws: web.WebSocketResponse, *, header_auth: bool) -> None:
        super().__init__(hub, request, context)
        self.ws = ws
        self.authenticated = header_auth
        self.feeds: dict[str, asyncio.Task] = {}
        self.closer: asyncio.Task | None = None
        # Two keep-alive intervals, as for a client that stops answering pings.
        self.send_timeout = max(2 * float(self.config.websocket.keepalive), 1.0)

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
                        await presence.touch(self.app, getattr(self.context, "identity", None))
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
            message = json.loads(text)
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
        remaining = _expires_in(context)
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
        last_id = _check_last_id(message.get("lastEventId"))
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
            replayed = _Replayed(replay)
            async for payload in sub:
                event = _live_event(payload, topic)
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
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise
        sub = self.subscriptions.pop(topic, None)
        if sub is not None:
            await sub.close()
        await self.send({"type": "unsubscribed", "topic": topic})

    async def _on_publish(self, message: dict) -> None:
        topic = self._topic(message)
        if "data" not in message:
            raise ChannelError("'publish' needs 'data' (any JSON value)", topic=topic)
        await self._authorize(topic, "publish")
        try:
            event_id = await publish_event(self.app, topic, message["data"])
        except (TypeError, ValueError) as e:
            raise ChannelError(str(e), topic=topic) from None
        except Exception as e:
            logger.warning("channels: publish to %r failed: %s", topic, e)
            raise ChannelError("could not publish the event; retry later", 503, "SERVICE_UNAVAILABLE", topic=topic) from None
        await self.send({"type": "published", "topic": topic, "id": event_id})

    async def _on_ping(self, message: dict) -> None:
        await self.send({"type": "pong"})


# ---------------------------------------------------------------------------
# Handlers
# ---------------------------------------------------------------------------


def _sse_topics(request: web.Request, config: RealtimeConfig) -> list[str]:
    topics = list(dict.fromkeys(request.query.getall("topic", [])))
    if not topics:
        raise ChannelError(f"name at least one topic: {config.channels.events_path}?topic=public.news")
    limit = config.websocket.max_subscriptions_per_connection
    if len(topics) > limit:
        raise ChannelError(f"too many topics: at most {limit} per connection")
    for topic in topics:
        try:
            check_topic(topic)
        except ValueError as e:
            raise ChannelError(str(e), topic=topic) from None
    return topics


async def _build_context(request: web.Request, transport: str) -> Any:
    app = request.app
    return await app[keys.CONTEXT_BUILDER].build(app, request, request_id=request[REQUEST_ID], transport=transport)


async def events_handler(request: web.Request) -> web.StreamResponse:
    """``GET /events?topic=...``: the topics' events as Server-Sent Events, replay first."""
    hub = request.app[CHANNELS]
    config = hub.config
    try:
        topics = _sse_topics(request, config)
        header_id = request.headers.get("Last-Event-ID")
        # The header wins: EventSource reconnects to the same URL, so a
        # lastEventId in the URL is older than the header it adds.
        last_id = _check_last_id(header_id if header_id else request.query.get("lastEventId"))
    except ChannelError as e:
        return _http_error(e.message, e.status, e.code, topic=e.topic)
    ip = request.remote or "unknown"
    limit = config.sse.max_connections_per_ip
    if not hub.acquire_slot("events", ip, limit):
        return _http_error(f"too many event streams from this address (limit {limit})", 429, "TOO_MANY_REQUESTS")
    try:
        try:
            context = await _build_context(request, "sse")
        except GraphQLError as e:
            return _http_error(e.message, e.http_status, e.code, headers=e.headers)
        remaining = _expires_in(context)
        if remaining is not None and remaining <= 0:
            return _http_error("identity expired", 401, "UNAUTHENTICATED")
        for topic in topics:
            try:
                allowed = await authorize(request.app, context, topic, "subscribe")
            except GraphQLError as e:
                return _http_error(e.message, e.http_status, e.code, topic=topic, headers=e.headers)
            except Exception:
                logger.exception("channels: plugboard_channel_authorize failed for topic %r", topic)
                return _http_error("internal server error", 500, "INTERNAL_SERVER_ERROR", topic=topic)
            if not allowed:
                return _http_error(f"not allowed to subscribe to topic {topic!r}", 403, "FORBIDDEN", topic=topic)
        stream = _SSEStream(hub, request, context, topics, last_id)
        hub.connections.add(stream)
        try:
            return await stream.serve()
        except ChannelError as e:
            return _http_error(e.message, e.status, e.code)
        finally:
            hub.connections.discard(stream)
            await stream.release()
    finally:
        hub.release_slot("events", ip)


async def ws_handler(request: web.Request) -> web.StreamResponse:
    """``/ws``: direct channels as JSON messages over a WebSocket."""
    hub = request.app[CHANNELS]
    config = hub.config
    options = config.websocket
    ws = web.WebSocketResponse(heartbeat=options.keepalive, max_msg_size=options.max_message_size, compress=False)
    if not ws.can_prepare(request).ok:
        return _http_error(
            "this endpoint speaks WebSocket: send an Upgrade: websocket request",
            426,
            "UPGRADE_REQUIRED",
            headers={"Upgrade": "websocket", "Connection": "Upgrade"},
        )
    ip = request.remote or "unknown"
    # Counted before the first await so concurrent handshakes cannot all slip in.
    slot = hub.acquire_slot("ws", ip, options.max_connections_per_ip)
    try:
        ws.headers[REQUEST_ID_HEADER] = request[REQUEST_ID]
        await ws.prepare(request)
        # Refusals are close codes: a browser sees those, not a handshake status.
        if not slot:
            await ws.close(code=CLOSE_TOO_MANY, message=b"Too many connections from this address")
            return ws
        try:
            context = await _build_context(request, "ws")
        except GraphQLError as e:
            await ws.close(code=_ws_close_code(e), message=e.message.encode()[:120])
            return ws
        except Exception:
            logger.exception("channels: the context hook failed on /ws")
            await ws.close(code=CLOSE_CONTEXT_FAILED, message=b"Internal server error")
            return ws
        remaining = _expires_in(context)
        if remaining is not None and remaining <= 0:
            await ws.close(code=CLOSE_FORBIDDEN, message=b"Forbidden: identity expired")
            return ws
        client = _WSClient(hub, request, context, ws, header_auth=getattr(context, "identity", None) is not None)
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
            hub.release_slot("ws", ip)
    return ws
