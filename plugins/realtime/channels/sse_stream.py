"""The direct channels' ``GET /events`` endpoint: one Server-Sent Events stream of several topics.

This module owns the handler and :class:`SSEStream`, one per client: a pump
per topic moves live events into one bounded queue ordered by event id
(:class:`EventHeap`), and a single writer sends them, after the replay from
the history. One ``Last-Event-ID`` covers every topic of the stream, so
events go out in id order across topics. The wire format is in
``plugins/realtime/PROTOCOLS.md``.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from plugboard.boundedqueue import BoundedQueue, Overflow
from plugboard.graphql.errors import GraphQLError
from plugboard.middleware import REQUEST_ID, REQUEST_ID_HEADER
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
from plugboard.plugins.realtime.channels.publishing import live_event
from plugboard.plugins.realtime.history import ChannelEvent, parse_event_id
from plugboard.plugins.realtime.limiter import CHANNELS_EVENTS, client_address

if TYPE_CHECKING:
    from plugboard.graphql.context import Context
    from plugboard.plugins.realtime.config import RealtimeConfig

__all__ = ["EventHeap", "SSEStream", "events_handler"]

logger = logging.getLogger("plugboard.realtime.channels")


class EventHeap(BoundedQueue[tuple[tuple[int, int], int, ChannelEvent]]):
    """Live events waiting for one ``/events`` client, smallest id first (the next to send and the oldest to drop)."""

    __slots__ = ("_arrivals",)

    def __init__(self, limit: int, overflow: Overflow) -> None:
        super().__init__(limit, overflow)
        self._arrivals = 0  # tie-breaker: events never compare

    def put(self, event: ChannelEvent) -> bool:
        """Queue ``event`` under the overflow policy; False when the client must be closed."""
        self._arrivals += 1
        return self.offer((parse_event_id(event.id), self._arrivals, event))

    def take(self) -> tuple[tuple[int, int], int, ChannelEvent]:
        return heapq.heappop(self._items)

    def _add(self, item: tuple[tuple[int, int], int, ChannelEvent]) -> None:
        heapq.heappush(self._items, item)

    def _evict(self) -> None:
        heapq.heappop(self._items)

    def _log_dropped(self) -> None:
        logger.warning(
            "channels: /events client is too slow; dropped its oldest event (%d so far, queue_size=%d)",
            self.dropped,
            self.limit,
        )

    def _log_closed(self) -> None:
        logger.warning("channels: /events client fell %d events behind; closed (overflow policy 'close')", self.limit)


class SSEStream(Connection):
    """One ``GET /events`` client: a pump per topic into one :class:`EventHeap`, one writer."""

    def __init__(
        self, hub: ChannelHub, request: web.Request, context: "Context", topics: list[str], last_id: str | None
    ) -> None:
        super().__init__(hub, request, context)
        self.topics = topics
        self.last_id = last_id
        self.response: EventSourceResponse | None = None
        self.replayed = Replayed([])
        self.end_reason: str | None = None
        self.queue = EventHeap(self.config.queue_size, self.config.overflow)
        self._wake = asyncio.Event()

    async def serve(self) -> web.StreamResponse:
        history = self.hub.history
        if history is None:
            return http_error("direct channels are not started", 503, "SERVICE_UNAVAILABLE")
        subs = [await self.subscribe(topic) for topic in self.topics]
        await asyncio.gather(*(sub.wait_ready() for sub in subs))
        try:
            replay = await history.after(self.last_id, self.topics) if self.last_id else []
        except Exception as e:
            logger.warning("channels: cannot read the event history: %s", e)
            return http_error("the event history is unavailable; retry later", 503, "SERVICE_UNAVAILABLE")
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
        self.replayed = Replayed(replay)
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

    @property
    def dropped(self) -> int:
        """Events dropped because the client fell ``queue_size`` behind (``drop_oldest``)."""
        return self.queue.dropped

    @property
    def overflowed(self) -> bool:
        """True once closed because it fell behind (``overflow: close``)."""
        return self.queue.overflowed

    async def _pump(self, topic: str, sub: Any) -> None:
        try:
            async for payload in sub:
                event = live_event(payload, topic)
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
        if self.queue.overflowed:
            return
        if not self.queue.put(event):
            # The client is not reading: a graceful end would wait on it.
            self._abort()
            return
        self._wake.set()

    async def _writer(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self.queue:
                    _key, _n, event = self.queue.take()
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



def _sse_topics(request: web.Request, config: "RealtimeConfig") -> list[str]:
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



async def events_handler(request: web.Request) -> web.StreamResponse:
    """``GET /events?topic=...``: the topics' events as Server-Sent Events, replay first."""
    hub = request.app[CHANNELS]
    config = hub.config
    try:
        topics = _sse_topics(request, config)
        header_id = request.headers.get("Last-Event-ID")
        # The header wins: EventSource reconnects to the same URL, so a
        # lastEventId in the URL is older than the header it adds.
        last_id = check_last_id(header_id if header_id else request.query.get("lastEventId"))
    except ChannelError as e:
        return http_error(e.message, e.status, e.code, topic=e.topic)
    ip = client_address(request)
    if not hub.limiter.acquire(CHANNELS_EVENTS, ip):
        limit = hub.limiter.limits[CHANNELS_EVENTS]
        return http_error(f"too many event streams from this address (limit {limit})", 429, "TOO_MANY_REQUESTS")
    try:
        try:
            context = await build_context(request, "sse")
        except GraphQLError as e:
            return http_error(e.message, e.http_status, e.code, headers=e.headers)
        remaining = expires_in(context)
        if remaining is not None and remaining <= 0:
            return http_error("identity expired", 401, "UNAUTHENTICATED")
        for topic in topics:
            try:
                allowed = await authorize(request.app, context, topic, "subscribe")
            except GraphQLError as e:
                return http_error(e.message, e.http_status, e.code, topic=topic, headers=e.headers)
            except Exception:
                logger.exception("channels: plugboard_channel_authorize failed for topic %r", topic)
                return http_error("internal server error", 500, "INTERNAL_SERVER_ERROR", topic=topic)
            if not allowed:
                return http_error(f"not allowed to subscribe to topic {topic!r}", 403, "FORBIDDEN", topic=topic)
        stream = SSEStream(hub, request, context, topics, last_id)
        hub.connections.add(stream)
        try:
            return await stream.serve()
        except ChannelError as e:
            return http_error(e.message, e.status, e.code)
        finally:
            hub.connections.discard(stream)
            await stream.release()
    finally:
        hub.limiter.release(CHANNELS_EVENTS, ip)

